"""The padding-aware audio encoder: the cut mel input gives the activations of the full 30 s input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from calm.backbones.encoder_cut import (
    ENCODER_STRIDE,
    cut_mel,
    cut_width,
    encode_audio,
    merged_embeddings,
)
from calm.backbones.qwen2_audio import Qwen2AudioBackbone
from calm.errors import ConfigError
from calm.testing.tiny import build_tiny_qwen2_audio
from tests.cli import family_backbone

PROMPTS = ["What sound is this?", "Hi", "Describe the sound of this clip in one long sentence, please.", "Which?"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_qwen2_audio(tmp_path_factory.mktemp("tiny_qwen2_audio_cut"), seed=0)


@pytest.fixture(scope="module")
def pair(tiny_dir: Path) -> tuple[Qwen2AudioBackbone, Qwen2AudioBackbone]:
    cut = family_backbone(Qwen2AudioBackbone, path=str(tiny_dir), encoder_cut=True)
    full = family_backbone(Qwen2AudioBackbone, path=str(tiny_dir), encoder_cut=False)
    full.attach(cut.load())  # one model, two ways of running its audio tower
    return cut, full


def _noise(seconds: list[float], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.2 * rng.standard_normal(int(s * 16000))).astype(np.float32) for s in seconds]


def test_cut_width_keeps_two_frames_of_look_ahead_rounded_to_the_stride() -> None:
    assert ENCODER_STRIDE == 4
    assert cut_width(torch.tensor([500, 120]), 3000) == 504
    assert cut_width(torch.tensor([501]), 3000) == 504
    assert cut_width(torch.tensor([502]), 3000) == 504
    assert cut_width(torch.tensor([503]), 3000) == 508
    assert cut_width(torch.tensor([2999]), 3000) == 3000 == cut_width(torch.tensor([3000]), 3000)
    features, mask = torch.zeros(2, 128, 3000), torch.zeros(2, 3000, dtype=torch.long)
    mask[0, :37], mask[1, :211] = 1, 1
    short, short_mask = cut_mel(features, mask)
    assert short.shape == (2, 128, 216) and short_mask.shape == (2, 216) and short_mask.sum() == 248


@pytest.mark.parametrize("seconds", [[0.37, 2.3, 1.1, 0.05], [4.99, 5.0, 3.01], [29.98, 0.4], [31.0, 12.5]])
def test_cut_encoder_gives_the_full_inputs_activations(pair, seconds: list[float]) -> None:
    """fp32 tiny model: same captured heads (1e-5) with the cut and the full 30 s mel input, batched."""
    cut, full = pair
    waves = _noise(seconds)
    batch = cut.collate(waves, PROMPTS[: len(waves)])
    assert batch["input_features"].shape[-1] == 3000
    real = batch["feature_attention_mask"].sum(-1)
    assert len(set(real.tolist())) == len(waves), "clips of different lengths"
    cut_rows, full_rows = cut.capture(batch), full.capture(batch)
    torch.testing.assert_close(cut_rows, full_rows, atol=1e-5, rtol=1e-5)
    assert cut_rows.abs().max() > 0.1 and (cut_rows[0] - cut_rows[1]).abs().max() > 0.1


def test_cut_audio_features_equal_the_towers_own_on_every_kept_position(pair) -> None:
    cut, _ = pair
    base = cut.model.model
    batch = cut.collate(_noise([0.8, 2.6, 1.7]), PROMPTS[:3])
    features, mask = batch["input_features"], batch["feature_attention_mask"]
    full_out, lengths = encode_audio(base.audio_tower, features, mask)
    short_out, short_lengths = encode_audio(base.audio_tower, *cut_mel(features, mask))
    assert short_out.shape[1] * 4 < full_out.shape[1] == 750
    assert torch.equal(lengths, short_lengths)
    for row, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(short_out[row, :n], full_out[row, :n], atol=1e-5, rtol=1e-5)
    # encode_audio on the full width is the tower's own forward (through the model's own mask building)
    embeds = merged_embeddings(base, batch["input_ids"], features, mask, cut=False)
    seen = {}
    handle = base.language_model.register_forward_pre_hook(
        lambda _m, _a, kw: seen.update(embeds=kw["inputs_embeds"]), with_kwargs=True
    )
    try:
        with torch.no_grad():
            base(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                position_ids=batch["position_ids"],
                input_features=features,
                feature_attention_mask=mask,
                use_cache=False,
            )
    finally:
        handle.remove()
    torch.testing.assert_close(embeds, seen["embeds"], atol=1e-6, rtol=1e-6)


def test_cut_encoder_does_a_fraction_of_the_work(pair) -> None:
    cut, _ = pair
    tower = cut.model.model.audio_tower
    widths = []
    handle = tower.conv1.register_forward_pre_hook(lambda _m, args: widths.append(args[0].shape[-1]))
    try:
        cut.capture(cut.collate(_noise([1.0, 0.5]), PROMPTS[:2]))
    finally:
        handle.remove()
    assert widths == [104]  # 100 frames + 2 look-ahead, rounded up to 4: not the 3,000 of the window


def test_cut_is_not_in_the_cache_key_and_refuses_other_towers(tiny_dir: Path, pair) -> None:
    assert (
        family_backbone(Qwen2AudioBackbone, path=str(tiny_dir), encoder_cut=True).key_fields()
        == family_backbone(Qwen2AudioBackbone, path=str(tiny_dir), encoder_cut=False).key_fields()
    )
    assert family_backbone(Qwen2AudioBackbone, path=str(tiny_dir)).encoder_cut is True
    other = torch.nn.Module()
    with pytest.raises(ConfigError, match="encoder_cut=false"):
        encode_audio(other, torch.zeros(1, 128, 8), torch.ones(1, 8, dtype=torch.long))


def test_the_mel_input_is_trimmed_on_the_cpu_before_transfer_with_the_same_rows(pair, tmp_path: Path) -> None:
    """ClipBatches trims what the capture never reads before Lightning moves the batch; same rows."""
    from calm.data.prompts import Prompt
    from calm.data.table import ClipTable
    from calm.extraction.trainer_pass import ClipBatches

    cut, full = pair
    waves = _noise([0.6, 2.2, 1.3])
    batch = cut.collate(waves, PROMPTS[:3])
    served = {"ids": ["a", "b", "c"], "errors": {}, "inputs": batch}
    empty = ClipTable("none", (), ("x",))
    moved = ClipBatches(empty, [], Prompt(), cut, "error", 0).on_before_batch_transfer(served, 0)["inputs"]
    width = cut_width(batch["feature_attention_mask"].sum(-1), 3000)
    assert moved["input_features"].shape == (3, 128, width) and width < 3000
    assert moved["feature_attention_mask"].shape == (3, width)
    assert batch["input_features"].shape[-1] == 3000, "the collated batch itself is left as it was"
    assert torch.equal(cut.capture(moved), cut.capture(batch))
    untouched = ClipBatches(empty, [], Prompt(), full, "error", 0).on_before_batch_transfer(served, 0)["inputs"]
    assert untouched["input_features"].shape[-1] == 3000  # encoder_cut=false copies the full window


def test_lightning_extraction_copies_only_the_trimmed_mel_input(
    tiny_dir: Path, tmp_path: Path, fsdd_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the real Trainer.predict, the batch reaching the model is already cut (the hook runs)."""
    import shutil

    from calm.cache import ActivationCache
    from calm.data.fsdd import load_fsdd
    from calm.data.prompts import Prompt
    from calm.extraction.extract import extract_missing
    from calm.extraction.row_inputs import model_key_fields

    (tmp_path / "fsdd" / "recordings").mkdir(parents=True)
    for name in ("0_george_0", "1_jackson_5", "2_lucas_9"):
        shutil.copy(fsdd_root / "recordings" / f"{name}.wav", tmp_path / "fsdd" / "recordings")
    table = load_fsdd(tmp_path / "fsdd")
    backbone = family_backbone(Qwen2AudioBackbone, path=str(tiny_dir))
    widths = []
    capture = Qwen2AudioBackbone.capture
    monkeypatch.setattr(
        Qwen2AudioBackbone,
        "capture",
        lambda self, batch: widths.append(batch["input_features"].shape[-1]) or capture(self, batch),
    )
    cache = ActivationCache.open(
        tmp_path / "cache",
        model_key_fields(backbone, Prompt()),
        backbone.n_heads,
        backbone.head_dim,
        label=backbone.name,
    )
    report = extract_missing(
        backbone,
        table,
        Prompt(),
        cache,
        {"accelerator": "cpu", "devices": 1, "precision": "32-true", "enable_progress_bar": False},
        batch_size=2,
    )
    assert report.extracted == 3 and widths and max(widths) < 3000  # FSDD clips are about 0.5 s
