"""W&B with a key but no reachable server (a SLURM node): the job falls back to offline at once.

Before the fallback, wandb.init waited about 100 s for a server at WANDB_BASE_URL and then failed
the job with CommError after all its work."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from calm.pipeline import run_job
from tests.cli import compose_config, small_fsdd
from tests.wandb_records import exit_code

# the job's whole W&B setup may take seconds (the bounded probe), never the client's ~100 s of retries
WAITING_BOUND_S = 30.0


def _closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on: bound and released by this test."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_key_without_a_reachable_server_logs_offline_within_seconds(tmp_path: Path, fsdd_root: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    root = small_fsdd(fsdd_root, tmp_path / "fsdd", indices=(0, 10))
    cfg = compose_config([f"dataset.root={root}", "backbone=whisper_tiny", "shots=1", "queries=1", "episodes=2",
                          "logger=wandb", "figures=false"], tmp_path / "out")
    run_job(cfg)  # extraction first, so the timed job below only sets up W&B and evaluates
    started = time.perf_counter()
    result = run_job(compose_config([f"dataset.root={root}", "backbone=whisper_tiny", "shots=1", "queries=1",
                                     "episodes=2", "logger=wandb", "figures=false", "force=true"],
                                    tmp_path / "out2"))
    elapsed = time.perf_counter() - started
    print(f"job with an unreachable W&B server: {elapsed:.1f} s")
    assert result["results"]
    runs = list((tmp_path / "out2" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and exit_code(runs[0]) == 0
    assert elapsed < WAITING_BOUND_S
