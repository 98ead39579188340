"""The jobs behind a table: one per (row group, shot setting), composed from the experiment file as
`python run.py experiment=... shots=K` would (the experiment file sets the support draw a "<=K" or
"all" column needs; composing checks it does), then run through `calm.run.pipeline.run_job` (which skips
jobs that already finished on the same clip table) or, when only collecting, read from the finished-job
records (by the settings alone: collecting reads no data, so it takes the latest record of each job).

A job that cannot run (a `CalmError`: dataset or weights absent) or that breaks (anything else, e.g.
out of GPU memory) gives an outcome marked with the reason instead of rows, so one missing dataset
never loses the other tables.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from calm.baselines.zero_shot import ZERO_SHOT_ROW
from calm.config.assets import REPO_ROOT
from calm.errors import CalmError, ConfigError
from calm.reports.paper_grid import tuned_rows
from calm.run.sweeps import job_key, load_finished
from calm.tables.spec import ALL_SHOTS, CONFIGS_DIR, RowGroup, ShotSetting, TableSpec

log = logging.getLogger(__name__)
OK = "ok"
NO_DATA = "no data"
FAILED = "failed"
NEEDS_MANIFESTS = "needs the authors' files: set paper.manifests_dir"


@dataclass
class JobOutcome:
    """What one (row group, shots) job gave: its result rows, or why there are none."""

    group: RowGroup
    shots: ShotSetting
    methods: list[str]
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    status: str = OK
    reason: str = ""
    job_dir: str = ""
    key: str = ""
    seed: int | None = None


@contextmanager
def job_configs() -> Iterator[None]:
    """Hydra initialised on the repository's configs, so `compose_job` works inside the block;
    `CALM_ROOT` (the configs' `paths.root_dir`) defaults to the repository, as for run.py."""
    os.environ.setdefault("CALM_ROOT", str(REPO_ROOT))
    with initialize_config_dir(str(CONFIGS_DIR), version_base="1.3"):
        yield


def compose_job(
    group: RowGroup, shots: ShotSetting, out_dir: Path, overrides: Sequence[str], seed: int | None = None
) -> DictConfig:
    """The config `python run.py experiment=... shots=K` would run, its output folder under `out_dir`
    (call inside `job_configs()`); an "all" column sets no `shots` (the whole list ignores it); `seed`
    (a seeded group's job) sets `paper.seed`."""
    job_dir = Path(out_dir) / "jobs" / group.experiment / shots.folder
    shots_override = [] if shots.k is None else [f"shots={shots.k}"]
    if seed is not None:
        job_dir, shots_override = job_dir / f"seed_{seed}", [*shots_override, f"paper.seed={seed}"]
    cfg = compose(
        "config",
        overrides=[f"experiment={group.experiment}", *shots_override, f"paths.output_dir={job_dir}", *overrides],
    )
    check_support_draw(cfg, group, shots)
    return cfg


def check_support_draw(cfg: DictConfig, group: RowGroup, shots: ShotSetting) -> None:
    """The composed job draws the support its column promises: "<=K" needs `protocol.at_most`, "all"
    needs `protocol.support_draw: all`, a plain K neither (so a column never mislabels its numbers)."""
    at_most = bool(cfg.protocol.get("at_most", False))
    whole_list = cfg.protocol.get("support_draw") == ALL_SHOTS
    wanted = {"protocol.at_most": (shots.at_most, at_most), "protocol.support_draw=all": (shots.k is None, whole_list)}
    for key, (needed, composed) in wanted.items():
        if needed != composed:
            raise ConfigError(
                f"row group {group.label!r}: its {shots.key!r} column needs {key} to be {needed}, but "
                f"configs/experiment/{group.experiment}.yaml composes it as {composed}",
                "set it in the experiment file (protocol=paper has the key), or change the group's `shots` entry",
            )


def expected_methods(cfg: DictConfig) -> list[str]:
    """The rows a job reports: its estimators, zero-shot, text zero-shot (CLAP), and under protocol=paper
    two rows per estimator its grids file tunes (the rule of calm.reports.paper_grid, which writes them)."""
    methods = list(cfg.method.get("estimators") or {})
    if cfg.method.get("zero_shot"):
        methods.append(ZERO_SHOT_ROW)
    if cfg.method.get("text_zero_shot"):
        methods.append(str(cfg.method.text_zero_shot.row))
    return methods + tuned_rows(cfg)


def run_or_collect(
    group: RowGroup, shots: ShotSetting, cfg: DictConfig, collect_only: bool, seed: int | None = None
) -> JobOutcome:
    """Run the job (finished ones are skipped by the pipeline) or, with `collect_only`, read its record.
    A replay group without `paper.manifests_dir` gives NO_DATA saying so (nothing is read)."""
    outcome = JobOutcome(
        group, shots, expected_methods(cfg), job_dir=str(cfg.paths.output_dir), key=job_key(cfg), seed=seed
    )
    if group.replay and cfg.paper.get("manifests_dir") is None:
        outcome.status, outcome.reason = NO_DATA, NEEDS_MANIFESTS
        return outcome
    try:
        if collect_only:  # no data is read: the latest record for these settings, whatever table it ran on
            result = load_finished(cfg, inputs=None)
            if result is None:
                outcome.status, outcome.reason = NO_DATA, "not run yet (no finished job with these settings)"
                return outcome
            outcome.job_dir = result["output_dir"]
        else:
            from calm.run import pipeline  # the model stack loads only when a job runs

            result = pipeline.run_job(cfg)
            outcome.job_dir = result.get("output_dir", outcome.job_dir)
    except CalmError as err:
        outcome.status, outcome.reason = NO_DATA, err.problem
        log.warning("%s, shots %s: no data: %s", group.experiment, shots.key, err.problem)
        return outcome
    except Exception as err:  # noqa: BLE001 - one broken job must not lose the other tables
        outcome.status, outcome.reason = FAILED, f"{type(err).__name__}: {err}"
        log.exception("%s, shots %s failed; its rows are marked and the other jobs go on", group.experiment, shots.key)
        return outcome
    outcome.rows = {row["method"]: row for row in result["results"]}
    # rows the job reported (e.g. pseudo-label refits `calm+pl`) first, then expected ones it lacks
    outcome.methods = list(dict.fromkeys([*outcome.rows, *outcome.methods]))
    return outcome


def table_outcomes(
    spec: TableSpec,
    out_dir: Path,
    overrides: Sequence[str],
    collect_only: bool,
    per_group_overrides: Mapping[str, Sequence[str]] | None = None,
) -> list[JobOutcome]:
    """Every job of `spec`, group by group and shot setting by shot setting (call inside `job_configs()`);
    `per_group_overrides` adds overrides to the jobs of one experiment."""
    outcomes = []
    for group in spec.groups:
        extra = [*overrides, *(per_group_overrides or {}).get(group.experiment, [])]
        for shots in group.shots:
            for seed in group.seeds or (None,):
                cfg = compose_job(group, shots, out_dir, extra, seed)
                outcomes.append(run_or_collect(group, shots, cfg, collect_only, seed))
    return outcomes
