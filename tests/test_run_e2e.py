"""The real entry point on real assets: Whisper tiny.en heads on a few FSDD clips, W&B offline."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.cache_files import all_rows, index_lines
from tests.cli import REPO, run_cli, small_fsdd

SMALL = ["backbone=whisper_tiny", "shots=2", "queries=2", "episodes=5", "ways=10", "extract.batch_size=4"]


@pytest.fixture(scope="module")
def fsdd_copy(tmp_path_factory: pytest.TempPathFactory, fsdd_root: Path) -> Path:
    return small_fsdd(fsdd_root, tmp_path_factory.mktemp("fsdd"))


@pytest.fixture(scope="module")
def first_run(
    tmp_path_factory: pytest.TempPathFactory, fsdd_copy: Path
) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """(output folder, cache, process) of one uninterrupted job on a fresh cache: the first run of the
    end-to-end test, and the rows the killed extraction must resume to."""
    base = tmp_path_factory.mktemp("first_run")
    done = run_cli([f"dataset.root={fsdd_copy}", *SMALL, "logger=wandb"], base / "run1", base / "cache")
    return base / "run1", base / "cache", done


def _read(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def test_one_job_end_to_end_then_reuses_the_cache(
    tmp_path: Path, fsdd_copy: Path, first_run: tuple[Path, Path, subprocess.CompletedProcess]
) -> None:
    args = [f"dataset.root={fsdd_copy}", *SMALL, "logger=wandb"]
    run1, cache, first = first_run
    assert first.returncode == 0, first.stderr[-3000:]
    results = _read(run1)
    assert results["config"]["shots"] == 2 and results["config"]["backbone"]["name"] == "whisper_tiny"
    rows = {row["method"]: row for row in results["results"]}
    assert set(rows) == {"sav", "calm"}
    for row in rows.values():
        assert (row["shots"], row["ways"], row["episodes"]) == (2, 10, 5)
        assert 0.0 <= row["accuracy_mean"] <= 100.0 and row["accuracy_ci95"] >= 0.0
    assert results["cache"]["extracted"] == 40

    with open(run1 / "episodes.csv") as handle:
        episodes = list(csv.DictReader(handle))
    assert len(episodes) == 10
    for method, row in rows.items():
        accs = [float(e["accuracy"]) for e in episodes if e["method"] == method]
        assert row["accuracy_mean"] == pytest.approx(np.mean(accs))
    diffs = [
        float(c["accuracy"]) - float(s["accuracy"])
        for c, s in zip(
            [e for e in episodes if e["method"] == "calm"], [e for e in episodes if e["method"] == "sav"], strict=True
        )
    ]
    assert rows["calm"]["diff_vs_baseline_mean"] == pytest.approx(np.mean(diffs))
    assert "calm" in first.stdout and "±" in first.stdout
    assert list((run1 / "wandb").glob("offline-run-*")), "W&B must log offline without a login"

    second = run_cli(args, tmp_path / "run2", cache)
    assert second.returncode == 0, second.stderr[-3000:]
    again = _read(tmp_path / "run2")
    assert again["cache"]["extracted"] == 0
    assert again["results"] == results["results"]


def test_killed_extraction_resumes_to_exactly_the_uninterrupted_rows(
    tmp_path: Path, fsdd_copy: Path, first_run: tuple[Path, Path, subprocess.CompletedProcess]
) -> None:
    args = [f"dataset.root={fsdd_copy}", *SMALL, "logger=none", "episodes=1"]  # the same batches of 4
    _, cache_whole, whole = first_run
    assert whole.returncode == 0, whole.stderr[-3000:]

    env = {**os.environ, "CALM_CACHE": str(tmp_path / "cache_killed")}
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "run.py"), *args, f"hydra.run.dir={tmp_path / 'killed'}"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while index_lines(tmp_path / "cache_killed") < 8 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = index_lines(tmp_path / "cache_killed")
    assert 8 <= written < 40, f"the kill must land mid-extraction (rows written: {written})"

    resumed = run_cli(args, tmp_path / "resumed", tmp_path / "cache_killed")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((tmp_path / "resumed" / "results.json").read_text())["cache"]["extracted"] == 40 - written
    ids_whole, rows_whole = all_rows(cache_whole)
    ids_resumed, rows_resumed = all_rows(tmp_path / "cache_killed")
    assert ids_whole == ids_resumed and len(ids_whole) == 40
    assert torch.equal(rows_whole, rows_resumed)


def test_data_error_exits_cleanly_with_the_fix(tmp_path: Path) -> None:
    result = run_cli([f"dataset.root={tmp_path / 'missing'}", "logger=none"], tmp_path / "out", tmp_path / "cache")
    assert result.returncode == 2
    output = result.stdout + result.stderr
    assert "does not exist" in output and "How to fix" in output and "Traceback" not in output


def test_headline_command_on_an_official_esc50_layout_with_the_tiny_qwen2_audio(tmp_path: Path) -> None:
    """`python run.py dataset=esc50 shots=5` end to end: official layout, real chat-template path, tiny weights."""
    from calm.testing.smoke_layouts import esc50_rows, make_esc50

    make_esc50(tmp_path / "data", rows=esc50_rows(classes=5, per_class=10), seconds=0.2)
    args = [
        "dataset=esc50",
        "shots=5",
        f"dataset.root={tmp_path / 'data'}",
        "backbone=tiny_qwen2_audio",
        f"backbone.path={tmp_path / 'tiny'}",
        "queries=2",
        "episodes=3",
        "logger=none",
    ]
    result = run_cli(args, tmp_path / "out", tmp_path / "cache")
    assert result.returncode == 0, result.stderr[-3000:]
    results = _read(tmp_path / "out")
    # the clips the 3 episodes use (5 classes x (5 shots + 2 queries) each) are extracted
    assert results["clips"] == 50 and 35 <= results["cache"]["extracted"] == results["cache"]["needed"] <= 50
    rows = {row["method"]: row for row in results["results"]}
    assert set(rows) == {"sav", "calm"} and rows["calm"]["ways"] == 5 and rows["calm"]["shots"] == 5
    folder = next(p for p in (tmp_path / "cache").iterdir() if p.is_dir())
    assert folder.name.startswith("tiny_qwen2_audio-")
    assert json.loads((folder / "meta.json").read_text())["n_heads"] == 8  # 2 layers x 4 heads


def test_headline_command_without_the_data_stops_at_once_with_how_to_get_it(tmp_path: Path) -> None:
    """`python run.py dataset=esc50 shots=5` with the default backbone (Qwen2-Audio) and no ESC-50 copy."""
    result = run_cli(
        ["dataset=esc50", "shots=5", f"paths.data_dir={tmp_path / 'data'}"], tmp_path / "out", tmp_path / "cache"
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-2000:]
    assert "prepare_esc50.py" in output and "dataset.root" in output and "Traceback" not in output
    assert not (tmp_path / "cache").exists()
