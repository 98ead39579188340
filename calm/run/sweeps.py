"""Sweeps that resume and report. A finished job leaves a record named by a hash of the settings that
change its results and holding the digests of what else they were computed from
(`calm.extraction.row_inputs.job_inputs`:
the model's weights and files by content, the prompt, the clip table), so a rerun skips it only when all
are unchanged (`force=true` redoes it). A record carries a digest of its own content: one that cannot be
read, or was edited after it was written, counts as not finished and is reported, never fatal. A failing
job is recorded in its folder, summarised when the sweep ends without stopping the other jobs, and makes
the sweep exit 1. Run and sweep folders get a random per-process suffix (`${calm.unique:}`), so two jobs
started in the same second never share one."""

from __future__ import annotations

import json
import logging
import secrets
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from calm.config.authors_modes import register_authors_resolver
from calm.storage.atomic_write import write_json_atomic, write_text_atomic
from calm.storage.digests import digest

log = logging.getLogger(__name__)

# Settings that never change a job's numbers: where things go, how they are logged and drawn, how extraction is
# batched and placed. trainer.precision stays: it changes the activations.
# `paper` only feeds the replay groups' dataset settings (paper.manifests_dir -> dataset.manifests_dir, ...),
# which are keyed themselves; a clean job's key does not depend on it.
NOT_RESULTS = ("paths", "hydra", "logger", "extract", "force", "task_name", "figures", "paper")
NOT_RESULTS_TRAINER = ("accelerator", "devices", "num_nodes", "strategy")
# How much of a split the paper grid holds at once: streamed blocks give the same counts (tests/test_grid_memory.py)
NOT_RESULTS_EVALUATE = ("memory_budget_mb",)
ERROR_FILE = "error.txt"
RECORD_FIELDS = ("config", "results", "output_dir")  # what reporting a finished job needs from its record
RECORD_DIGEST = "record_sha256"  # the record's own content digest, checked on every read
EXIT_JOBS_FAILED = 1  # run.py's exit code after a sweep in which some jobs failed (preflight refusals exit 2)
UNIQUE_RESOLVER = "calm.unique"
INPUT_CHANGES = "model: the weights, config, processor or tokenizer files, or the prompt; table: the clips"

# Fixed for the life of the process: a run folder, or a sweep folder shared by all its jobs, resolves to one
# name however often it is resolved. Launchers that run jobs in other processes (joblib, submitit) copy the
# main process's resolver cache into each job's config, so those jobs agree on the sweep folder too.
_PROCESS_SUFFIX = secrets.token_hex(3)
_last_sweep_failures: list[tuple[Path, str]] = []


def unique_suffix() -> str:
    """`${calm.unique:}`: 6 random hex digits, the same for every call in this process."""
    return _PROCESS_SUFFIX


def register_resolvers() -> None:
    """Make `${calm.unique:}` (configs/hydra/default.yaml's folder names) and `${calm.authors:a,b}`
    (calm.config.authors_modes) resolvable in this process.

    Called when this module is imported: run.py imports it before Hydra composes anything, and a job in a
    launcher's worker process imports it when it unpickles the sweep callbacks (SweepReport lives here)."""
    if not OmegaConf.has_resolver(UNIQUE_RESOLVER):
        OmegaConf.register_new_resolver(UNIQUE_RESOLVER, unique_suffix, use_cache=True)
    register_authors_resolver()


register_resolvers()


def job_key(cfg: DictConfig) -> str:
    """sha256 of the resolved settings that change the results (the model's content and the clip table are
    checked separately, by the digests stored in the record: see `load_finished`)."""
    settings = OmegaConf.to_container(cfg, resolve=True)
    for name in NOT_RESULTS:
        settings.pop(name, None)
    for name in NOT_RESULTS_TRAINER:
        settings.get("trainer", {}).pop(name, None)
    for name in NOT_RESULTS_EVALUATE:
        settings.get("evaluate", {}).pop(name, None)
    return digest(settings)


def finished_record(cfg: DictConfig) -> Path:
    return Path(cfg.paths.finished_dir) / f"{job_key(cfg)}.json"


def read_record(record: Path) -> dict[str, Any] | None:
    """A finished-job record, or None when there is none; a record that cannot be read or parsed (torn by
    a crash, written by another version) or whose content does not match the digest written with it
    (edited by hand or by a tool) is reported and treated as absent, so the job runs again and rewrites
    it instead of failing every rerun or serving numbers it did not compute."""
    try:
        text = record.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        log.warning("ignoring the unreadable finished-job record %s (%s); the job runs again", record, err)
        return None
    try:
        done = json.loads(text)
    except ValueError as err:
        done, problem = None, f"not JSON: {err}"
    else:
        missing = [name for name in RECORD_FIELDS if name not in done] if isinstance(done, dict) else ["all"]
        problem = f"fields missing: {', '.join(missing)}" if missing else _tampered(done)
    if problem:
        log.warning("ignoring the finished-job record %s (%s); the job runs again and rewrites it", record, problem)
        return None
    return done


