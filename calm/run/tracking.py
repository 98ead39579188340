"""Where results go: `results.json` and per-episode CSV in the job folder, and Weights & Biases.

W&B defaults to offline mode unless a login is present, so no run ever waits for input or network;
the run is always finished, and marked failed (exit code 1) when the job raised.
"""

from __future__ import annotations

import csv
import http.client
import io
import logging
import netrc
import os
import ssl
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from calm.config.builder import build
from calm.errors import ConfigError
from calm.storage.atomic_write import write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)
DEFAULT_WANDB_URL = "https://api.wandb.ai"
INIT_TIMEOUT_S = 5.0  # logger.init_timeout's default: how long a job waits for the W&B server to answer
RESULT_COLUMNS = ("method", "shots", "ways", "queries", "episodes", "accuracy_mean", "accuracy_ci95")


def write_results(
    out_dir: Path,
    config: dict[str, Any],
    rows: list[dict[str, Any]],
    episodes: list[dict[str, Any]],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write `results.json` (config + one row per method) and `episodes.csv` (one row per episode and method)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {"config": config, "results": rows, **(extra or {})}
    path = out_dir / "results.json"
    write_json_atomic(path, payload)
    if episodes:  # atomically too: a reader never sees half a table beside a whole results.json
        text = io.StringIO(newline="")
        # every column any row has, in first-seen order (a choosing method adds `selected`, ...)
        writer = csv.DictWriter(text, fieldnames=list(dict.fromkeys(key for row in episodes for key in row)))
        writer.writeheader()
        writer.writerows(episodes)
        write_text_atomic(out_dir / "episodes.csv", text.getvalue())
    return path


class Tracker(ABC):
    """An experiment tracker: one run per job, always finished.

    A tracker is a `logger` config (configs/logger/<name>.yaml, whose `_target_` names the class and
    whose other keys are its settings), built by `build_tracker`; `start` then opens the job's run.
    Every tracker takes a `run_name` (a search names its trials with it, whichever logger is picked).
    """

    def __init__(self, name: str, run_name: str | None = None) -> None:
        self.name, self.run_name = name, run_name

    @abstractmethod
    def start(self, config: dict[str, Any], out_dir: Path, job_type: str | None = None) -> Tracker:
        """Open the run of a job (its resolved config and folder); returns self."""

    @abstractmethod
    def log_episode(self, episode: int, metrics: dict[str, float]) -> None: ...

    @abstractmethod
    def log_results(self, rows: list[dict[str, Any]]) -> None: ...

    @abstractmethod
    def log_figures(self, figures: dict[str, Path]) -> None:
        """PNG files already written next to the results, logged as images under `figures/<key>`."""

    @abstractmethod
    def finish(self, failed: bool) -> None: ...


class NullTracker(Tracker):
    """`logger=none`: results files only."""

    def __init__(self, name: str = "none", run_name: str | None = None) -> None:
        super().__init__(name, run_name)

    def start(self, config: dict[str, Any], out_dir: Path, job_type: str | None = None) -> NullTracker:
        return self

    def log_episode(self, episode: int, metrics: dict[str, float]) -> None:
        pass

    def log_results(self, rows: list[dict[str, Any]]) -> None:
        pass

    def log_figures(self, figures: dict[str, Path]) -> None:
        pass

    def finish(self, failed: bool) -> None:
        pass


def wandb_logged_in() -> bool:
    """True when an API key is available without asking (env or ~/.netrc); never touches the network."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_mode(requested: str, timeout: float = INIT_TIMEOUT_S) -> str:
    """`auto`: online when logged in, offline otherwise; `online` without a login is refused up front.

    An online mode whose server does not answer one request within `timeout` s becomes offline at
    once, with one warning: a compute node with a key but no network, or a server that accepts
    connections and never answers, must not hold the job in the W&B client's minutes of retries.
    """
    if requested == "auto":
        mode = os.environ.get("WANDB_MODE") or ("online" if wandb_logged_in() else "offline")
    elif requested == "online" and not wandb_logged_in():
        raise ConfigError(
            "logger.mode=online but no W&B login was found",
            "run `wandb login` (or set WANDB_API_KEY), or use logger.mode=offline and `wandb sync` later",
        )
    elif requested not in ("online", "offline", "disabled"):
        raise ConfigError(f"logger.mode={requested!r}", "use auto, online, offline or disabled")
    else:
        mode = requested
    if mode == "online":
        problem = server_silent(wandb_base_url(), timeout)
        if problem is not None:
            warn_offline(problem)
            return "offline"
    return mode


def warn_offline(problem: str) -> None:
    """The one warning of a run that was asked to log online and logs offline instead."""
    log.warning(
        "W&B server %s did not answer (%s): logging offline; `wandb sync <job folder>/wandb/offline-run-*` "
        "uploads the run later",
        wandb_base_url(),
        problem,
    )


def wandb_base_url() -> str:
    """The server W&B would talk to: WANDB_BASE_URL, else the public one."""
    return os.environ.get("WANDB_BASE_URL") or DEFAULT_WANDB_URL


def server_silent(url: str, timeout: float) -> str | None:
    """Why the server of `url` gives no HTTP answer within `timeout` s; None when it answers.

    Any answer counts, an error status or a TLS complaint included (the W&B client judges those
    itself): the question is only whether the server talks. A closed port fails in one round trip, a
    port that accepts and never answers after `timeout` s."""
    request = urllib.request.Request(url.rstrip("/") + "/healthz", method="GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as err:
        reason = getattr(err, "reason", err)
        if isinstance(reason, ssl.SSLError):
            return None
        return f"{type(reason).__name__}: {reason}" if str(reason) else f"no answer within {timeout:g} s"


class WandbTracker(Tracker):
    """One W&B run per job, with config, per-episode metrics, summary metrics and a results table.

    The settings are configs/logger/wandb.yaml's (it says what each means); `group: null` groups a
    multirun's jobs by sweep folder.
    """

    def __init__(
        self,
        name: str,
        *,
        project: str,
        mode: str,
        entity: str | None,
        run_name: str | None,
        group: str | None,
        tags: list[str] | None,
        init_timeout: float,
    ) -> None:
        super().__init__(name, run_name)
        if isinstance(init_timeout, bool) or not isinstance(init_timeout, int | float) or init_timeout <= 0:
            raise ConfigError(
                f"logger.init_timeout={init_timeout!r}",
                f"use a positive number of seconds, e.g. logger.init_timeout={INIT_TIMEOUT_S:g}",
            )
        self.project, self.mode, self.entity = project, mode, entity
        self.group, self.tags, self.init_timeout = group, tags, init_timeout

    def start(self, config: dict[str, Any], out_dir: Path, job_type: str | None = None) -> WandbTracker:
        import wandb

        self._wandb = wandb
        group = self.group
        if group is None and (sweep_dir := current_sweep_dir()) is not None:
            group = sweep_group(sweep_dir)
        run_mode = wandb_mode(self.mode, self.init_timeout)
        init = dict(
            project=self.project,
            entity=self.entity,
            name=self.run_name,
            group=group,
            tags=self.tags or None,
            job_type=job_type,
            config=config,
            dir=str(out_dir),
            reinit="finish_previous",
        )
        settings: dict[str, Any] = dict(console="off", silent=True, x_disable_stats=True)
        if os.environ.get("WANDB_BASE_URL"):  # the server the probe asked (wandb reads it once per process)
            settings["base_url"] = os.environ["WANDB_BASE_URL"]
        if run_mode == "online":
            try:
                self.run = wandb.init(
                    **init, mode="online", settings=wandb.Settings(**settings, init_timeout=self.init_timeout)
                )
                return self
            except wandb.errors.CommError as err:  # answered the probe, then stalled on creating the run
                warn_offline(str(err).splitlines()[0])
                run_mode = "offline"
        self.run = wandb.init(**init, mode=run_mode, settings=wandb.Settings(**settings))
        return self

    def log_episode(self, episode: int, metrics: dict[str, float]) -> None:
        self.run.log({"episode": episode, **{f"episode/{k}": v for k, v in metrics.items()}})

    def log_results(self, rows: list[dict[str, Any]]) -> None:
        columns = sorted({key for row in rows for key in row}, key=lambda k: (k not in RESULT_COLUMNS, k))
        table = self._wandb.Table(columns=columns, data=[[row.get(c) for c in columns] for row in rows])
        self.run.log({"results": table})
        for row in rows:
            for key, value in row.items():
                if isinstance(value, int | float) and key not in ("shots", "ways", "queries", "episodes"):
                    self.run.summary[f"{row['method']}/{key}"] = value

    def log_figures(self, figures: dict[str, Path]) -> None:
        if figures:
            self.run.log({f"figures/{key}": self._wandb.Image(str(path)) for key, path in figures.items()})

    def finish(self, failed: bool) -> None:
        self.run.finish(exit_code=1 if failed else 0)


def sweep_group(sweep_dir: Path | str) -> str:
    """The W&B group of a sweep's runs: the sweep folder's name (its start time by default)."""
    return Path(sweep_dir).name


def current_sweep_dir() -> Path | None:
    """The sweep folder when this process runs a job of a Hydra multirun; None otherwise."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return Path(HydraConfig.get().sweep.dir)


def build_tracker(
    logger_cfg: Mapping[str, Any], config: dict[str, Any], out_dir: Path, job_type: str | None = None
) -> Tracker:
    """The tracker of the `logger` config group (configs/logger/<name>.yaml names its class by
    `_target_`), built as every configurable part is (`calm.config.builder.build`), with the run of
    this job (its resolved `config`, folder `out_dir` and W&B `job_type`) started."""
    return build(logger_cfg, "logger", base=Tracker, named=True).start(config, out_dir, job_type)
