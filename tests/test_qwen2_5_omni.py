"""Qwen2.5-Omni thinker backbone on a tiny random model of the real classes (built in the test, offline)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import torch

pytest.importorskip("torchvision", reason="Qwen2.5-Omni's real video processor (Qwen2VLVideoProcessor) needs it")

from calm.backbones.qwen2_5_omni import Qwen2_5OmniBackbone  # noqa: E402
from calm.data.audio import load_audio  # noqa: E402
from calm.errors import ConfigError, DataError  # noqa: E402
from calm.testing.tiny_omni import build_tiny_qwen2_5_omni  # noqa: E402
from tests import audio_lm_checks as lm  # noqa: E402
from tests.cli import family_backbone  # noqa: E402

tiny_dir, omni = lm.tiny_backbone_fixtures(build_tiny_qwen2_5_omni, Qwen2_5OmniBackbone, "omni")


@pytest.fixture(scope="module")
def omni_av(tiny_dir: Path) -> Qwen2_5OmniBackbone:
    backbone = family_backbone(Qwen2_5OmniBackbone, path=str(tiny_dir), modality="audio_video")
    backbone.load()
    return backbone


def test_same_activations_alone_and_in_a_padded_batch_of_other_lengths(omni) -> None:
    waves = lm.tones([0.5, 2.3, 1.1])
    batch = omni.collate(waves, lm.PROMPTS)
    assert (batch["attention_mask"] == 0).any(), "the batch must contain padding"
    assert (batch["last_index"] == batch["input_ids"].shape[1] - 1).all(), "left padding: last token at -1"
    batched = omni.capture(batch)
    assert batched.shape == (3, 8, 16) and batched.dtype == torch.float32
    for i, wave in enumerate(waves):
        alone = omni.capture(omni.collate([wave], [lm.PROMPTS[i]]))[0]
        torch.testing.assert_close(batched[i], alone, atol=1e-5, rtol=1e-5)
    assert (batched[0] - batched[1]).abs().max() > 0.1, "different clips must give different heads"


def test_captured_heads_are_attention_recomputed_from_q_k_v(omni) -> None:
    """Layer 1's captured heads = softmax(QKᵀ/√d)V at the last real token, from its own q/k/v projections.

    Recomputed here: the projections' inputs are captured (the layer's normed hidden states), q/k/v,
    RoPE, GQA expansion, softmax and the weighted sum are recomputed from scratch. With audio only the
    thinker's multimodal RoPE gives text and audio tokens the same position on all three axes (checked
    on the 3-axis position ids the LM's rotary embedding receives), so mrope reduces to plain 1-D RoPE over real tokens.
    """
    layer_index = 1
    layer = omni.model.model.language_model.layers[layer_index]
    attn = layer.self_attn
    seen: dict[str, torch.Tensor] = {}

    def keep_rope_positions(_module, args):
        seen["position_ids"] = args[1].detach().clone()

    def keep_attn_inputs(_module, _args, kwargs):
        seen["hidden"] = kwargs["hidden_states"].detach().clone()

    batch = omni.collate(lm.tones([1.7, 0.6]), lm.PROMPTS[:2])
    rotary = omni.model.model.language_model.rotary_emb
    rows = lm.captured_with(
        lambda: omni.capture(batch), [(rotary, keep_rope_positions, False), (attn, keep_attn_inputs, True)]
    )

    cfg = omni.text_config
    heads, kv_heads, d = cfg.num_attention_heads, cfg.num_key_value_heads, omni.head_dim
    assert kv_heads < heads, "the tiny model must exercise grouped-query attention"
    assert seen["position_ids"].shape[0] == 3, "the thinker computes 3-axis (t, h, w) positions"
    for row in range(2):
        real = batch["attention_mask"][row].bool()
        hidden = seen["hidden"][row, real]
        for axis in range(3):
            torch.testing.assert_close(seen["position_ids"][axis, row, real], torch.arange(int(real.sum())))
        positions = torch.arange(int(real.sum()))
        expected = lm.recomputed_heads(attn, hidden, positions, cfg, d)
        torch.testing.assert_close(
            rows[row, layer_index * heads : (layer_index + 1) * heads], expected, atol=1e-5, rtol=1e-5
        )


def test_the_lm_head_never_runs_and_only_thinker_lm_layers_are_hooked(omni, omni_av) -> None:
    assert [path for _, path, _ in omni._capture.modules] == [
        f"model.language_model.layers.{i}.self_attn.o_proj" for i in range(2)
    ]
    for backbone, batch in (
        (omni, omni.collate(lm.tones([0.8, 1.2]), lm.PROMPTS[:2])),
        (omni_av, omni_av.collate(lm.tones([0.8, 1.2]), lm.PROMPTS[:2], videos=_noise_videos([2, 3]))),
    ):
        calls: list[int] = []
        handle = backbone.model.lm_head.register_forward_hook(lambda *args, calls=calls: calls.append(1))
        try:
            rows = backbone.capture(batch)
        finally:
            handle.remove()
        assert rows.shape == (2, 8, 16)
        assert calls == [], "the vocabulary projection must not be computed"


def test_prompt_is_audio_then_text_then_the_assistant_header(omni, omni_av) -> None:
    rendered = omni.render_prompt("Which animal?")
    assert rendered.index("<|audio_bos|><|AUDIO|><|audio_eos|>") < rendered.index("Which animal?")
    assert rendered.endswith("Which animal?<|im_end|>\n" + lm.ASSISTANT_HEADER)
    rendered = omni_av.render_prompt("Which animal?")
    assert rendered.index("<|vision_bos|><|VIDEO|><|vision_eos|>") < rendered.index("Which animal?")
    assert rendered.endswith("Which animal?<|im_end|>\n" + lm.ASSISTANT_HEADER)
    with pytest.raises(ConfigError, match="audio placeholders"):
        family_backbone(
            Qwen2_5OmniBackbone, path=omni.source, chat_template="{{ messages[0]['role'] }}: q"
        ).render_prompt("x")


def test_key_and_heads_from_the_config_without_loading_weights(tiny_dir: Path) -> None:
    audio = family_backbone(Qwen2_5OmniBackbone, path=str(tiny_dir))
    assert audio.n_heads == 8 == len(audio.head_names()) and audio.head_dim == 16 and audio.model is None
    assert not audio.needs_video
    video = family_backbone(Qwen2_5OmniBackbone, path=str(tiny_dir), modality="audio_video")
    assert video.needs_video
    key_a, key_v = audio.key_fields(), video.key_fields()
    assert key_a["family"] == "qwen2_5_omni" and key_a["modality"] == "audio" and key_a["video"] is None
    assert key_v["modality"] == "audio_video" and key_v["video"]["fps"] == 2.0 and key_v != key_a
    assert (
        family_backbone(Qwen2_5OmniBackbone, path=str(tiny_dir), modality="audio_video", fps=1).key_fields()["video"][
            "fps"
        ]
        == 1.0
    )
    with pytest.raises(ConfigError, match="modality"):
        family_backbone(Qwen2_5OmniBackbone, path=str(tiny_dir), modality="video")


def _write_mp4(path: Path, wave: np.ndarray, frames: np.ndarray, rate: int = 16000, video_fps: int = 10) -> None:
    """An mp4 with an mpeg4 video stream (the given RGB frames) and a mono AAC audio stream (the given wave)."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=video_fps)
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        audio = container.add_stream("aac", rate=rate, layout="mono")
        for frame in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(video.encode())
        for start in range(0, len(wave), 1024):
            chunk = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(wave[None, start : start + 1024]), format="fltp", layout="mono"
            )
            chunk.sample_rate, chunk.pts = rate, start
            container.mux(audio.encode(chunk))
        container.mux(audio.encode())


