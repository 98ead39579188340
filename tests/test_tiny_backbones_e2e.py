"""Each tiny test backbone through the real config and pipeline: the cache holds what the backbone
captures directly for the same clips and prompts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from calm.backbones import build_backbone
from calm.cache import ActivationCache
from calm.data.audio import load_audio
from calm.data.fsdd import load_fsdd
from calm.data.prompts import build_prompt
from calm.extraction.row_inputs import model_key_fields
from calm.run.pipeline import run_job
from tests.cli import compose_config, small_fsdd

SLOW = pytest.mark.slow  # the same path as the fast ones; each family's own rules are in test_audio_lm_families.py


@pytest.mark.parametrize(
    "backbone_name",
    [
        "tiny_qwen2_audio",
        "tiny_qwen2_5_omni",
        "tiny_qwen3_asr",
        *(
            pytest.param(f"tiny_{family}", marks=SLOW)
            for family in ("qwen3_omni", "audio_flamingo3", "music_flamingo", "glm_asr", "phi4_multimodal", "voxtral")
        ),
    ],
)
def test_tiny_backbone_runs_end_to_end_from_the_config(
    backbone_name: str, tmp_path: Path, fsdd_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALM_CACHE", str(tmp_path / "cache"))
    data = small_fsdd(fsdd_root, tmp_path / "fsdd", indices=(0, 10))
    tiny_path = tmp_path / "models" / "tiny"
    cfg = compose_config(
        [
            "logger=none",
            f"backbone={backbone_name}",
            f"backbone.path={tiny_path}",
            f"dataset.root={data}",
            "shots=1",
            "queries=1",
            "episodes=2",
            "extract.batch_size=3",
        ],
        tmp_path / "out",
    )
    result = run_job(cfg)
    assert result["cache"]["extracted"] == 20 and (tiny_path / "config.json").is_file()
    backbone, prompt, table = build_backbone(cfg.backbone, "32-true"), build_prompt(cfg.prompt), load_fsdd(data)
    cache = ActivationCache.open_path(
        Path(result["cache"]["path"]), model_key_fields(backbone, prompt), backbone.n_heads, backbone.head_dim
    )
    backbone.load()
    waves = [load_audio(c.audio_path, 16000) for c in table.clips[:3]]
    direct = backbone.capture(backbone.collate(waves, [prompt.text_for(c, table) for c in table.clips[:3]]))
    torch.testing.assert_close(cache.read(table.ids[:3]), direct.to(torch.float16).float(), atol=2e-3, rtol=2e-3)
