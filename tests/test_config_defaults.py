"""Defaults live in YAML: a Python default of a class a config builds may only repeat the value every YAML that
builds the class gives the same key (as the default run composes it), or stand where no YAML sets the key."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from calm.config.authors_modes import register_authors_resolver
from calm.config.builder import CONFIG_DIR, settings_parameters
from tests.test_builder import BLOCKS

GROUPS = ("estimator", "logger", "dataset", "prompt", "protocol", "method")
PLACE = {"estimator": "method.estimators.probe"}  # where a group's file sits in a run's config


def home_files(group: str) -> list[str]:
    """The files of a group that are not variants of another (a variant lists a sibling in `defaults`)."""
    homes = []
    for path in sorted((CONFIG_DIR / group).glob("*.yaml")):
        defaults = OmegaConf.load(path).get("defaults") or []
        if not any(isinstance(entry, str) and entry != "_self_" for entry in defaults):
            homes.append(path.stem)
    return homes


@cache
def default_run() -> DictConfig:
    register_authors_resolver()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("config", overrides=["paths.output_dir=/unused"])


def placed(group: str, name: str) -> tuple[DictConfig, str]:
    """The default run with configs/<group>/<name>.yaml in its place (as `group=name` composes a file without
    a defaults list of its own group; a method file's estimators are checked as estimator files), and where."""
    cfg = default_run().copy()
    OmegaConf.set_struct(cfg, False)
    key = PLACE.get(group, group)
    OmegaConf.update(cfg, key, OmegaConf.load(CONFIG_DIR / group / f"{name}.yaml"), merge=False)
    return cfg, key


def literal(node: DictConfig, name: str) -> bool:
    """A value written in the file (or the clean side of a `${calm.authors:...}` switch), not wiring to another
    setting such as `${shots}` or `${dataset.name}`."""
    raw = OmegaConf.to_container(node, resolve=False)[name]
    return not (isinstance(raw, str) and "${" in raw) or raw.startswith("${calm.authors:")


def checked_nodes(cfg: DictConfig, key: str) -> Iterator[tuple[str, type, DictConfig]]:
    """(key, class, node) of the node at `key` when it builds an object, and of the settings blocks under it;
    nodes nested in a built node (AutoSelect's candidates) override their own files and are not homes."""
    node = OmegaConf.select(cfg, key)
    if "_target_" in node:
        yield key, get_class(str(node._target_)), node
        return
    for name in node:
        child = f"{key}.{name}"
        if child in BLOCKS and OmegaConf.select(cfg, child) is not None:
            yield child, BLOCKS[child], OmegaConf.select(cfg, child)


def same(default: Any, value: Any) -> bool:
    """Equal values of the same kind: a list is a tuple, an int a float, but a bool is no number."""
    if isinstance(default, tuple | list) and isinstance(value, tuple | list):
        return len(default) == len(value) and all(same(a, b) for a, b in zip(default, value, strict=False))
    if isinstance(default, bool) or isinstance(value, bool):
        return type(default) is type(value) and default == value
    return default == value and (type(default) is type(value) or {type(default), type(value)} <= {int, float})


def disagreements(group: str, name: str) -> list[str]:
    cfg, key = placed(group, name)
    found = []
    for where, cls, node in checked_nodes(cfg, key):
        for param in settings_parameters(cls) or ():  # the class's and, passed on as **settings, its bases'
            if param.default is param.empty or param.name not in node or not literal(node, param.name):
                continue
            value = OmegaConf.select(cfg, f"{where}.{param.name}", throw_on_missing=True)
            value = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
            if not same(param.default, value):
                found.append(
                    f"{cls.__module__}.{cls.__qualname__}({param.name}={param.default!r}) but "
                    f"configs/{group}/{name}.yaml sets {param.name}: {value!r}"
                )
    return found


@pytest.mark.parametrize("group", GROUPS)
def test_no_python_default_disagrees_with_its_yaml(group: str) -> None:
    found = [line for name in home_files(group) for line in disagreements(group, name)]
    assert not found, "\n".join(found)


def test_no_backbone_default_disagrees_with_its_yaml() -> None:
    found = [line for name in home_files("backbone") for line in disagreements("backbone", name)]
    assert not found, "\n".join(found)


def test_a_default_the_yaml_contradicts_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    class OldSettings:  # PseudoLabelSettings before: pool_size None where configs/method/pseudo_label.yaml says 200
        def __init__(self, refit: list[str], samples: int = 8, pool_size: int | None = None) -> None: ...

    monkeypatch.setitem(BLOCKS, "method.pseudo_label", OldSettings)
    found = disagreements("method", "pseudo_label")
    assert [line.split("<locals>.")[1] for line in found] == [
        "OldSettings(pool_size=None) but configs/method/pseudo_label.yaml sets pool_size: 200"
    ]


@pytest.mark.parametrize(
    ("default", "value", "agree"),
    [
        (0.07, 0.07, True),
        (5.0, 5, True),
        (None, 200, False),
        (16, 32, False),
        (("a",), ["a"], True),
        (False, 0, False),
        ("0", 0, False),
    ],
)
def test_the_comparison(default: Any, value: Any, agree: bool) -> None:
    assert same(default, value) is agree


def test_variants_and_wiring_are_not_homes() -> None:
    assert "hard_vote" not in home_files("estimator") and "calm_random" not in home_files("estimator")
    assert {"sav", "calm", "auto"} <= set(home_files("estimator"))
    node = OmegaConf.create({"a": 1, "b": "${a}", "c": "${calm.authors:1,2}", "d": "text"})
    assert [name for name in node if literal(node, name)] == ["a", "c", "d"]
