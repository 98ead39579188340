"""Backbones: one module per model family, built from the `backbone` config group."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from calm.backbones.base import Backbone
from calm.errors import ConfigError


def build_backbone(cfg: DictConfig, precision: str) -> Backbone:
    """Instantiate (without loading weights) the backbone named by `cfg._target_`."""
    from hydra.utils import get_class

    params = OmegaConf.to_container(cfg, resolve=True)
    target = params.pop("_target_", None)
    if target is None:
        raise ConfigError("backbone config has no _target_", "add `_target_: calm.backbones.<module>.<Class>`")
    return get_class(target)(**params, precision=precision)


__all__ = ["Backbone", "build_backbone"]
