"""Sweeps that resume and report: each job's results are keyed by a hash of the settings that change
them, so a rerun skips finished jobs (`force=true` redoes them); a failing job is recorded in its
folder and summarised when the sweep ends, without stopping the other jobs."""

from __future__ import annotations

import json
import logging
import traceback
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from calm.atomic_write import write_json_atomic
from calm.digests import digest

log = logging.getLogger(__name__)

# Settings that never change a job's numbers: where things go, how they are logged and drawn, how extraction is
# batched and placed. trainer.precision stays: it changes the activations.
NOT_RESULTS = ("paths", "hydra", "logger", "extract", "force", "task_name", "figures")
NOT_RESULTS_TRAINER = ("accelerator", "devices", "num_nodes", "strategy")
ERROR_FILE = "error.txt"


def job_key(cfg: DictConfig) -> str:
    """sha256 of the resolved settings that change the results."""
    settings = OmegaConf.to_container(cfg, resolve=True)
    for name in NOT_RESULTS:
        settings.pop(name, None)
    for name in NOT_RESULTS_TRAINER:
        settings.get("trainer", {}).pop(name, None)
    return digest(settings)


def finished_record(cfg: DictConfig) -> Path:
    return Path(cfg.paths.finished_dir) / f"{job_key(cfg)}.json"


def load_finished(cfg: DictConfig) -> dict[str, Any] | None:
    """The results of an identical job that already finished, unless `force=true`."""
    record = finished_record(cfg)
    if cfg.get("force", False) or not record.is_file():
        return None
    return json.loads(record.read_text())


def mark_finished(cfg: DictConfig, payload: dict[str, Any], out_dir: Path) -> None:
    """Record a finished job (atomically, so an interrupted write never counts as finished)."""
    record = finished_record(cfg)
    write_json_atomic(record, {**payload, "output_dir": str(out_dir)}, indent=None)


def record_failure(out_dir: Path, err: BaseException) -> None:
    """Keep the error with the job's outputs, for the end-of-sweep report."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    (Path(out_dir) / ERROR_FILE).write_text(f"{type(err).__name__}: {err}\n\n{text}")


def failed_jobs(sweep_dir: Path) -> list[tuple[Path, str]]:
    """(job folder, first line of its error) for every failed job under a sweep folder."""
    return [(path.parent, path.read_text().splitlines()[0]) for path in sorted(Path(sweep_dir).glob(f"*/{ERROR_FILE}"))]


class SweepReport(Callback):
    """At the end of a multirun, list the jobs that failed with their errors."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        failures = failed_jobs(Path(config.hydra.sweep.dir))
        if not failures:
            log.info("sweep finished: every job succeeded (%s)", config.hydra.sweep.dir)
            return
        lines = "\n".join(f"  {folder}: {first}" for folder, first in failures)
        log.error("sweep finished with %d failed job(s); the others' results are intact:\n%s", len(failures), lines)
