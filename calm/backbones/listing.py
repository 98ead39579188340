"""`python -m calm.backbones ls`: every backbone config with what it captures, without loading weights.

Real checkpoints' sizes come from their hub config at load time and are not guessed here ("from hub
config"); a tiny random copy's sizes are the ones calm builds it with.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from calm.backbones.audio_lm import AudioLMBackbone
from calm.config.builder import CONFIG_DIR

FROM_HUB = "from hub config"


@dataclass(frozen=True)
class BackboneRow:
    """One `ls` line: a backbone config and what it captures."""

    name: str
    family: str
    heads: str
    audio: str
    hub_id: str
    license: str
    extras: str
    reads_prompt: str


def _named(dotted: str) -> object:
    module, _, name = str(dotted).rpartition(".")
    return getattr(importlib.import_module(module), name)


def _raw(cfg: DictConfig, key: str, default: object = None) -> object:
    """A config value without resolving interpolations (paths refer to the run's paths group)."""
    return OmegaConf.to_container(cfg, resolve=False).get(key, default)


def describe(name: str, cfg: DictConfig) -> BackboneRow:
    """The row for one backbone config; the class's own description where it has one."""
    cls = _named(cfg["_target_"])
    tiny_model = _raw(cfg, "tiny_model")
    if issubclass(cls, AudioLMBackbone):
        spec = cls.spec
        sizes = getattr(_named(tiny_model), "text_sizes", None) if tiny_model else None
        heads = (
            f"{sizes['num_hidden_layers']} × {sizes['num_attention_heads']} × {sizes['head_dim']} = "
            f"{sizes['num_hidden_layers'] * sizes['num_attention_heads']} heads"
            if sizes
            else FROM_HUB
        )
        return BackboneRow(
            name,
            spec.name,
            heads,
            spec.audio.description,
            str(_raw(cfg, "hub_id", spec.hub_id)),
            spec.license,
            ", ".join(spec.extras) or "-",
            "yes",
        )
    listed = getattr(cls, "listed_heads", None)
    window = getattr(cls, "listed_window", None) or getattr(cls, "window_seconds", None)
    reads = _raw(cfg, "text_prompt", getattr(cls, "uses_prompt_text", True))
    return BackboneRow(
        name,
        str(getattr(cls, "family", None) or cls.__module__.rpartition(".")[2]),
        str(listed) if listed else "from model config",
        f"{window:g} s window" if isinstance(window, (int, float)) else str(window or "-"),
        str(_raw(cfg, "hub_id", "-")),
        str(getattr(cls, "license", "-")),
        ", ".join(getattr(cls, "extras", ())) or "-",
        "yes" if reads else "no",
    )


def backbone_rows(config_dir: Path = CONFIG_DIR) -> list[BackboneRow]:
    """Every `configs/backbone/*.yaml`, sorted by name."""
    return [describe(path.stem, OmegaConf.load(path)) for path in sorted((config_dir / "backbone").glob("*.yaml"))]


def render(rows: list[BackboneRow], markdown: bool = False) -> str:
    header = BackboneRow(
        "backbone", "family", "layers × heads × head_dim", "audio window", "hub id", "license", "extras", "reads prompt"
    )
    table = [list(vars(row).values()) for row in [header, *rows]]
    if markdown:
        lines = ["| " + " | ".join(cells) + " |" for cells in table]
        return "\n".join([lines[0], "|" + "---|" * len(table[0]), *lines[1:]])
    widths = [max(len(cells[i]) for cells in table) for i in range(len(table[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(cells, widths, strict=True)).rstrip() for cells in table
    )
