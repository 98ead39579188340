"""W&B runs are finished in every case (marked failed when the job raised), offline without a login."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from calm.errors import ConfigError
from calm.run.pipeline import run_job
from calm.run.tracking import WandbTracker, wandb_mode, write_results
from tests.cli import compose_config, small_fsdd
from tests.local_servers import answering_server, silent_server
from tests.wandb_records import exit_code, history_keys


@pytest.fixture()
def job(tmp_path: Path, fsdd_root: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CALM_CACHE", str(tmp_path / "cache"))
    root = small_fsdd(fsdd_root, tmp_path / "fsdd", indices=(0, 10))

    def compose(extra: list[str]):
        return compose_config(
            [
                f"dataset.root={root}",
                "backbone=whisper_tiny",
                "shots=1",
                "queries=1",
                "episodes=3",
                "logger=wandb",
                *extra,
            ],
            tmp_path / "out",
        )

    return compose


def _run_dir(out: Path) -> Path:
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    return runs[0]


def test_successful_job_logs_episodes_and_finishes_cleanly(job, tmp_path: Path) -> None:
    run_job(job([]))
    run_dir = _run_dir(tmp_path / "out")
    assert exit_code(run_dir) == 0
    assert {"episode/calm/accuracy", "episode/sav/accuracy"} <= history_keys(run_dir)
    assert any(key.startswith("results") for key in history_keys(run_dir))


def test_failing_job_marks_its_run_failed(job, tmp_path: Path) -> None:
    cfg = job(["+method.estimators.boom._target_=tests.exploding.ExplodingEstimator"])
    with pytest.raises(RuntimeError, match="boom"):
        run_job(cfg)
    assert exit_code(_run_dir(tmp_path / "out")) == 1
    assert not (tmp_path / "out" / "results.json").exists()


def test_wandb_mode_never_waits_for_a_login(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    assert wandb_mode("auto") == "offline"
    with pytest.raises(ConfigError, match="wandb login"):
        wandb_mode("online")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)  # 127.0.0.1 is asked directly, never through a proxy
    with answering_server() as port:  # a server that answers (any status): online
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
        assert wandb_mode("auto") == "online"
        assert wandb_mode("online") == "online"
    # the same port once nothing listens there: offline, for auto and for an explicit online
    assert wandb_mode("auto") == "offline"
    assert wandb_mode("online") == "offline"
    with silent_server() as port:  # accepts connections, never answers: offline once the timeout is over
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
        assert wandb_mode("online", timeout=0.5) == "offline"


def test_results_json_layout(tmp_path: Path) -> None:
    rows = [{"method": "calm", "shots": 5, "ways": 10, "episodes": 2, "accuracy_mean": 90.0, "accuracy_ci95": 1.0}]
    episodes = [{"episode": 0, "method": "calm", "accuracy": 89.0}, {"episode": 1, "method": "calm", "accuracy": 91.0}]
    write_results(tmp_path, {"shots": 5}, rows, episodes)
    payload = json.loads((tmp_path / "results.json").read_text())
    assert payload == {"config": {"shots": 5}, "results": rows}
    assert (tmp_path / "episodes.csv").read_text().splitlines() == [
        "episode,method,accuracy",
        "0,calm,89.0",
        "1,calm,91.0",
    ]


@pytest.mark.parametrize("timeout", [0, -1, "5s", True])
def test_a_bad_init_timeout_is_refused_naming_the_setting(tmp_path: Path, timeout: object) -> None:
    with pytest.raises(ConfigError, match=r"logger\.init_timeout") as refused:
        WandbTracker(
            "wandb",
            project="calm",
            mode="offline",
            entity=None,
            run_name=None,
            group=None,
            tags=None,
            init_timeout=timeout,
        )
    assert "positive number of seconds" in refused.value.fix
