"""Qwen2-Audio backbone on a tiny random model of the real classes (built in the test, offline)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from calm.backbones.qwen2_audio import Qwen2AudioBackbone
from calm.data.audio import load_audio
from calm.data.prompts import Prompt
from calm.errors import ConfigError
from calm.extraction.row_inputs import model_key_fields
from calm.testing.tiny import build_tiny_qwen2_audio, ensure_tiny_qwen2_audio
from tests import audio_lm_checks as lm
from tests.cli import REPO, family_backbone

tiny_dir, qwen = lm.tiny_backbone_fixtures(build_tiny_qwen2_audio, Qwen2AudioBackbone, "qwen")


def _assert_alone_equals_batched(qwen: Qwen2AudioBackbone, waves: list[np.ndarray], prompts: list[str]) -> None:
    batch = qwen.collate(waves, prompts)
    assert (batch["attention_mask"] == 0).any(), "the batch must contain padding"
    batched = qwen.capture(batch)
    for i, wave in enumerate(waves):
        alone = qwen.capture(qwen.collate([wave], [prompts[i]]))[0]
        torch.testing.assert_close(batched[i], alone, atol=1e-5, rtol=1e-5)
    assert (batched[0] - batched[1]).abs().max() > 0.1, "different clips must give different heads"


def test_same_activations_alone_and_in_a_padded_batch_of_other_lengths_and_prompts(qwen) -> None:
    waves = lm.tones([0.5, 2.3, 1.1])
    _assert_alone_equals_batched(qwen, waves, lm.PROMPTS)


def test_same_activations_for_real_clips_alone_and_batched(qwen, fsdd_root: Path) -> None:
    names = ["0_george_0", "7_jackson_12", "3_lucas_30", "9_yweweler_2"]
    waves = [load_audio(fsdd_root / "recordings" / f"{n}.wav", 16000) for n in names]
    assert len({len(w) for w in waves}) == 4
    _assert_alone_equals_batched(qwen, waves, [lm.PROMPTS[i % 3] for i in range(4)])


def test_captured_heads_are_attention_recomputed_from_q_k_v(qwen) -> None:
    """Layer 1's captured heads = softmax(QKᵀ/√d)V at the last real token, from its own q/k/v projections."""
    layer_index = 1
    layer = qwen.model.model.language_model.layers[layer_index]
    attn = layer.self_attn
    seen: dict[str, torch.Tensor] = {}

    def keep_layer_inputs(_module, _args, kwargs):
        seen["position_ids"] = kwargs["position_ids"].detach().clone()

    def keep_attn_inputs(_module, _args, kwargs):
        seen["hidden"] = kwargs["hidden_states"].detach().clone()

    batch = qwen.collate(lm.tones([1.7, 0.6]), lm.PROMPTS[:2])
    rows = lm.captured_with(
        lambda: qwen.capture(batch), [(layer, keep_layer_inputs, True), (attn, keep_attn_inputs, True)]
    )

    cfg = qwen.text_config
    heads, kv_heads, d = cfg.num_attention_heads, cfg.num_key_value_heads, qwen.head_dim
    assert kv_heads < heads, "the tiny model must exercise grouped-query attention"
    for row in range(2):
        real = batch["attention_mask"][row].bool()
        hidden = seen["hidden"][row, real]
        positions = seen["position_ids"][row, real]
        torch.testing.assert_close(positions, torch.arange(int(real.sum())))
        expected = lm.recomputed_heads(attn, hidden, positions, cfg, d)
        torch.testing.assert_close(
            rows[row, layer_index * heads : (layer_index + 1) * heads], expected, atol=1e-5, rtol=1e-5
        )


def test_the_lm_head_never_runs(qwen) -> None:
    calls = []
    handle = qwen.model.lm_head.register_forward_hook(lambda *args: calls.append(1))
    try:
        rows = qwen.capture(qwen.collate(lm.tones([0.8, 1.2]), lm.PROMPTS[:2]))
    finally:
        handle.remove()
    assert rows.shape == (2, 8, 16) and rows.dtype == torch.float32
    assert calls == [], "the vocabulary projection must not be computed"