def _content_digest(record: dict[str, Any]) -> str:
    """The digest of a record's content without its own digest: canonical JSON, so its layout does not count."""
    return digest({k: v for k, v in record.items() if k != RECORD_DIGEST}, allow_nan=True)


def _tampered(done: dict[str, Any]) -> str:
    """Why a parsed record cannot be trusted, or "" when its content matches the digest written with it
    (which is taken out of `done`: a resumed job's results.json does not carry it)."""
    stored = done.pop(RECORD_DIGEST, None)
    if stored is None:
        return "it holds no content digest: written by an older calm, or rewritten by hand"
    if stored != _content_digest(done):
        return "its content does not match the digest written with it: it was edited after the job finished"
    return ""


@dataclass(frozen=True)
class FinishedRecord:
    """Where a job's finished-job record lives and under which settings key, resolved when the job is
    prepared; `force` (force=true) never reuses a record but still writes one."""

    path: Path
    key: str
    force: bool = False

    def load(self, inputs: Mapping[str, str] | None) -> dict[str, Any] | None:
        """The record of a job with the same settings that finished on the same inputs, unless `force`.

        `inputs` is `calm.extraction.row_inputs.job_inputs` of this job (the digests of its model's content and prompt,
        and of the clip table it read); a record of other inputs (weights changed in place or read from
        another folder; a clip added, removed, relabelled or overwritten; or a record from before these were
        stored) is not reused. None skips that check (collecting tables without reading any data or weights:
        the latest record for the settings).
        """
        if self.force:
            return None
        done = read_record(self.path)
        if done is None or inputs is None:
            return done
        stored = done.get("inputs") if isinstance(done.get("inputs"), dict) else {}
        changed = [name for name, value in inputs.items() if stored.get(name) != value]
        if changed:
            log.info(
                "a job with these settings finished in %s on other inputs (changed: %s; %s); running it again",
                done["output_dir"],
                ", ".join(changed),
                INPUT_CHANGES,
            )
            return None
        return done

    def mark(self, payload: dict[str, Any], out_dir: Path, inputs: Mapping[str, str]) -> None:
        """Record a finished job with the digests of its inputs and of its own content, atomically (a unique
        temporary file renamed over the record): an interrupted write never counts as finished, and concurrent
        writers of one record never collide; the last one wins whole."""
        record = json.loads(
            json.dumps(
                {**payload, "inputs": dict(inputs), "settings_key": self.key, "output_dir": str(out_dir)}, default=str
            )
        )  # as it will be read back
        write_json_atomic(self.path, {**record, RECORD_DIGEST: _content_digest(record)}, indent=None)


def finished_record_of(cfg: DictConfig) -> FinishedRecord:
    """The finished-job record of a job's config (`paths.finished_dir`, the settings key, `force`)."""
    return FinishedRecord(finished_record(cfg), job_key(cfg), bool(cfg.get("force", False)))


def load_finished(cfg: DictConfig, inputs: Mapping[str, str] | None) -> dict[str, Any] | None:
    """`FinishedRecord.load` for a job's config."""
    return finished_record_of(cfg).load(inputs)


def mark_finished(cfg: DictConfig, payload: dict[str, Any], out_dir: Path, inputs: Mapping[str, str]) -> None:
    """`FinishedRecord.mark` for a job's config."""
    finished_record_of(cfg).mark(payload, out_dir, inputs)


def record_failure(out_dir: Path, err: BaseException) -> None:
    """Keep the error with the job's outputs, for the end-of-sweep report."""
    text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    write_text_atomic(Path(out_dir) / ERROR_FILE, f"{type(err).__name__}: {err}\n\n{text}")


def clear_failure(out_dir: Path) -> None:
    """A job that now succeeded in a folder where it once failed (a sweep rerun into a fixed folder) is
    not reported as failed."""
    (Path(out_dir) / ERROR_FILE).unlink(missing_ok=True)


def failed_jobs(sweep_dir: Path) -> list[tuple[Path, str]]:
    """(job folder, first line of its error) for every failed job under a sweep folder."""
    return [(path.parent, path.read_text().splitlines()[0]) for path in sorted(Path(sweep_dir).glob(f"*/{ERROR_FILE}"))]


def sweep_exit_code() -> int:
    """The exit code run.py ends with: EXIT_JOBS_FAILED when the sweep this process ran had failed jobs."""
    return EXIT_JOBS_FAILED if _last_sweep_failures else 0


class SweepReport(Callback):
    """At the end of a multirun, list the jobs that failed with their errors, and remember them for
    `sweep_exit_code` (raising here would skip the other callbacks' end-of-sweep work, e.g. figures)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        failures = failed_jobs(Path(config.hydra.sweep.dir))
        _last_sweep_failures[:] = failures
        if not failures:
            log.info("sweep finished: every job succeeded (%s)", config.hydra.sweep.dir)
            return
        lines = "\n".join(f"  {folder}: {first}" for folder, first in failures)
        log.error(
            "sweep finished with %d failed job(s); the others' results are intact (exit code %d):\n%s",
            len(failures),
            EXIT_JOBS_FAILED,
            lines,
        )
