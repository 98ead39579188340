from pathlib import Path

import pytest
import torch

from calm.backbones.base import resolve_weights
from calm.backbones.whisper import WhisperBackbone
from calm.data.audio import load_audio
from calm.errors import AssetError, ConfigError

JFK = "And so my fellow Americans ask not what your country can do for you, ask what you can do for your country."


def test_real_weights_transcribe_the_known_sentence(whisper, assets: Path) -> None:
    wave = load_audio(assets / "speech" / "jfk.flac", 16000)
    assert whisper.transcribe(wave) == JFK


def test_all_72_heads_in_layer_major_order(whisper) -> None:
    names = whisper.head_names()
    assert whisper.n_heads == len(names) == 72 and whisper.head_dim == 64
    assert names[:7] == [f"decoder_self_attn.L0.H{h}" for h in range(6)] + ["decoder_self_attn.L1.H0"]
    assert names[24] == "decoder_cross_attn.L0.H0" and names[48] == "encoder_self_attn.L0.H0"


def _fsdd_waves(fsdd_root: Path, names: list[str]) -> list:
    return [load_audio(fsdd_root / "recordings" / f"{n}.wav", 16000) for n in names]


def test_activations_same_alone_and_in_a_batch_of_other_lengths(whisper, fsdd_root: Path) -> None:
    waves = _fsdd_waves(fsdd_root, ["0_george_0", "7_jackson_12", "3_lucas_30", "9_yweweler_2"])
    assert len({len(w) for w in waves}) == 4
    batched = whisper.capture(whisper.collate(waves, ["q"] * 4))
    for i, wave in enumerate(waves):
        alone = whisper.capture(whisper.collate([wave], ["q"]))[0]
        torch.testing.assert_close(batched[i], alone, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(batched[0], batched[1], atol=1e-2)


def _capture_with_module_input(whisper, module, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """The backbone's rows and, independently, the full input the given module received."""
    seen = {}
    handle = module.register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0].detach().clone()))
    try:
        rows = whisper.capture(batch)
    finally:
        handle.remove()
    return rows, seen["x"]


def test_decoder_capture_is_the_out_proj_input_at_the_last_token(whisper, fsdd_root: Path) -> None:
    """Recompute the captured decoder self-attention heads from the module's own input."""
    waves = _fsdd_waves(fsdd_root, ["5_nicolas_7", "1_george_44"])
    batch = whisper.collate(waves, ["q", "q"])
    rows, full = _capture_with_module_input(whisper, whisper.model.model.decoder.layers[2].self_attn.out_proj, batch)
    expected = full[torch.arange(2), batch["last_index"]].reshape(2, 6, 64)
    torch.testing.assert_close(rows[:, 2 * 6 : 3 * 6], expected)


def test_encoder_heads_average_only_real_frames(whisper, fsdd_root: Path) -> None:
    wave = _fsdd_waves(fsdd_root, ["2_lucas_3"])[0]
    batch = whisper.collate([wave], ["q"])
    real = int(batch["frame_mask"].sum())
    assert real == -(-len(wave) // 160 // 2) or abs(real - len(wave) / 320) <= 1
    rows, full = _capture_with_module_input(whisper, whisper.model.model.encoder.layers[0].self_attn.out_proj, batch)
    expected = full[0, :real].mean(0).reshape(6, 64)
    torch.testing.assert_close(rows[0, 48:54], expected, atol=1e-5, rtol=1e-5)


def test_hook_points_are_a_config_list(whisper_dir: Path) -> None:
    decoder_only = WhisperBackbone(path=str(whisper_dir), hook_points=["decoder_cross_attn"])
    assert decoder_only.n_heads == 24
    assert decoder_only.key_fields() != WhisperBackbone(path=str(whisper_dir)).key_fields()
    with pytest.raises(ConfigError, match="unknown Whisper hook points"):
        WhisperBackbone(path=str(whisper_dir), hook_points=["lm_head"])


def test_key_ignores_batch_and_device_but_not_precision(whisper_dir: Path) -> None:
    fp32 = WhisperBackbone(path=str(whisper_dir), precision="32-true").key_fields()
    bf16 = WhisperBackbone(path=str(whisper_dir), precision="bf16-true").key_fields()
    assert fp32 != bf16
    assert "batch" not in str(fp32) and "device" not in str(fp32)


def test_missing_local_copy_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(AssetError, match="backbone.path"):
        WhisperBackbone(path=str(tmp_path / "nothing-here"))


def test_no_assets_and_no_network_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALM_ASSETS", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert resolve_weights("openai/whisper-tiny.en", None, "whisper-tiny.en") == "openai/whisper-tiny.en"
    backbone = WhisperBackbone()
    with pytest.raises(AssetError, match="cannot load the weights of openai/whisper-tiny.en") as err:
        backbone.n_heads  # noqa: B018
    assert "backbone.path" in str(err.value)
