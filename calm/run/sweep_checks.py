"""Preflight for multiruns: every job of a sweep is composed and checked before the first one starts.

Hydra's launchers compose a job's config only when they start that job, so a misspelt key or an
unknown dataset in job 3 surfaces after jobs 1 and 2 have run (on a cluster: after queueing).
`SweepPreflight.on_multirun_start` expands the sweep (`hydra.sweeper.params` and the command
line's overrides) into its jobs, composes each one exactly as the launchers will, and checks:

- every overridden key exists (`+key=...` adds one on purpose) and every config named exists,
  also those an experiment file names (`override /dataset: ...`);
- every job's top-level settings have their types and ranges, and no undeclared key is added
  (`calm.config.schema`: `seed=0,1.5` fails here, not in the second job after a model load);
- every job's `dataset` config names a dataset of configs/dataset (its `name`, and the class its
  `_target_` names: `calm.data.registry.build_dataset`'s checks, without reading any data);
- a search optimises a support-set cross-validation metric, never a test metric (`calm.run.search`).
- an Optuna search searches at least one setting of the estimator it scores (`search.estimator`).

Sweeps of up to `MAX_COMPOSED` jobs are composed in full; a larger one (a grid of thousands) is
covered value by value: the first job, and for every swept key one job per value with the other
keys at their first value. Interval sweeps (Optuna) are checked at both ends.

Hydra turns an exception raised in a callback into a warning and carries on, so a rejected sweep
is logged here and ends the process with exit code 2, as `run.py` does for a bad single job.
"""

from __future__ import annotations

import difflib
import itertools
import logging
import math
import re
from collections.abc import Iterable
from typing import Any

from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override
from hydra.errors import OverrideParseException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from calm.config.schema import check_settings
from calm.data.registry import build_dataset, dataset_names
from calm.errors import CalmError, ConfigError
from calm.run.search import check_objective, optuna_sweeper

log = logging.getLogger(__name__)

MAX_COMPOSED = 64
EXIT_CODE = 2


class SweepPreflight(Callback):
    """Reject a sweep that cannot run as asked before any job starts or any output folder exists."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            checked = preflight(config)
        except CalmError as err:
            log.error("sweep rejected before any job started: %s", err)
            raise SystemExit(EXIT_CODE) from err
        log.info("preflight: %d job config(s) composed and checked", checked)


def preflight(config: DictConfig) -> int:
    """Check a multirun's config and every job's; returns how many job configs were composed.

    Raises ConfigError naming the problem, the job and the fix.
    """
    search_active = _check_search(config, config)
    loader = GlobalHydra.instance().config_loader()
    parser = OverridesParser.create(config_loader=loader)
    jobs = sweep_jobs(config, parser)
    searched = [
        override.package or override.key_or_group  # a group's package: where its config goes
        for override in _sweep_overrides(config, parser).values()
        if override.is_sweep_override()
    ]
    known = _setting_names(config)
    for overrides in jobs:
        try:
            job = loader.load_sweep_config(config, list(overrides))
        except Exception as err:  # Hydra raises several types; each is translated into problem and fix
            raise _composition_error(err, overrides, known, loader, config) from err
        _check_settings(job, overrides)
        _check_dataset(job, overrides)
        if search_active:
            _check_search(config, job)
            _check_searched_estimator(config, job, searched)
    return len(jobs)


def sweep_jobs(config: DictConfig, parser: OverridesParser) -> list[list[str]]:
    """The override lists of the jobs to compose: the whole sweep, or a cover of its values."""
    axes = [_values(override) for override in _sweep_overrides(config, parser).values()]
    if math.prod(len(axis) for axis in axes) <= MAX_COMPOSED:
        return [list(job) for job in itertools.product(*axes)]
    first = [axis[0] for axis in axes]
    jobs = [first]
    for i, axis in enumerate(axes):
        jobs += [first[:i] + [value] + first[i + 1 :] for value in axis[1:]]
    return jobs


def _sweep_overrides(config: DictConfig, parser: OverridesParser) -> dict[str, Override]:
    """The sweep's overrides (`hydra.sweeper.params`, then the command line's) by key; a later
    override of a key replaces an earlier one, as in the sweepers."""
    params = config.hydra.sweeper.get("params") or {}
    lines = [f"{key}={value}" for key, value in params.items()]
    lines += list(OmegaConf.to_container(config.hydra.overrides.task, resolve=False))
    try:
        parsed = parser.parse_overrides(lines)
    except OverrideParseException as err:
        raise ConfigError(
            f"a sweep override cannot be parsed: {err}",
            "fix its syntax (https://hydra.cc/docs/advanced/override_grammar/extended/); a choice() cannot hold null",
        ) from err
    return {override.get_key_element(): override for override in parsed}


def _values(override: Override) -> list[str]:
    """`key=value` lines for each value a sweep override takes (an interval: its two ends)."""
    key = override.get_key_element()
    if not override.is_sweep_override():
        return [f"{key}={override.get_value_element_as_str()}"]
    if override.is_discrete_sweep():
        return [f"{key}={value}" for value in override.sweep_string_iterator()]
    value = override.value()
    if isinstance(value, IntervalSweep):
        return [f"{key}={value.start}", f"{key}={value.end}"]
    return [override.input_line]


def _setting_names(config: DictConfig) -> list[str]:
    """Every dotted setting name of the sweep's config, for 'did you mean' hints."""
    tree = OmegaConf.to_container(config, resolve=False)
    tree.pop("hydra", None)
    return list(_dotted(tree, ""))


