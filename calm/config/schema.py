"""The types and ranges of a job's top-level settings, checked before any data is read or model loads.

Hydra composes whatever it is given: `seed=1.5` and `seed=abc` compose, and then fail as a raw
`TypeError` after the model has loaded and extracted; `+foo=1` composes and is never read, so a
misspelt setting silently changes nothing. `check_settings` types every top-level setting (`shots`,
`seed`, `force`, `on_bad_clip`, `extract.*`, `trainer.*`, ...), requires every config group, and
refuses keys no one declared, each as a `ConfigError(problem, fix)` naming the key. `calm.run.job.prepare`
calls it first thing and the sweep preflight (`calm.run.sweep_checks`) calls it on every job it composes,
so a bad value fails before any data is read or model loads in both (within seconds; a single run
spends most of them importing torch). Each estimator's `top_k` is checked here too (`TOP_K`), so a
sweep's preflight refuses `top_k=0` without importing an estimator class.

A schema here rather than Hydra structured configs keeps the config files plain YAML, keeps the
messages calm's own (problem and fix, never a traceback), and keeps this module free of torch and
Lightning, so the preflight stays quick. The config groups (`dataset`, `method`, ...) are checked by
the classes they build (`calm.config.builder.build`); here they only have to be there.

A config file that sets a new top-level key (an `# @package _global_` experiment or search file)
declares it in `DECLARED_BY_GROUPS`; tests/test_config_schema.py fails for any file that sets an
undeclared one.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from numbers import Integral
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from calm.errors import ConfigError

__all__ = ["BAD_CLIP_POLICIES", "LONG_CLIP_POLICIES", "TOP_K", "check_settings", "declared_keys", "paper_grids"]

BAD_CLIP_POLICIES = ("error", "skip")
LONG_CLIP_POLICIES = ("truncate", "error")
# Lightning's accepted `precision` values (lightning_fabric.connector._PRECISION_INPUT), listed here
# so that checking them needs no Lightning import.
PRECISIONS = (
    64,
    32,
    16,
    "64",
    "32",
    "16",
    "bf16",
    "64-true",
    "32-true",
    "16-true",
    "16-mixed",
    "bf16-true",
    "bf16-mixed",
    "transformer-engine",
    "transformer-engine-float16",
)
# Trainer arguments calm's extraction sets itself (calm.extraction.extract.extract_missing): a config value for
# one of them would be a duplicate keyword argument, a TypeError after the model has loaded.
RESERVED_TRAINER_KEYS = (
    "logger",
    "callbacks",
    "enable_checkpointing",
    "enable_model_summary",
    "use_distributed_sampler",
)
# The config groups of configs/config.yaml's defaults list; each builds its own object and checks it.
GROUPS = ("paths", "backbone", "dataset", "prompt", "method", "protocol", "logger")
HOW_TO_LIST = "`python run.py --cfg job` prints every setting"
# protocol=paper's class, named here as its config writes it (this module imports no calm class)
PAPER_PROTOCOL_TARGETS = ("calm.protocols.PaperProtocol", "calm.protocols.paper.PaperProtocol")


@dataclass(frozen=True)
class Rule:
    """What one setting may hold: `accepts` decides, `expected` and `example` word the message."""

    expected: str
    example: str
    accepts: Callable[[Any], bool]


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def integer(low: int, example: str, nullable: bool = False, meaning_of_null: str = "") -> Rule:
    """An int (a bool, a float such as 1.5 or a string such as '5' is not one) of at least `low`."""
    words = {0: "a non-negative integer", 1: "a positive integer"}.get(low, f"an integer >= {low}")
    if nullable:
        words = f"null ({meaning_of_null}) or {words}"
    return Rule(words, example, lambda v: (nullable and v is None) or (_is_int(v) and v >= low))


def boolean(example: str) -> Rule:
    return Rule("true or false", example, lambda v: isinstance(v, bool))


def choice(options: tuple[Any, ...], example: str | None = None) -> Rule:
    shown = ", ".join(str(o) for o in options)
    return Rule(f"one of {shown}", example or str(options[0]), lambda v: not isinstance(v, bool) and v in options)


def text(example: str, nullable: bool = False) -> Rule:
    words = "null or a non-empty string" if nullable else "a non-empty string"
    return Rule(words, example, lambda v: (nullable and v is None) or (isinstance(v, str) and v != ""))


def _devices(value: Any) -> bool:
    """Lightning's `devices`: a count (or -1: all), a string ("auto", "0,1"), or a list of device ids."""
    if _is_int(value):
        return value >= 1 or value == -1
    if isinstance(value, str):
        return value != ""
    return isinstance(value, (list, tuple)) and bool(value) and all(_is_int(v) and v >= 0 for v in value)


def _torch_device(value: Any) -> bool:
    """`evaluate.device`: auto (a GPU when there is one) or a torch device name."""
    return isinstance(value, str) and re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value) is not None