def _noise_videos(lengths: list[int]) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8) for n in lengths]


def test_audio_video_consumes_real_frames_decoded_from_the_mp4(omni_av, tmp_path: Path) -> None:
    wave = lm.tones([2.0])[0]
    ramp = np.stack([np.full((48, 64, 3), 12 * i, np.uint8) for i in range(20)])  # 2 s at 10 fps, frame i = 12*i
    rng = np.random.default_rng(3)
    noise = rng.integers(0, 256, ramp.shape, dtype=np.uint8)
    _write_mp4(tmp_path / "ramp.mp4", wave, ramp)
    _write_mp4(tmp_path / "noise.mp4", wave, noise)

    frames = omni_av.load_video(tmp_path / "ramp.mp4")
    assert frames.shape == (4, 48, 64, 3) and frames.dtype == np.uint8  # 2 s at the processor's 2 fps
    np.testing.assert_allclose(frames.reshape(4, -1).mean(1), [0, 60, 120, 180], atol=8)  # frames 0, 5, 10, 15
    audio_a, audio_b = (load_audio(tmp_path / f"{n}.mp4", 16000) for n in ("ramp", "noise"))
    np.testing.assert_array_equal(audio_a, audio_b)

    videos = [frames, omni_av.load_video(tmp_path / "noise.mp4")]
    batch = omni_av.collate([audio_a, audio_b], ["Which scene?", "Which scene?"], videos=videos)
    # The Omni processor resizes video frames to its own pixel bounds (128..768 x 28 x 28), as the real model does.
    size = omni_av.processor.videos_kwargs["size"]
    direct = omni_av.processor.video_processor(videos, do_sample_frames=False, size=size, return_tensors="pt")
    torch.testing.assert_close(batch["pixel_values_videos"], direct["pixel_values_videos"])
    assert batch["video_grid_thw"][:, 0].tolist() == [2, 2]  # 4 frames / temporal patch 2
    video_id, audio_id = omni_av.processor.video_token_id, omni_av.processor.audio_token_id
    assert ((batch["input_ids"] == video_id).sum(1) > 0).all() and ((batch["input_ids"] == audio_id).sum(1) > 0).all()

    rows = omni_av.capture(batch)
    assert (rows[0] - rows[1]).abs().max() > 1e-3, "same audio, different frames: different heads"
    alone = omni_av.capture(omni_av.collate([audio_a], ["Which scene?"], videos=videos[:1]))[0]
    torch.testing.assert_close(rows[0], alone, atol=1e-5, rtol=1e-5)