def _dotted(node: Any, prefix: str) -> Iterable[str]:
    if isinstance(node, dict):
        for key, child in node.items():
            name = f"{prefix}{key}"
            yield name
            yield from _dotted(child, f"{name}.")


def _composition_error(
    err: Exception, overrides: list[str], known: list[str], loader: Any, config: DictConfig
) -> ConfigError:
    text = str(err)
    job = " ".join(overrides) or "(no overrides)"
    missing_key = re.search(r"Could not (?:override|append to|delete from config)\.? '([^']+)'", text) or re.search(
        r"Key '([^']+)' is not in struct", text
    )
    if missing_key:
        key = missing_key.group(1)
        swept = next(
            (
                line.split("=", 1)[0].lstrip("+~")
                for line in overrides
                if line.split("=", 1)[0].lstrip("+~").endswith(key)
            ),
            None,
        )
        full = swept or key
        close = difflib.get_close_matches(full, known, n=1, cutoff=0.75)
        hint = f"did you mean `{close[0]}`? " if close else ""
        who = "the sweep sets" if swept else f"a config file sets ({text.strip().splitlines()[0]})"
        return ConfigError(
            f"{who} `{full}`, which is not a setting of this config (job: {job})",
            f"{hint}check the spelling; `python run.py --cfg job` lists every setting, and `+{full}=...` "
            "adds a new one on purpose",
        )
    missing_config = re.search(r"(?:In '([^']+)': )?Could not find '([^']+)/([^'/]+)'", text)
    if missing_config:
        origin, group, name = missing_config.groups()
        options = loader.get_group_options(group)
        where = _who_names(origin, f"{group}/{name}", overrides, loader, config)
        registry = (
            f" (a dataset config's `name` must be one of {sorted(dataset_names())})"
            if group.split("/")[-1] == "dataset"
            else ""
        )
        return ConfigError(
            f"{where} `{group}: {name}`, but there is no configs/{group}/{name}.yaml (job: {job})",
            f"use one of {options}{registry}, or add configs/{group}/{name}.yaml",
        )
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    return ConfigError(
        f"job `{job}` cannot be composed: {first}",
        f"fix that override or the config file the message names; `python run.py {job} --cfg job` "
        "shows the full error for this one job",
    )


