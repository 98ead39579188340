"""Checks the Qwen-family backbone tests share: test clips, the attention recomputed from q/k/v, and the
error without weights or network."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from calm.backbones.base import Backbone
from calm.errors import AssetError
from tests.cli import family_backbone

PROMPTS = ["What sound is this?", "Hi", "Describe the sound of this clip in one long sentence, please."]
ASSISTANT_HEADER = "<|im_start|>assistant\n"


def tiny_backbone_fixtures(build: Callable[..., Path], backbone_class: type, name: str) -> tuple[Any, Any]:
    """Two module fixtures: `tiny_dir` (the tiny model `build` writes, seed 0) and `name` (the backbone
    loaded from it)."""

    @pytest.fixture(scope="module", name="tiny_dir")
    def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
        return build(tmp_path_factory.mktemp(f"tiny_{name}"), seed=0)

    @pytest.fixture(scope="module", name=name)
    def backbone(tiny_dir: Path) -> Backbone:
        loaded = family_backbone(backbone_class, path=str(tiny_dir))
        loaded.load()
        return loaded

    return tiny_dir, backbone


def tones(seconds: list[float]) -> list[np.ndarray]:
    """16 kHz tones of the given lengths (each its own pitch) with a little noise."""
    rng = np.random.default_rng(0)
    waves = []
    for i, length in enumerate(seconds):
        t = np.arange(int(length * 16000)) / 16000
        waves.append(
            (0.3 * np.sin(2 * np.pi * (220 + 170 * i) * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
        )
    return waves


def rotate(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotary embedding on (seq, heads, d), rotate-half convention."""
    d = x.shape[-1]
    inv_freq = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float32) / d)
    angles = positions[:, None].float() * inv_freq
    angles = torch.cat([angles, angles], dim=-1)[:, None, :]
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return x * angles.cos() + torch.cat([-x2, x1], dim=-1) * angles.sin()


def captured_with(capture: Callable[[], torch.Tensor], hooks: list[tuple[nn.Module, Callable, bool]]) -> torch.Tensor:
    """`capture()` with forward pre-hooks (module, hook, with_kwargs) in place, removed afterwards."""
    handles = [module.register_forward_pre_hook(hook, with_kwargs=with_kwargs) for module, hook, with_kwargs in hooks]
    try:
        return capture()
    finally:
        for handle in handles:
            handle.remove()


def recomputed_heads(
    attn: nn.Module, hidden: torch.Tensor, positions: torch.Tensor, cfg: object, head_dim: int
) -> torch.Tensor:
    """softmax(QKᵀ/√d)V at the last token of `hidden` (one row's real tokens), from the layer's own q/k/v
    projections, RoPE at `positions` and the GQA expansion: (heads, head_dim)."""
    heads, kv_heads, d = cfg.num_attention_heads, cfg.num_key_value_heads, head_dim
    theta = cfg.rope_parameters["rope_theta"]
    with torch.no_grad():
        q = rotate(attn.q_proj(hidden).view(-1, heads, d), positions, theta)
        k = rotate(attn.k_proj(hidden).view(-1, kv_heads, d), positions, theta)
        v = attn.v_proj(hidden).view(-1, kv_heads, d)
    k, v = k.repeat_interleave(heads // kv_heads, dim=1), v.repeat_interleave(heads // kv_heads, dim=1)
    weights = torch.softmax(torch.einsum("hd,shd->hs", q[-1], k) / math.sqrt(d), dim=-1)
    return torch.einsum("hs,shd->hd", weights, v)


def check_no_weights_names_the_fix(backbone_class: type, hub_id: str, tmp_path, monkeypatch) -> None:
    """No local copy and no network: the hub id is the source, and loading fails naming `backbone.path`."""
    monkeypatch.setenv("CALM_ASSETS", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    backbone = family_backbone(backbone_class)
    assert backbone.source == hub_id
    with pytest.raises(AssetError, match=f"cannot load the weights of {hub_id}") as err:
        backbone.n_heads  # noqa: B018
    assert "backbone.path" in str(err.value)
    with pytest.raises(AssetError, match="backbone.path"):
        family_backbone(backbone_class, path=str(tmp_path / "nothing-here"))
