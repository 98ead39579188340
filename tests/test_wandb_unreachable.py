"""W&B with a key but no answering server (a SLURM node, a firewall that swallows packets): the job
logs offline after a bounded wait, with one warning saying how to upload the run later.

Before the fallback, wandb.init waited about 100 s for a server at WANDB_BASE_URL and then failed
the job with CommError after all its work. Only 127.0.0.1 is ever contacted here."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import pytest

from calm.run.pipeline import run_job
from tests.cli import compose_config, small_fsdd
from tests.local_servers import answering_server, closed_port, silent_server
from tests.wandb_records import exit_code

# the job's whole W&B setup may take seconds (the bounded probe), never the client's ~100 s of retries
WAITING_BOUND_S = 60.0  # under parallel test workers; the old client waited ~95 s
JOB = ["backbone=whisper_tiny", "shots=1", "queries=1", "episodes=2", "figures=false"]


@pytest.fixture(scope="module")
def extracted(tmp_path_factory: pytest.TempPathFactory, fsdd_root: Path) -> tuple[Path, Path]:
    """(dataset root, cache) with every row the jobs below read already extracted, so they only set up
    W&B and evaluate."""
    tmp = tmp_path_factory.mktemp("extracted")
    root = small_fsdd(fsdd_root, tmp / "fsdd", indices=(0, 10))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CALM_CACHE", str(tmp / "cache"))
        run_job(compose_config([f"dataset.root={root}", *JOB, "logger=none"], tmp / "out"))
    return root, tmp / "cache"


def _timed_job(
    extracted: tuple[Path, Path],
    base_url: str,
    out: Path,
    monkeypatch: pytest.MonkeyPatch,
    settings: tuple[str, ...] = (),
) -> tuple[dict, float]:
    """One job logged in (a made-up key) to the server at `base_url`, with the logger's default settings
    unless `settings` overrides them."""
    root, cache = extracted
    monkeypatch.setenv("CALM_CACHE", str(cache))
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", base_url)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)  # 127.0.0.1 is asked directly, never through a proxy
    started = time.perf_counter()
    result = run_job(compose_config([f"dataset.root={root}", *JOB, "logger=wandb", *settings], out))
    return result, time.perf_counter() - started


def _fell_back_offline(result: dict, out: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert result["results"]
    assert (out / "results.json").exists()
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and exit_code(runs[0]) == 0
    # the W&B client's own records go to its debug.log only (its logger does not propagate; pytest
    # attaches its capture to such loggers too)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name != "wandb"]
    assert len(warnings) == 1, warnings
    assert "offline" in warnings[0] and "wandb sync" in warnings[0]


@pytest.mark.parametrize(
    ("server", "settings", "what"),
    [
        pytest.param(lambda: nullcontext(closed_port()), (), "an unreachable W&B server", id="unreachable"),
        pytest.param(silent_server, (), "a W&B server that never answers", id="accepts-and-never-answers"),
        pytest.param(
            lambda: answering_server(posts_answered=False),
            ("logger.init_timeout=1",),
            "a W&B server that stalls on creating the run",
            id="answers-the-probe-then-stalls-past-the-init-timeout",
        ),
    ],
)
def test_a_key_without_an_answering_server_logs_offline_within_seconds(
    tmp_path: Path,
    extracted: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    server: Callable[[], AbstractContextManager[int]],
    settings: tuple[str, ...],
    what: str,
) -> None:
    caplog.set_level(logging.WARNING)
    with server() as port:
        result, elapsed = _timed_job(extracted, f"http://127.0.0.1:{port}", tmp_path / "out", monkeypatch, settings)
    print(f"job with {what}: {elapsed:.1f} s")
    _fell_back_offline(result, tmp_path / "out", caplog)
    assert elapsed < WAITING_BOUND_S
