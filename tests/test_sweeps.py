"""Multirun sweeps: an interrupted sweep reruns only its unfinished jobs; a failing job leaves the
others' results intact, is reported at the end, makes the sweep exit 1, and its W&B run is marked failed."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.cli import REPO
from tests.sweep_runs import sweep_command, sweep_env, tiny_data
from tests.wandb_records import exit_code

SWEEP = ["backbone=whisper_tiny", "shots=1,2", "seed=0,1", "method=sav,calm", "queries=2", "episodes=3", "logger=none"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, fsdd_root: Path) -> tuple[Path, Path]:
    """The session's 16 FSDD clips and their warm cache: the sweeps read rows, they extract none."""
    return tiny_data(tmp_path_factory, fsdd_root)


def _sweep(args: list[str], sweep_dir: Path, finished: Path, cache: Path) -> subprocess.Popen:
    return subprocess.Popen(
        sweep_command(args, sweep_dir, finished),
        cwd=REPO,
        env=sweep_env(cache),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_an_interrupted_sweep_reruns_only_unfinished_jobs(tmp_path: Path, tiny: tuple[Path, Path]) -> None:
    data, cache = tiny
    finished = tmp_path / "finished"
    args = [f"dataset.root={data}", *SWEEP]
    first = _sweep(args, tmp_path / "sweep1", finished, cache)
    deadline = time.monotonic() + 300
    while (
        (len(list(finished.glob("*.json"))) if finished.exists() else 0) < 3
        and first.poll() is None
        and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    done_before = len(list(finished.glob("*.json")))
    assert 3 <= done_before < 8, f"the kill must land mid-sweep ({done_before} of 8 finished)"

    second = _sweep(args, tmp_path / "sweep2", finished, cache)
    output, _ = second.communicate(timeout=600)
    assert second.returncode == 0, output[-3000:]
    assert output.count("an identical job already finished") == done_before
    assert len(list(finished.glob("*.json"))) == 8
    jobs = sorted((tmp_path / "sweep2").glob("[0-9]*/results.json"))
    assert len(jobs) == 8
    resumed = [json.loads(p.read_text()) for p in jobs]
    assert sum("resumed_from" in r for r in resumed) == done_before
    assert {(r["config"]["shots"], r["config"]["seed"], r["config"]["method"]["name"]) for r in resumed} == {
        (s, seed, m) for s in (1, 2) for seed in (0, 1) for m in ("sav", "calm")
    }


def test_a_failing_job_does_not_stop_the_sweep_and_is_marked_failed(tmp_path: Path, tiny: tuple[Path, Path]) -> None:
    data, cache = tiny
    args = [
        f"dataset.root={data}",
        "backbone=whisper_tiny",
        "method=calm",
        "shots=1",
        "queries=2",
        "episodes=2",
        "logger=wandb",
        "method.estimators.calm._target_=tests.exploding.ExplodingEstimator,calm.methods.CALM",
    ]
    sweep = _sweep(args, tmp_path / "sweep", tmp_path / "finished", cache)
    output, _ = sweep.communicate(timeout=600)
    assert sweep.returncode == 1, output[-3000:]  # the failed job makes the sweep exit 1, after the other ran
    failed, ok = tmp_path / "sweep" / "0", tmp_path / "sweep" / "1"
    assert (failed / "error.txt").read_text().startswith("RuntimeError: boom")
    assert not (failed / "results.json").exists()
    assert json.loads((ok / "results.json").read_text())["results"][0]["method"] == "calm"
    assert "1 failed job(s)" in output and str(failed) in output
    assert exit_code(next((failed / "wandb").glob("offline-run-*"))) == 1
    assert exit_code(next((ok / "wandb").glob("offline-run-*"))) == 0
