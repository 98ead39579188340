"""Every audio-language model family on a tiny random model of its real classes (built here, offline),
through its real processor and the real extraction path of the shared adapter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from calm.backbones import build_backbone
from calm.backbones.audio_lm import AudioLMBackbone
from calm.data.audio import load_audio
from tests.cli import backbone_config

FAMILIES = ["qwen3_omni", "audio_flamingo3", "music_flamingo", "glm_asr", "qwen3_asr", "phi4_multimodal", "voxtral"]
CLIPS = ["0_george_0", "7_jackson_12", "3_lucas_30"]  # different lengths, all under a second
PROMPTS = ["What sound is this?", "Hi", "Which digit is spoken here, from zero to nine?"]


@pytest.fixture(scope="module", params=FAMILIES)
def family(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AudioLMBackbone:
    """The family's `backbone=tiny_<family>` config, built and loaded once per module."""

    cfg = backbone_config(f"tiny_{request.param}", tmp_path_factory.mktemp(request.param) / "tiny")
    backbone = build_backbone(cfg, "32-true")
    backbone.load()
    return backbone


@pytest.fixture(scope="module")
def waves(fsdd_root: Path) -> list[np.ndarray]:
    return [load_audio(fsdd_root / "recordings" / f"{name}.wav", 16000) for name in CLIPS]


def test_every_language_model_head_is_captured_and_nothing_else(family: AudioLMBackbone) -> None:
    text = family.text_config
    assert family.n_heads == text.num_hidden_layers * text.num_attention_heads == 8
    base = family.base_model()
    language_model = getattr(base, "language_model", base)
    expected = [layer.self_attn.o_proj for layer in language_model.layers]
    assert [module for _, _, module in family._capture.modules] == expected
    others = [
        name
        for name, module in family.model.named_modules()
        if name.endswith(("o_proj", "out_proj")) and all(module is not e for e in expected)
    ]
    assert others, "the audio tower has attention too; the hooks must skip it"


def test_batched_extraction_equals_clip_by_clip(family: AudioLMBackbone, waves: list[np.ndarray]) -> None:
    batch = family.collate(waves[1:], PROMPTS[1:])
    assert (batch["attention_mask"] == 0).any(), "the batch must contain padding"
    rows = family.capture(batch)
    assert rows.shape == (2, family.n_heads, family.head_dim)
    for i, wave in enumerate(waves[1:]):
        alone = family.capture(family.collate([wave], [PROMPTS[1 + i]]))[0]
        torch.testing.assert_close(rows[i], alone, atol=1e-5, rtol=1e-5)
    assert (rows[0] - rows[1]).abs().max() > 0.1, "different clips must give different heads"


def test_last_index_is_the_last_prompt_token_of_each_left_padded_row(
    family: AudioLMBackbone, waves: list[np.ndarray]
) -> None:
    batch = family.collate(waves, PROMPTS)
    width = batch["input_ids"].shape[1]
    assert batch["last_index"].tolist() == [width - 1] * 3
    header = generation_prompt_ids(family)
    for row in range(3):
        tail = batch["input_ids"][row, width - len(header) :].tolist()
        assert tail == header, "each row must end with the generation prompt"


def generation_prompt_ids(family: AudioLMBackbone) -> list[int]:
    """The token ids after the prompt text; mistral-common never parses special tokens out of text."""
    tail = family.render_prompt("x").rsplit("x", 1)[1]
    if family.spec.name == "voxtral":
        return [family.processor.tokenizer.convert_tokens_to_ids(tail)]
    return family.processor.tokenizer(tail, add_special_tokens=False)["input_ids"]


def test_rendered_prompt_holds_the_audio_placeholder_then_the_prompt_text(family: AudioLMBackbone) -> None:
    rendered = family.render_prompt("Which animal is this?")
    token = family.processor.audio_token
    assert rendered.count(token) == 1 and rendered.index(token) < rendered.index("Which animal is this?")
    key = family.key_fields()
    assert key["family"] == family.spec.name and "{prompt}" in key["prompt_format"]["rendered"]


def test_zero_shot_generation_returns_new_text(family: AudioLMBackbone, waves: list[np.ndarray]) -> None:
    answers = family.generate_answers(waves[:2], PROMPTS[:2], max_new_tokens=3)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    assert not any(PROMPTS[i] in answers[i] for i in range(2)), "the prompt must not be echoed"


def test_a_missing_extra_is_a_clear_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from calm.backbones.audio_lm import require_extras
    from calm.backbones.phi4_multimodal import PHI4_MULTIMODAL
    from calm.errors import ConfigError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "peft" else real(name, *a))
    with pytest.raises(ConfigError, match=r"(?s)needs the package 'peft'.*calm\[phi4_multimodal\]"):
        require_extras(PHI4_MULTIMODAL)


def without_mistral_common(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mistral_common" else real(name, *a)
    )


def test_voxtral_without_mistral_common_is_a_clear_error_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:

    from calm.errors import ConfigError

    without_mistral_common(monkeypatch)
    (tmp_path / "config.json").write_text("{}")
    cfg = backbone_config("voxtral", tmp_path)
    with pytest.raises(ConfigError, match=r"(?s)needs the package 'mistral-common'.*calm\[voxtral\]"):
        build_backbone(cfg, "32-true").template()


def test_the_tiny_voxtral_needs_mistral_common_too(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:

    from calm.errors import ConfigError

    without_mistral_common(monkeypatch)
    cfg = backbone_config("tiny_voxtral", tmp_path / "tiny")
    with pytest.raises(ConfigError, match=r"pip install 'calm\[voxtral\]'"):
        build_backbone(cfg, "32-true")
