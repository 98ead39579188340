"""Tiny real sweeps for the launcher and search tests: 4 FSDD digits spoken by 2 speakers (support:
recording 10 of each, queries: recording 0), Whisper tiny heads, and one activation cache warmed once
per session so the sweeps themselves only read it. Two speakers make support-set cross-validation
imperfect, so different CALM settings score differently."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli import REPO, compose_config, small_fsdd

TINY_ARGS = ["backbone=whisper_tiny", "logger=none", "figures=false", "queries=1", "episodes=2"]


def tiny_data(tmp_path_factory: pytest.TempPathFactory, fsdd_root: Path) -> tuple[Path, Path]:
    """(dataset root, activation cache) shared by every test of the session. All 16 clips are extracted on
    first use (an episode of 4 ways x (2 shots + 2 queries) takes every clip), so the sweeps only read rows."""
    base = tmp_path_factory.getbasetemp() / "tiny_sweeps"
    data, cache, warm = base / "fsdd", base / "cache", base / "warm"
    if not warm.exists():
        from calm.run.pipeline import run_job

        small_fsdd(fsdd_root, data, speakers=("george", "jackson"), indices=(0, 10), digits=(0, 1, 2, 3))
        run_job(
            compose_config(
                [f"dataset.root={data}", f"paths.cache_dir={cache}", *TINY_ARGS, "shots=2", "queries=2", "method=sav"],
                base / "warmup",
            )
        )
        warm.touch()
    return data, cache


def sweep_command(args: list[str], sweep_dir: Path, finished: Path) -> list[str]:
    """`python run.py -m ARGS` with its sweep folder and finished records."""
    return [
        sys.executable,
        str(REPO / "run.py"),
        "-m",
        *args,
        f"hydra.sweep.dir={sweep_dir}",
        f"paths.finished_dir={finished}",
    ]


def sweep_env(cache: Path) -> dict[str, str]:
    """The environment of a sweep subprocess: this one's, with its activation cache."""
    return {**os.environ, "CALM_CACHE": str(cache)}


def run_sweep(
    args: list[str], sweep_dir: Path, finished: Path, cache: Path, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run a sweep (`sweep_command`) to its end in a subprocess, with its cache."""
    return subprocess.run(
        sweep_command(args, sweep_dir, finished),
        cwd=REPO,
        env=sweep_env(cache),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def rejected_sweep(tmp_path: Path, args: list[str]) -> str:
    """Run a whisper_tiny sweep that the preflight must refuse: exit 2, the problem and its fix, no
    traceback, and no job folder or finished record; returns what it printed."""
    sweep, finished = tmp_path / "sweep", tmp_path / "finished"
    done = run_sweep(["backbone=whisper_tiny", "logger=none", *args], sweep, finished, tmp_path / "cache", timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output[-3000:]
    assert "sweep rejected before any job started" in output and "How to fix:" in output
    assert "Traceback" not in output
    assert not sweep.exists() and not finished.exists(), "no job may have started"
    return output