def test_audio_video_without_frames_or_video_stream_is_a_clear_error(omni_av, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="videos="):
        omni_av.collate(lm.tones([0.5]), ["Hi"])
    wav_only = tmp_path / "audio.mp4"
    with av.open(str(wav_only), "w") as container:
        stream = container.add_stream("aac", rate=16000, layout="mono")
        chunk = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        chunk.sample_rate, chunk.pts = 16000, 0
        container.mux(stream.encode(chunk))
        container.mux(stream.encode())
    with pytest.raises(DataError, match="no video stream"):
        omni_av.load_video(wav_only)


def test_no_weights_and_no_network_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lm.check_no_weights_names_the_fix(Qwen2_5OmniBackbone, "Qwen/Qwen2.5-Omni-7B", tmp_path, monkeypatch)


def test_the_hub_layout_of_the_whole_omni_model_loads_its_thinker(tiny_dir: Path, omni, tmp_path: Path) -> None:
    """Qwen/Qwen2.5-Omni-7B ships one config (thinker, talker, token2wav) and `thinker.`-prefixed weights."""
    from safetensors.torch import load_file, save_file
    from transformers import Qwen2_5OmniConfig

    full = tmp_path / "omni_full"
    shutil.copytree(tiny_dir, full)
    Qwen2_5OmniConfig(
        thinker_config=json.loads((tiny_dir / "config.json").read_text()), enable_audio_output=False
    ).save_pretrained(full)
    weights = {}
    for name, tensor in load_file(tiny_dir / "model.safetensors").items():
        for new, old in (
            ("model.", "model.language_model."),
            ("audio_tower.", "model.audio_tower."),
            ("visual.", "model.visual."),
        ):
            name = name.replace(old, new) if name.startswith(old) else name
        weights[f"thinker.{name}"] = tensor
    weights["talker.codec_head.weight"] = torch.zeros(2, 2)  # the talker is never loaded
    save_file(weights, full / "model.safetensors", metadata={"format": "pt"})
    assert json.loads((full / "config.json").read_text())["model_type"] == "qwen2_5_omni"

    backbone = family_backbone(Qwen2_5OmniBackbone, path=str(full))
    assert backbone.n_heads == 8 and type(backbone.config).__name__ == "Qwen2_5OmniThinkerConfig"
    backbone.load()
    waves = lm.tones([0.7, 1.3])
    torch.testing.assert_close(
        backbone.capture(backbone.collate(waves, lm.PROMPTS[:2])),
        omni.capture(omni.collate(waves, lm.PROMPTS[:2])),
        atol=0,
        rtol=0,
    )