def _grids(value: Any) -> bool:
    """`grids`: per method name, a mapping of parameter name to a non-empty list of values."""
    return isinstance(value, Mapping) and all(
        isinstance(grid, Mapping) and all(isinstance(v, list) and v for v in grid.values()) for grid in value.values()
    )


# `top_k` of every estimator (CALM, SAV, GRW, TopKSoft, LinearProbe): checked here for every
# `method.estimators.<name>.top_k`, and by each estimator's constructor (calm.methods.checks.check_top_k).
TOP_K = integer(1, "20", nullable=True, meaning_of_null="all heads")

TOP_LEVEL: dict[str, Rule] = {
    "task_name": text("calm"),
    "shots": integer(1, "5"),
    "ways": integer(2, "5", nullable=True, meaning_of_null="all classes"),
    "queries": integer(1, "5"),
    "episodes": integer(1, "100"),
    "seed": integer(0, "0"),
    "force": boolean("false"),
    "on_bad_clip": choice(BAD_CLIP_POLICIES),
    "on_long_clip": choice(LONG_CLIP_POLICIES),
    "figures": boolean("true"),
}
SECTIONS: dict[str, dict[str, Rule]] = {
    "extract": {"batch_size": integer(1, "16"), "num_workers": integer(0, "0")},
    "evaluate": {
        "device": Rule("auto, cpu, mps, cuda or cuda:N", "auto", _torch_device),
        "query_chunk": integer(1, "256"),
        "memory_budget_mb": integer(1, "128"),
        "dtype": choice(("float32", "model")),
    },
    "paper": {
        "manifests_dir": text("~/CALM/SAVs/data", nullable=True),
        "seed": integer(0, "123", nullable=True, meaning_of_null="no seeded support file"),
        "clips": Rule(
            "a mapping of dataset name to the folder holding its clips",
            "{esc50: ~/ESC-50-master}",
            lambda v: isinstance(v, Mapping),
        ),
    },
    "trainer": {
        "accelerator": text("auto"),
        "devices": Rule("a device count, -1 (all), a string such as auto, or a list of device ids", "1", _devices),
        "num_nodes": integer(1, "1"),
        "strategy": text("auto"),
        "precision": choice(PRECISIONS, "32-true"),
    },
}
# a file of each group in DECLARED_BY_GROUPS that sets all of its keys (named in messages)
GROUP_EXAMPLES = {"grids": "generic", "hparams_search": "calm_optuna"}
# Top-level keys a config group adds (they are absent unless that group is picked), with their rules.
DECLARED_BY_GROUPS: dict[str, dict[str, Rule | dict[str, Rule]]] = {
    "grids": {"grids": Rule("per method, a mapping of parameter to a non-empty list of values", "generic", _grids)},
    "hparams_search": {
        "optimized_metric": text("support_cv_accuracy", nullable=True),
        "search": {"estimator": text("calm"), "folds": integer(2, "5"), "seed": integer(0, "0")},
    },
}


def declared_keys() -> set[str]:
    """Every top-level key a composed config may hold (besides Hydra's own `hydra`)."""
    declared = set(TOP_LEVEL) | set(SECTIONS) | set(GROUPS)
    for keys in DECLARED_BY_GROUPS.values():
        declared |= set(keys)
    return declared


def check_settings(cfg: Mapping[str, Any]) -> None:
    """Raise a ConfigError naming the first setting that is unknown, missing or of the wrong type."""
    declared = declared_keys()
    for key in cfg:
        if key != "hydra" and key not in declared:
            raise _unknown(str(key), sorted(declared))
    for key, rule in TOP_LEVEL.items():
        _check(key, _value(cfg, key), rule)
    for section, rules in SECTIONS.items():
        _check_section(section, _section(cfg, section), rules)
    for group in GROUPS:
        if not isinstance(_value(cfg, group), Mapping):
            raise ConfigError(
                f"the `{group}` config group is missing or not a config",
                f"pick one with {group}=NAME (one of configs/{group}/*.yaml), or drop the override that removed it",
            )
    for origin, keys in DECLARED_BY_GROUPS.items():
        for key, rules in keys.items():
            if key not in cfg:
                continue
            try:
                if isinstance(rules, Rule):
                    _check(key, _value(cfg, key), rules)
                else:
                    _check_section(key, _section(cfg, key), rules)
            except ConfigError as err:
                raise ConfigError(
                    f"{err.problem} (`{key}` belongs to the {origin} group)",
                    f"{err.fix}; {origin}={GROUP_EXAMPLES[origin]} sets every `{key}` setting",
                ) from err
    _check_estimators(cfg["method"])
    paper_grids(cfg)


