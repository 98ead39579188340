"""`kill` or a SLURM pre-emption (SIGTERM) stops a job cleanly: the rows written are kept, the job
folder's error.txt says it was terminated and that a rerun resumes, the exit code is 143 (128 + 15,
as a shell reports a SIGTERM), and the rerun gives the uninterrupted run's rows and results.

Before, Lightning logged and ignored a SIGTERM during extraction (the job finished, exit 0), and one
during evaluation killed the process with no error.txt."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from calm.run.pipeline import run_job
from calm.run.termination import JobTerminated, at_step_end, stop_if_terminated, stops_on_sigterm
from tests.cache_files import all_rows, index_lines
from tests.cli import REPO, compose_config, small_fsdd
from tests.stalling import STALL_ENV

# 2 classes x (2 support + 1 query) clips, 2 clips a batch: 3 batches to extract
ARGS = [
    "backbone=whisper_tiny",
    "shots=2",
    "queries=1",
    "episodes=1",
    "extract.batch_size=2",
    "logger=none",
    "figures=false",
    "method.estimators.calm._target_=tests.stalling.StallingCALM",
]
CLIPS = 6
TERMINATED = 128 + signal.SIGTERM
WAIT_S = 300


@pytest.fixture(scope="module")
def fsdd_copy(tmp_path_factory: pytest.TempPathFactory, fsdd_root: Path) -> Path:
    return small_fsdd(fsdd_root, tmp_path_factory.mktemp("fsdd"), indices=(0, 10, 11), digits=(0, 1))


def test_a_sigterm_inside_a_step_waits_for_its_end_and_outside_stops_at_once() -> None:
    steps = []
    with pytest.raises(JobTerminated) as stopped, stops_on_sigterm(), at_step_end():
        for step in range(3):
            if step == 1:
                os.kill(os.getpid(), signal.SIGTERM)
            steps.append(step)  # the step the signal came in completes
            stop_if_terminated()
    assert steps == [0, 1] and stopped.value.exit_code == TERMINATED
    with pytest.raises(JobTerminated), stops_on_sigterm():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        steps.append("never")
    assert steps == [0, 1] and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_sigterm_handler_the_host_installed_stays_in_charge() -> None:
    seen = []

    def host(signum: int, frame: object) -> None:  # e.g. submitit's: ignore SIGTERM, requeue on USR2
        seen.append(signum)

    previous = signal.signal(signal.SIGTERM, host)
    try:
        with stops_on_sigterm(), at_step_end():
            os.kill(os.getpid(), signal.SIGTERM)
            stop_if_terminated()
        assert seen == [signal.SIGTERM] and signal.getsignal(signal.SIGTERM) is host
    finally:
        signal.signal(signal.SIGTERM, previous)


def _job(fsdd_copy: Path, out: Path, cache: Path) -> dict:
    """The job run to its end in this process (only the signalled runs need their own process)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CALM_CACHE", str(cache))
        env.delenv(STALL_ENV, raising=False)
        run_job(compose_config([f"dataset.root={fsdd_copy}", *ARGS], out))
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory, fsdd_copy: Path) -> tuple[Path, dict]:
    """(cache, results) of the job run without a signal."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    return tmp / "cache", _job(fsdd_copy, tmp / "out", tmp / "cache")


def _terminated(
    args: list[str], out: Path, cache: Path, ready: Callable[[], bool], env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess, int]:
    """Run `run.py ARGS`, send SIGTERM once `ready()` holds, wait for the exit; also the rows the cache
    held when the signal was sent."""
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "run.py"), *args, f"hydra.run.dir={out}", f"paths.finished_dir={out}/finished"],
        cwd=REPO,
        env={**os.environ, "CALM_CACHE": str(cache), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + WAIT_S
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    rows_at_signal = index_lines(cache)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=WAIT_S)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), rows_at_signal


def _says_terminated(out: Path, result: subprocess.CompletedProcess) -> None:
    assert result.returncode == TERMINATED, (result.returncode, result.stderr[-3000:])
    error = (out / "error.txt").read_text()
    assert "terminated by SIGTERM" in error.splitlines()[0] and "rerun" in error.lower(), error
    assert "terminated by SIGTERM" in result.stdout + result.stderr
    assert not (out / "results.json").exists()


def test_sigterm_during_extraction_keeps_the_rows_and_a_rerun_resumes_to_the_same_results(
    tmp_path: Path, fsdd_copy: Path, uninterrupted: tuple[Path, dict]
) -> None:
    cache = tmp_path / "cache"
    args = [f"dataset.root={fsdd_copy}", *ARGS]
    stopped, rows_at_signal = _terminated(args, tmp_path / "stopped", cache, lambda: index_lines(cache) >= 1)
    _says_terminated(tmp_path / "stopped", stopped)
    kept = index_lines(cache)
    assert 1 <= rows_at_signal <= kept < CLIPS, f"the signal must land mid-extraction ({rows_at_signal}, {kept})"
    reference_cache, reference = uninterrupted
    ids_ref, rows_ref = all_rows(reference_cache)
    ids_kept, rows_kept = all_rows(cache)
    assert torch.equal(rows_kept, rows_ref[[ids_ref.index(i) for i in ids_kept]])

    results = _job(fsdd_copy, tmp_path / "resumed", cache)
    assert results["cache"]["extracted"] == CLIPS - kept
    assert results["results"] == reference["results"]
    ids, rows = all_rows(cache)
    assert ids == ids_ref and torch.equal(rows, rows_ref)


def test_sigterm_during_evaluation_stops_the_job_and_a_rerun_gives_the_same_results(
    tmp_path: Path, fsdd_copy: Path, uninterrupted: tuple[Path, dict]
) -> None:
    cache, reference = uninterrupted
    args = [f"dataset.root={fsdd_copy}", *ARGS]
    marker = tmp_path / "evaluating"
    stopped, rows_at_signal = _terminated(
        args, tmp_path / "stopped", cache, marker.exists, env={STALL_ENV: str(marker)}
    )
    assert marker.exists(), "the signal must land during the evaluation"
    _says_terminated(tmp_path / "stopped", stopped)
    assert index_lines(cache) == rows_at_signal == CLIPS

    results = _job(fsdd_copy, tmp_path / "rerun", cache)
    assert "resumed_from" not in results and results["cache"]["extracted"] == 0
    assert results["results"] == reference["results"]
