"""The one way a config becomes an object: its `_target_` names the class, its other keys are the
class's constructor arguments.

Datasets, prompts, backbones, protocols, estimators and loggers are built with `build` (and so should
anything else a config group names), so adding one is "write the class, add the YAML":
`configs/<group>/<name>.yaml` with `_target_` and the settings, whose defaults live in that file. A
settings block whose class the reading code chooses (`method.pseudo_label`, `grids.calm`) is built by
the same function with `cls=`, and has no `_target_`. `build` wraps `hydra.utils.instantiate` so that a missing or
wrong `_target_`, an unknown or missing setting, and an error the constructor raises for a bad
value reach the user as a `CalmError` naming the fix, not as Hydra's `InstantiationException`.

A class may declare only its own settings and take the rest as `**settings` that its constructor passes
on to `super().__init__`: its accepted keys are then those of the whole class hierarchy
(`settings_parameters`), so an unknown key is refused by every subclass as by its base.

`group_targets` reads a group's YAML files without importing any class: `python -m calm.data ls`
lists datasets with it, and `build(..., named=True)` uses it to keep a config's `name` tied to the
file that defines it. The name goes into seeds, cache ids and messages, so `dataset.name=esc50` on
top of `dataset=fsdd` must not quietly read FSDD under ESC-50's name.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

from omegaconf import OmegaConf

from calm.config.assets import REPO_ROOT
from calm.errors import CalmError, ConfigError

CONFIG_DIR = REPO_ROOT / "configs"

__all__ = ["CONFIG_DIR", "build", "group_targets", "settings_parameters", "target_class"]


def _where(cfg: Mapping[str, Any], group: str) -> str:
    name = cfg.get("name")
    return f"configs/{group}/{name}.yaml" if name else f"configs/{group}/<name>.yaml"


def target_class(cfg: Mapping[str, Any], group: str, base: type | None = None) -> type:
    """The class a config's `_target_` names (imported now), checked to be a subclass of `base`."""
    from hydra.utils import get_class

    target = cfg.get("_target_")
    where = _where(cfg, group)
    if not target:
        raise ConfigError(
            f"the {group} config {cfg.get('name')!r} has no _target_",
            f"add `_target_: <package>.<module>.<Class>` (the class that builds it) to {where}",
        )
    try:
        cls = get_class(str(target))
    except Exception as err:  # hydra raises ImportError, ValueError or its own errors for a bad path
        raise ConfigError(
            f"{group}._target_={target!r} cannot be imported ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''})",
            f"set _target_ in {where} to the dotted path of an existing class "
            f"(see the other files in configs/{group}/)",
        ) from err
    if base is not None and not issubclass(cls, base):
        raise ConfigError(
            f"{group}._target_={target!r} is not a {base.__module__}.{base.__qualname__}",
            f"point _target_ in {where} at a subclass of {base.__qualname__}",
        )
    return cls


def build(
    cfg: Mapping[str, Any],
    group: str,
    *,
    base: type | None = None,
    cls: type | None = None,
    named: bool = False,
    key: str | None = None,
    **extra: Any,
) -> Any:
    """Instantiate the object `cfg._target_` names with the config's other keys plus `extra`.

    `cfg` is a config node (interpolations resolved against its parent) or a plain mapping;
    lists and mappings reach the constructor as plain Python lists and dicts. With `named`, the
    config's `name` must be that of a file in configs/<group> whose `_target_` is the same class.
    `key` is where the config sits in a job's config (`method.estimators.calm`), for messages about
    a config that has no `name`. With `cls`, the config is a settings block of that class, chosen by
    the code that reads it, not by the user (`method.pseudo_label`, `grids.calm`): it names no
    `_target_`, and its keys are checked and passed to `cls` as any part's are.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    if cls is not None:
        return _build_settings(cfg, group, cls, key, extra)
    if named:
        _check_known_name(cfg, group)
    cls = target_class(cfg, group, base)
    if named:
        _check_same_target(cfg, group)
    node = cfg if OmegaConf.is_config(cfg) else dict(cfg)
    settings = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    settings.pop("_target_", None)
    _check_arguments(cls, settings, extra, group, _where(cfg, group), key)
    try:
        return instantiate(node, **extra, _convert_="all")
    except InstantiationException as err:
        if isinstance(err.__cause__, CalmError):  # the constructor's own message already names the fix
            raise err.__cause__ from None
        raise


def _build_settings(cfg: Mapping[str, Any], group: str, cls: type, key: str | None, extra: Mapping[str, Any]) -> Any:
    settings = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    label = key or group
    if not isinstance(settings, dict):
        raise ConfigError(
            f"{label} is {settings!r}, not a mapping of settings",
            f"give {label} as `setting: value` lines (its settings: {_accepted(cls, extra)})",
        )
    if "_target_" in settings:
        raise ConfigError(
            f"{label} names a class (_target_={settings['_target_']!r}), but it is a settings "
            f"block of {cls.__qualname__}",
            f"remove _target_ from {label}",
        )
    _check_arguments(cls, settings, extra, group, f"the `{label}` block", key)
    return cls(**settings, **extra)


def _accepted(cls: type, extra: Mapping[str, Any]) -> list[str]:
    return sorted(p.name for p in settings_parameters(cls) or () if p.name not in extra)


NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def _forwards_settings(init: Callable[..., Any], settings: str) -> bool:
    """Whether the constructor `init` passes its `**settings` on as `super().__init__(..., **settings)`
    (read from its source; a constructor without source, e.g. a C one, forwards nothing we can tell)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(init)))
    except (OSError, TypeError, SyntaxError):
        return False
    return any(
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "__init__"
        and isinstance(node.func.value, ast.Call)
        and isinstance(node.func.value.func, ast.Name)
        and node.func.value.func.id == "super"
        and any(k.arg is None and isinstance(k.value, ast.Name) and k.value.id == settings for k in node.keywords)
        for node in ast.walk(tree)
    )


