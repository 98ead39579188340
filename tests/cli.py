"""Helpers for tests that run the real entry point or compose the real configs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from calm.run.sweeps import register_resolvers

REPO = Path(__file__).resolve().parents[1]


def compose_config(overrides: list[str], out_dir: Path) -> DictConfig:
    """The config `run.py` would build, with the output folder fixed (no Hydra run here)."""
    os.environ.setdefault("CALM_ROOT", str(REPO))
    register_resolvers()  # as run.py has them before composing
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        return compose(
            "config", overrides=[*overrides, f"paths.output_dir={out_dir}", f"paths.finished_dir={out_dir}/finished"]
        )


def backbone_config(name: str, path: Path) -> DictConfig:
    """`backbone=<name>` as run.py composes it (a variant's `defaults` merged), with its weights at `path`."""
    cfg = compose_config([f"backbone={name}", f"backbone.path={path}"], path.parent / "out")
    return cfg.backbone


def family_backbone(backbone_class: type, **settings: Any) -> Any:
    """`backbone_class` built in Python with the `name`, `hub_id` and `assets_name` of its family's YAML
    (configs/backbone/<family>.yaml, their one home), `settings` over them."""
    cfg = OmegaConf.load(REPO / "configs" / "backbone" / f"{backbone_class.spec.name}.yaml")
    return backbone_class(**{"name": cfg.name, "hub_id": cfg.hub_id, "assets_name": cfg.assets_name, **settings})


def dataset_config(config: str, /, **settings: Any) -> DictConfig:
    """configs/dataset/<config>.yaml with `settings` over it, as `dataset=CONFIG dataset.KEY=VALUE` would give
    (without composing the rest: an interpolation such as hf's `${paths.data_dir}` must be set here)."""
    return OmegaConf.merge(OmegaConf.load(REPO / "configs" / "dataset" / f"{config}.yaml"), settings)


def run_cli(
    args: list[str], out_dir: Path, cache_dir: Path, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """`python run.py ARGS` in a subprocess, output in `out_dir`, cache in `cache_dir`."""
    full_env = {**os.environ, "CALM_CACHE": str(cache_dir), **(env or {})}
    return subprocess.run(
        [
            sys.executable,
            str(REPO / "run.py"),
            *args,
            f"hydra.run.dir={out_dir}",
            f"paths.finished_dir={out_dir}/finished",
        ],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def small_fsdd(
    fsdd_root: Path,
    dest: Path,
    speakers: tuple[str, ...] = ("george",),
    indices: tuple[int, ...] = (0, 1, 10, 11),
    digits: tuple[int, ...] = tuple(range(10)),
) -> Path:
    """A copy of a few real FSDD recordings in the official layout (fewer digits: fewer classes)."""
    (dest / "recordings").mkdir(parents=True, exist_ok=True)
    for digit in digits:
        for speaker in speakers:
            for index in indices:
                shutil.copy(fsdd_root / "recordings" / f"{digit}_{speaker}_{index}.wav", dest / "recordings")
    return dest


def load_script(name: str):
    """Import `scripts/<name>.py` as a module (scripts are not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
