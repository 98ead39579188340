"""A real job (Whisper tiny, a few FSDD clips) writes its head figures and logs them to W&B, and its run
is named and tagged; in a multirun every job's run is grouped by the sweep, and the sweep ends with
its accuracy-vs-shots figure in the sweep folder and in a W&B "sweep-summary" run of that group."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from calm.figures import accuracy_curves, read_sweep
from calm.run.pipeline import run_job
from tests.cli import compose_config, small_fsdd
from tests.sweep_runs import run_sweep
from tests.wandb_records import exit_code, logged_images, run_record

JOB = ["backbone=whisper_tiny", "method=calm_vs_sav", "queries=1", "episodes=2", "logger=wandb"]
JOB_FIGURES = {
    "calm/class_weights": "calm_class_weights.png",
    "calm/top_heads": "calm_top_heads.png",
    "sav/selection": "sav_selection.png",
}


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, fsdd_root: Path) -> tuple[Path, Path]:
    """A small FSDD copy and one activation cache for every job of this module (extraction runs once)."""
    root = tmp_path_factory.mktemp("figures")
    return small_fsdd(fsdd_root, root / "fsdd"), root / "cache"


def _run_dir(folder: Path) -> Path:
    runs = list((folder / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    return runs[0]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_shot_job(shared: tuple[Path, Path], out: Path, monkeypatch: pytest.MonkeyPatch, *overrides: str) -> Path:
    """Run a 1-shot JOB on the shared FSDD copy and cache, with `overrides`, into `out`."""
    fsdd, cache = shared
    monkeypatch.setenv("CALM_CACHE", str(cache))
    run_job(compose_config([f"dataset.root={fsdd}", *JOB, "shots=1", *overrides], out))
    return out


def test_a_job_writes_its_head_figures_and_logs_them_to_its_named_tagged_run(
    shared: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = _one_shot_job(shared, tmp_path / "out", monkeypatch)
    run_dir = _run_dir(out)
    assert exit_code(run_dir) == 0
    record = run_record(run_dir)
    assert list(record.tags) == ["fsdd", "whisper_tiny"]
    assert record.display_name == "fsdd-whisper_tiny-calm_vs_sav-1shot-seed0"
    assert record.run_group == "", "a single run belongs to no group unless one is set"
    images = logged_images(run_dir)
    assert set(images) == {f"figures/{key}" for key in JOB_FIGURES}
    for key, name in JOB_FIGURES.items():
        assert images[f"figures/{key}"]["sha256"] == _sha256(out / name), "W&B holds the PNG of the job folder"


def test_figures_false_draws_nothing(
    shared: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = _one_shot_job(shared, tmp_path / "out", monkeypatch, "figures=false")
    assert not list(out.glob("*.png"))
    assert not logged_images(_run_dir(out))


def test_a_sweep_groups_its_runs_and_ends_with_its_accuracy_curve(shared: tuple[Path, Path], tmp_path: Path) -> None:
    fsdd, cache = shared
    sweep = tmp_path / "my-sweep"
    result = run_sweep([f"dataset.root={fsdd}", *JOB, "shots=1,2"], sweep, tmp_path / "finished", cache, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert not list(sweep.glob("*/error.txt")), (result.stdout + result.stderr)[-3000:]
    for number, shots in ((0, 1), (1, 2)):
        record = run_record(_run_dir(sweep / str(number)))
        assert record.run_group == "my-sweep"
        assert list(record.tags) == ["fsdd", "whisper_tiny"]
        assert record.display_name == f"fsdd-whisper_tiny-calm_vs_sav-{shots}shot-seed0"
        assert (sweep / str(number) / "calm_class_weights.png").is_file()
    png = sweep / "accuracy_vs_shots_fsdd_whisper_tiny.png"
    summary = _run_dir(sweep)
    assert exit_code(summary) == 0
    record = run_record(summary)
    assert (record.job_type, record.run_group) == ("sweep-summary", "my-sweep")
    assert logged_images(summary)["figures/accuracy_vs_shots/fsdd/whisper_tiny"]["sha256"] == _sha256(png)
    results = {
        json.loads(p.read_text())["config"]["shots"]: json.loads(p.read_text())["results"]
        for p in sweep.glob("[0-9]/results.json")
    }
    curves = {c.label: c for c in accuracy_curves(read_sweep(sweep))["fsdd", "whisper_tiny"]}
    for method in ("calm", "sav"):
        rows = [next(r for r in results[s] if r["method"] == method) for s in (1, 2)]
        assert curves[method].shots.tolist() == [1, 2]
        assert curves[method].mean.tolist() == [r["accuracy_mean"] for r in rows]
        assert curves[method].ci95.tolist() == pytest.approx([r["accuracy_ci95"] for r in rows])