def settings_parameters(cls: type) -> list[inspect.Parameter] | None:
    """The keyword settings `cls(...)` takes: its constructor's named parameters and, while a constructor
    passes its `**settings` on to `super().__init__`, those of the next constructor up the class hierarchy
    (a subclass's own default wins). None: the class takes any key (a `**kwargs` it does not pass on)."""
    found: dict[str, inspect.Parameter] = {}
    inits = [klass.__dict__["__init__"] for klass in cls.__mro__ if "__init__" in klass.__dict__]
    for init in inits:
        if init is object.__init__:
            break
        parameters = list(inspect.signature(init).parameters.values())[1:]  # without self
        for p in parameters:
            if p.kind in NAMED:
                found.setdefault(p.name, p)
        rest = next((p.name for p in parameters if p.kind is p.VAR_KEYWORD), None)
        if rest is None:
            break
        if not _forwards_settings(init, rest):
            return None
    return list(found.values())


def _check_arguments(
    cls: type, settings: Mapping[str, Any], extra: Mapping[str, Any], group: str, where: str, key: str | None
) -> None:
    """Unknown and missing settings as ConfigErrors naming the config (by `key` when given) and the
    settings its class accepts, before the constructor runs (Hydra's own message is a raw TypeError)."""
    label = key or f"{group} {settings.get('name')!r}"
    clashes = sorted(set(settings) & set(extra))
    if clashes:
        raise ConfigError(f"{label} sets {clashes}, which the job sets itself", f"remove {clashes} from {where}")
    params = settings_parameters(cls)
    if params is None:
        return
    allowed = {p.name for p in params}
    unknown = sorted(set(settings) - allowed)
    if unknown:
        accepted = sorted(allowed - set(extra))
        raise ConfigError(
            f"{label} has no setting(s) {unknown}",
            f"use one of {cls.__qualname__}'s settings {accepted}, as `{key}.<setting>=VALUE`"
            if key
            else f"use only {accepted} in {where}",
        )
    missing = sorted(p.name for p in params if p.default is p.empty and p.name not in settings and p.name not in extra)
    if missing:
        raise ConfigError(
            f"{label} lacks the setting(s) {missing}",
            f"add them to {where}; a config composed from that file (run.py {group}=NAME) has them all",
        )


@cache
def _targets(group: str) -> tuple[tuple[str, str], ...]:
    found = []
    for path in sorted((CONFIG_DIR / group).glob("*.yaml")):
        cfg = OmegaConf.load(path)
        found.append((str(cfg.get("name", path.stem)), str(cfg.get("_target_") or "")))
    return tuple(found)


def group_targets(group: str) -> dict[str, str]:
    """`name` -> `_target_` of every file in configs/<group>, in file-name order; no class is imported."""
    return dict(_targets(group))


def _check_known_name(cfg: Mapping[str, Any], group: str) -> None:
    known = group_targets(group)
    name = cfg.get("name")
    if name is None:
        raise ConfigError(
            f"the {group} config has no `name`",
            f"compose it from a file in configs/{group}/ ({group}=NAME), which sets name and _target_",
        )
    if name not in known:
        raise ConfigError(
            f"unknown {group} {name!r}",
            f"choose one of {sorted(known)} ({group}=NAME), or add configs/{group}/{name}.yaml "
            "whose `_target_` names the class that builds it",
        )


def _check_same_target(cfg: Mapping[str, Any], group: str) -> None:
    name, target = cfg.get("name"), str(cfg.get("_target_"))
    expected = group_targets(group)[name]
    if expected and target != expected:
        raise ConfigError(
            f"{group}.name={name!r} is the {group} of configs/{group}/{name}.yaml ({expected}), "
            f"but this config builds {target}",
            f"pick that {group} with {group}={name} (not {group}.name={name}), or give this config its own "
            f"name and file in configs/{group}/",
        )