def _who_names(origin: str | None, missing: str, overrides: list[str], loader: Any, config: DictConfig) -> str:
    """Where a missing config was asked for: a config file Hydra names, the sweep itself, or the
    config a group override of the job picked (an experiment's `override /group: ...`, which Hydra
    reports as coming from the primary config)."""
    if origin and origin != "config":
        return f"the config `{origin}` names"
    if any(line.lstrip("+~") == missing.replace("/", "=", 1) for line in overrides):
        return "the sweep names"
    for line in overrides:
        key = line.split("=", 1)[0].lstrip("+~").split("@")[0]
        if "." in key or not loader.get_group_options(key):
            continue
        try:
            loader.load_sweep_config(config, [line])
        except Exception as err:  # the same failure with this override alone: it is the culprit
            if f"'{missing}'" in str(err):
                return f"the config picked by `{line}` names"
    return "a config file names"


def _check_settings(job: DictConfig, overrides: list[str]) -> None:
    """The job's top-level settings, typed as a single run types them (`calm.config.schema`)."""
    try:
        check_settings(job)
    except ConfigError as err:
        raise ConfigError(f"{err.problem} (job: {' '.join(overrides) or '(no overrides)'})", err.fix) from err


def _check_dataset(job: DictConfig, overrides: list[str]) -> None:
    """The job's dataset is one of configs/dataset and its class can be built (no data is read)."""
    name = OmegaConf.select(job, "dataset.name")
    job_text = " ".join(overrides) or "(no overrides)"
    known = sorted(dataset_names())
    if name not in known:
        choices = job.hydra.runtime.choices
        source = ", ".join(f"{group}={choices[group]}" for group in ("experiment", "dataset") if choices.get(group))
        raise ConfigError(
            f"dataset.name={name!r} is not a dataset calm can read ({source or 'config'}; job: {job_text})",
            f"set dataset.name (or pick dataset=<config>) to one of {known}; for your own clips use "
            "dataset=folder dataset.root=PATH",
        )
    try:
        build_dataset(job.dataset)
    except ConfigError as err:
        raise ConfigError(f"{err.problem} (job: {job_text})", err.fix) from err


def _check_searched_estimator(sweep: DictConfig, job: DictConfig, searched: list[str]) -> None:
    """An Optuna search scores `search.estimator`; if none of its settings is searched, every trial
    scores the same estimator and Optuna optimises a number its parameters never change."""
    if not optuna_sweeper(OmegaConf.select(sweep, "hydra.sweeper")):
        return
    name = job.search.estimator
    prefix = f"method.estimators.{name}."
    if any(f"{key}.".startswith(prefix) for key in searched):
        return
    raise ConfigError(
        f"search.estimator={name} is the estimator whose support-set score Optuna optimises, but no searched "
        f"setting lies under `{prefix}` (searched: {', '.join(searched) or 'nothing'}); every trial would "
        "score the same estimator",
        f"search one of its settings (`{prefix}<setting>=choice(...)` or `interval(...)`, in "
        "hydra.sweeper.params or on the command line), or set search.estimator to the estimator whose settings "
        "are searched",
    )


def _check_search(sweep: DictConfig, job: DictConfig) -> bool:
    """Whether a search runs; raises if it would optimise anything but a support-set CV metric."""
    optuna = optuna_sweeper(OmegaConf.select(sweep, "hydra.sweeper"))
    if not optuna and job.get("optimized_metric") is None:
        return False
    if optuna and job.get("optimized_metric") is None:
        raise ConfigError(
            "an Optuna sweep needs an objective, but optimized_metric is not set",
            "use hparams_search=calm_optuna, which optimises support_cv_accuracy",
        )
    check_objective(job)
    direction = str(OmegaConf.select(sweep, "hydra.sweeper.direction", default="maximize"))
    if optuna and "minimize" in direction.lower():
        raise ConfigError(
            f"hydra.sweeper.direction={direction} would minimise {job.optimized_metric}, an accuracy",
            "set hydra.sweeper.direction=maximize",
        )
    return True
