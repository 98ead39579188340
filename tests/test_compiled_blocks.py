"""backbone.compile_blocks: which blocks are compiled (never one holding a capture hook), that the
flag keys the cache, and (slow) that compiled extraction captures the same heads in fp32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from calm.backbones.compiled_blocks import hook_free_blocks, unhooked_layers
from calm.backbones.qwen2_audio import Qwen2AudioBackbone
from calm.testing.tiny import build_tiny_qwen2_audio
from tests.cli import family_backbone


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_qwen2_audio(tmp_path_factory.mktemp("tiny_qwen2_audio"), seed=0)


def test_only_the_norms_and_mlps_of_hooked_layers_are_compiled(tiny_dir: Path) -> None:
    backbone = family_backbone(Qwen2AudioBackbone, path=str(tiny_dir), layers=[1])
    backbone.load()
    hooked = [path for _, path, _ in backbone._capture.modules]
    blocks = [path for path, _ in hook_free_blocks(backbone.model, hooked)]
    layer = hooked[0].removesuffix(".self_attn.o_proj")
    assert layer.endswith("layers.1")
    assert sorted(blocks) == sorted(
        f"{layer}.{name}" for name in ("mlp", "input_layernorm", "post_attention_layernorm")
    )
    assert not any(hook.startswith(block) for hook in hooked for block in blocks)
    encoder = [path for path, _ in unhooked_layers(backbone.model, hooked)]
    assert encoder == [f"model.audio_tower.layers.{i}" for i in range(2)]
    assert (
        unhooked_layers(backbone.model, [f"{encoder[1]}.self_attn.out_proj"])
        == unhooked_layers(backbone.model, hooked)[:1]
    )


def test_the_flag_is_part_of_the_cache_key(tiny_dir: Path) -> None:
    eager = family_backbone(Qwen2AudioBackbone, path=str(tiny_dir)).key_fields()
    assert "compiled_blocks" not in eager
    assert family_backbone(Qwen2AudioBackbone, path=str(tiny_dir), compile_blocks=True).key_fields() != eager


@pytest.mark.slow
def test_compiled_blocks_capture_the_same_heads_in_fp32(tiny_dir: Path) -> None:
    rng = np.random.default_rng(0)
    waves = [(0.1 * rng.standard_normal(int(16000 * s))).astype(np.float32) for s in (1.0, 2.5, 4.0)]
    rows = {}
    for compiled in (False, True):
        backbone = family_backbone(Qwen2AudioBackbone, path=str(tiny_dir), compile_blocks=compiled)
        backbone.load()
        with torch.no_grad():
            rows[compiled] = backbone.capture(backbone.collate(waves, ["What is it?"] * 3))
    torch.testing.assert_close(rows[True], rows[False], rtol=1e-4, atol=1e-4)