def _check_estimators(method: Mapping[str, Any]) -> None:
    """The estimator settings a sweep's preflight can check without importing an estimator class (and
    so torch): `top_k`, whose 0 would otherwise fail inside Hydra's instantiation of the first job."""
    estimators = _value(method, "estimators", "method.estimators") if "estimators" in method else None
    for name, spec in (estimators or {}).items():
        if isinstance(spec, Mapping) and "top_k" in spec:
            key = f"method.estimators.{name}.top_k"
            _check(key, _value(spec, "top_k", key), TOP_K)


def paper_grids(cfg: Mapping[str, Any]) -> dict[str, Any] | None:
    """protocol=paper's grids (`grids`, from configs/grids/<dataset>.yaml) as plain dicts; None under any
    other protocol. A ConfigError when protocol=paper has none for the dataset."""
    protocol = cfg.get("protocol")
    if not isinstance(protocol, Mapping) or protocol.get("_target_") not in PAPER_PROTOCOL_TARGETS:
        return None
    grids = cfg.get("grids")
    if grids is None:
        name = _value(cfg, "dataset").get("name", "<dataset>")
        raise ConfigError(
            f"protocol=paper sweeps each method's grid for the dataset, and dataset {name!r} has none "
            f"(configs/grids/{name}.yaml does not exist)",
            f"create configs/grids/{name}.yaml (`defaults: [generic]` reuses the generic grids), "
            "or pick a grid file with grids=generic",
        )
    return OmegaConf.to_container(grids, resolve=True) if OmegaConf.is_config(grids) else dict(grids)


def _value(cfg: Mapping[str, Any], key: str, name: str | None = None) -> Any:
    """The resolved value of `key` (called `name` in messages), or a ConfigError for a missing or
    unresolvable one."""
    name = name or key
    if key not in cfg:
        raise ConfigError(
            f"the setting `{name}` is missing from the config",
            f"set it (`{name}=...` on the command line; configs/config.yaml has a default); {HOW_TO_LIST}",
        )
    try:
        return cfg[key]
    except OmegaConfBaseException as err:
        raise ConfigError(
            f"the setting `{name}` cannot be resolved: {str(err).splitlines()[0]}",
            f"fix the interpolation that sets `{name}`; {HOW_TO_LIST}",
        ) from err


def _section(cfg: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    node = _value(cfg, key)
    if not isinstance(node, Mapping):
        raise ConfigError(
            f"`{key}` must be a group of settings, got {_shown(node)}",
            f"set its fields one by one ({key}.NAME=VALUE); {HOW_TO_LIST}",
        )
    return node


def _check_section(section: str, node: Mapping[str, Any], rules: dict[str, Rule]) -> None:
    extra = [str(key) for key in node if key not in rules]
    if section == "trainer":
        _check_trainer_extras(extra)
    elif extra:
        raise _unknown(f"{section}.{extra[0]}", [f"{section}.{k}" for k in rules])
    for key, rule in rules.items():
        _check(f"{section}.{key}", _value(node, key, f"{section}.{key}"), rule)


def _check_trainer_extras(extra: list[str]) -> None:
    """More `trainer.*` keys may be any argument of Lightning's Trainer but those extraction sets."""
    reserved = [key for key in extra if key in RESERVED_TRAINER_KEYS]
    if reserved:
        raise ConfigError(
            f"`trainer.{reserved[0]}` is set by calm's extraction itself and cannot be configured",
            f"remove trainer.{reserved[0]} from the command line or config",
        )
    if not extra:
        return
    import inspect

    import pytorch_lightning as pl  # only here: a config with extra Trainer arguments is rare

    accepted = [name for name in inspect.signature(pl.Trainer).parameters if name not in RESERVED_TRAINER_KEYS]
    for key in extra:
        if key not in accepted:
            raise _unknown(
                f"trainer.{key}",
                [f"trainer.{name}" for name in accepted],
                "trainer.* takes the arguments of pytorch_lightning.Trainer",
            )


def _check(key: str, value: Any, rule: Rule) -> None:
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    if rule.accepts(value):
        return
    quoted = (
        " (a quoted number is a string: write it without quotes)"
        if isinstance(value, str) and value.strip().lstrip("-").replace(".", "", 1).isdigit()
        else ""
    )
    raise ConfigError(
        f"`{key}` must be {rule.expected}, got {_shown(value)}",
        f"set {key} to {rule.expected}, e.g. {key}={rule.example}{quoted}",
    )


def _shown(value: Any) -> str:
    return repr(OmegaConf.to_container(value) if isinstance(value, DictConfig) else value)


def _unknown(key: str, known: list[str], note: str = "") -> ConfigError:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
    hint = f"did you mean `{close[0]}`? " if close else ""
    if "." not in key:
        note = "a config group that needs a new top-level key declares it in calm/config/schema.py (DECLARED_BY_GROUPS)"
    return ConfigError(
        f"`{key}` is not a setting calm knows (added by `+{key}=...` or a config file)",
        f"{hint}remove it or fix its spelling; {HOW_TO_LIST}{'; ' + note if note else ''}",
    )
