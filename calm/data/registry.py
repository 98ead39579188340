"""Dataset name -> loader, so configs and tools pick datasets by name without importing each module."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig

from calm.data.fsdd import load_fsdd, resolve_root
from calm.data.table import ClipTable
from calm.errors import ConfigError


def _build_fsdd(cfg: DictConfig, data_dir: Path) -> ClipTable:
    root = resolve_root(cfg.get("root"), data_dir, bool(cfg.get("download", False)))
    return load_fsdd(root, cfg.get("max_clips_per_class"))


DATASETS: dict[str, Callable[[DictConfig, Path], ClipTable]] = {"fsdd": _build_fsdd}


def load_dataset(cfg: DictConfig, data_dir: str | Path) -> ClipTable:
    """Read a dataset's clip table (metadata only; no audio decoded)."""
    if cfg.name not in DATASETS:
        raise ConfigError(f"unknown dataset {cfg.name!r}", f"choose one of {sorted(DATASETS)}")
    return DATASETS[cfg.name](cfg, Path(data_dir))