def test_prompt_is_audio_then_text_then_the_assistant_header(qwen) -> None:
    rendered = qwen.render_prompt("Which animal?")
    assert rendered.index("<|audio_bos|><|AUDIO|><|audio_eos|>") < rendered.index("Which animal?")
    assert rendered.endswith("Which animal?<|im_end|>\n" + lm.ASSISTANT_HEADER)
    batch = qwen.collate(lm.tones([0.5, 1.5]), ["Which animal?", "Hi"])
    tokenizer = qwen.processor.tokenizer
    audio_id = tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    for row in range(2):
        ids = batch["input_ids"][row, batch["attention_mask"][row].bool()].tolist()
        assert ids[-1] == batch["input_ids"][row, batch["last_index"][row]]
        assert tokenizer.decode(ids[-len(tokenizer.encode(lm.ASSISTANT_HEADER)) :]) == lm.ASSISTANT_HEADER
        audio_at = [i for i, token in enumerate(ids) if token == audio_id]
        frames = int(batch["feature_attention_mask"][row].sum())  # 100 mel frames per second
        assert len(audio_at) == ((frames - 1) // 2 + 1 - 2) // 2 + 1 == (12, 37)[row]  # conv stride 2, pool 2
        assert audio_at[-1] < tokenizer.decode(ids).index("Which animal?" if row == 0 else "Hi")
    assert (batch["last_index"] == batch["input_ids"].shape[1] - 1).all(), "left padding: last token at -1"


def test_chat_template_without_audio_placeholder_is_a_clear_error(tiny_dir: Path) -> None:
    backbone = family_backbone(
        Qwen2AudioBackbone, path=str(tiny_dir), chat_template="{{ messages[0]['role'] }}: question"
    )
    with pytest.raises(ConfigError, match="audio placeholders"):
        backbone.key_fields()


def test_heads_from_the_config_without_loading_weights(tiny_dir: Path, qwen) -> None:
    backbone = family_backbone(Qwen2AudioBackbone, path=str(tiny_dir))
    assert backbone.n_heads == 2 * 4 == len(backbone.head_names()) and backbone.head_dim == 16
    assert backbone.head_names()[:5] == [f"lm_self_attn.L0.H{h}" for h in range(4)] + ["lm_self_attn.L1.H0"]
    assert backbone.model is None and backbone.uses_prompt_text
    assert [path for _, path, _ in qwen._capture.modules] == [
        f"model.language_model.layers.{i}.self_attn.o_proj" for i in range(2)
    ]
    assert qwen._capture.head_names() == backbone.head_names()
    second = family_backbone(Qwen2AudioBackbone, path=str(tiny_dir), layers=[1])
    assert second.n_heads == 4 and second.head_names()[0] == "lm_self_attn.L1.H0"
    with pytest.raises(ConfigError, match="outside"):
        family_backbone(Qwen2AudioBackbone, path=str(tiny_dir), layers=[2]).n_heads  # noqa: B018


def test_key_changes_with_precision_and_hook_points_not_with_batch(tiny_dir: Path, qwen) -> None:
    fp32 = family_backbone(Qwen2AudioBackbone, path=str(tiny_dir), precision="32-true").key_fields()
    assert fp32 == family_backbone(Qwen2AudioBackbone, path=str(tiny_dir)).key_fields()
    assert fp32 != family_backbone(Qwen2AudioBackbone, path=str(tiny_dir), precision="bf16-true").key_fields()
    assert fp32 != family_backbone(Qwen2AudioBackbone, path=str(tiny_dir), precision="bf16-mixed").key_fields()
    assert fp32 != family_backbone(Qwen2AudioBackbone, path=str(tiny_dir), layers=[0]).key_fields()
    assert "batch" not in str(fp32) and "device" not in str(fp32)
    assert fp32["audio"]["n_samples"] == 480000 and fp32["audio"]["sample_rate"] == 16000
    assert fp32["prompt_format"]["rendered"].endswith("{prompt}<|im_end|>\n" + lm.ASSISTANT_HEADER)
    assert "prompt" in model_key_fields(qwen, Prompt())
    with pytest.raises(ConfigError, match="unknown qwen2_audio hook points"):
        family_backbone(Qwen2AudioBackbone, path=str(tiny_dir), hook_points=["lm_head"])


def test_no_weights_and_no_network_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lm.check_no_weights_names_the_fix(Qwen2AudioBackbone, "Qwen/Qwen2-Audio-7B-Instruct", tmp_path, monkeypatch)


def test_tiny_model_is_deterministic_per_seed(tmp_path: Path, tiny_dir: Path) -> None:
    again = build_tiny_qwen2_audio(tmp_path / "again", seed=0)
    assert (again / "model.safetensors").read_bytes() == (tiny_dir / "model.safetensors").read_bytes()
    other = build_tiny_qwen2_audio(tmp_path / "other", seed=1)
    assert (
        family_backbone(Qwen2AudioBackbone, path=str(other)).key_fields()["weights"]
        != family_backbone(Qwen2AudioBackbone, path=str(again)).key_fields()["weights"]
    )
    with pytest.raises(ConfigError, match="seed 1"):
        ensure_tiny_qwen2_audio(other, seed=0)


NO_NETWORK_PROGRAM = """
from calm.backbones.qwen2_audio import Qwen2AudioBackbone
from calm.errors import AssetError
from tests.cli import family_backbone
try:
    family_backbone(Qwen2AudioBackbone).n_heads
except AssetError as err:
    print("ASSET_ERROR", err)
"""


def test_unreachable_hub_fails_fast_without_the_offline_flag(tmp_path: Path) -> None:
    """No HF_HUB_OFFLINE and no network: an error in seconds, not minutes of download retries."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env.update(
        HF_ENDPOINT=f"http://127.0.0.1:{closed_port}",
        HF_HOME=str(tmp_path / "hf"),
        CALM_ASSETS=str(tmp_path / "empty"),
        PYTHONPATH=str(REPO),
    )
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", NO_NETWORK_PROGRAM], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert "ASSET_ERROR" in proc.stdout and "backbone.path" in proc.stdout, proc.stdout + proc.stderr
    assert time.monotonic() - started < 20, "the missing hub must not be retried for minutes"


def test_generate_answers_are_greedy_new_tokens_only(tmp_path: Path) -> None:
    """The zero-shot path: one answer per clip, deterministic, prompt tokens not echoed."""
    from calm.backbones.qwen2_audio import Qwen2AudioBackbone
    from calm.testing.tiny import build_tiny_qwen2_audio

    backbone = family_backbone(Qwen2AudioBackbone, name="tiny", path=str(build_tiny_qwen2_audio(tmp_path / "tiny")))
    backbone.load()
    rate = backbone.sample_rate
    waves = [np.sin(np.linspace(0, 200 * s, int(rate * s))).astype(np.float32) for s in (0.5, 1.2)]
    first = backbone.generate_answers(waves, ["What sound is this?", "Name it."], max_new_tokens=4)
    again = backbone.generate_answers(waves, ["What sound is this?", "Name it."], max_new_tokens=4)
    assert len(first) == 2 and first == again
    assert all("What sound" not in answer and "assistant" not in answer for answer in first)


def test_generation_pads_clips_too_short_for_two_audio_tokens(tmp_path: Path) -> None:
    """A 0.05 s clip gives one audio token, which transformers' generate takes for unexpanded input and
    fails on; generation pads it with silence to 0.1 s (two tokens): the same answer as the clip padded
    by hand, while clips of 0.1 s or more are left alone."""
    from calm.backbones.qwen2_audio import Qwen2AudioBackbone, padded_for_generation
    from calm.testing.tiny import build_tiny_qwen2_audio

    backbone = family_backbone(Qwen2AudioBackbone, name="tiny", path=str(build_tiny_qwen2_audio(tmp_path / "tiny")))
    backbone.load()
    rate = backbone.sample_rate
    short = np.sin(np.linspace(0, 20, int(rate * 0.05))).astype(np.float32)
    padded = padded_for_generation(short, rate)
    assert (
        len(padded) == int(rate * 0.1)
        and np.array_equal(padded[: len(short)], short)
        and not padded[len(short) :].any()
    )
    long = np.ones(int(rate * 0.1), dtype=np.float32)
    assert padded_for_generation(long, rate) is long
    by_hand = np.concatenate([short, np.zeros(int(rate * 0.1) - len(short), dtype=np.float32)])
    answers = backbone.generate_answers([short], ["What sound is this?"], max_new_tokens=3)
    assert answers == backbone.generate_answers([by_hand], ["What sound is this?"], max_new_tokens=3)
