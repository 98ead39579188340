"""Backbones: one module per model family, built from the `backbone` config group."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from calm.backbones.base import Backbone
from calm.config.builder import build


def build_backbone(cfg: Mapping[str, Any], precision: str) -> Backbone:
    """Instantiate (without loading weights) the backbone class `cfg._target_` names."""
    return build(cfg, "backbone", base=Backbone, precision=precision)


__all__ = ["Backbone", "build_backbone"]
