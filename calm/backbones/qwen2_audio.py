"""Qwen2-Audio-7B-Instruct (the paper's model) on the shared adapter (calm.backbones.audio_lm).

Its own: the mel input cut to the batch's real frames before the audio encoder (`encoder_cut`, exact),
and trailing silence for clips too short to generate from.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from calm.backbones.audio_lm import (
    HOOK_POINTS,
    LM_LAYER_PATTERN,
    ONE_WHISPER_WINDOW,
    PROMPT_PLACEHOLDER,
    AudioLMBackbone,
    Family,
)
from calm.backbones.encoder_cut import cut_mel, merged_embeddings

__all__ = ["HOOK_POINTS", "LM_LAYER_PATTERN", "PROMPT_PLACEHOLDER", "Qwen2AudioBackbone", "padded_for_generation"]

MIN_GENERATE_SECONDS = 0.1  # two audio tokens: transformers reads a one-token clip as unexpanded input


def padded_for_generation(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """`wave` with trailing silence up to MIN_GENERATE_SECONDS. A shorter clip gives one audio token, which
    transformers' Qwen2-Audio takes for a prompt its processor did not expand and fails on in `generate`;
    capture has no such path, so only generation pads (and only clips that would fail)."""
    short = int(round(MIN_GENERATE_SECONDS * sample_rate)) - len(wave)
    return np.pad(wave, (0, short)) if short > 0 else wave


QWEN2_AUDIO = Family(
    name="qwen2_audio",
    model_class="Qwen2AudioForConditionalGeneration",
    hub_id="Qwen/Qwen2-Audio-7B-Instruct",
    license="Apache-2.0",
    audio=ONE_WHISPER_WINDOW,
    call_kwargs={"padding": True},
)


class Qwen2AudioBackbone(AudioLMBackbone):
    """Qwen2-Audio (or a tiny random copy of it: `tiny_model`); `load()` reads the weights, nothing before it."""

    spec = QWEN2_AUDIO

    def __init__(self, *, encoder_cut: bool = True, **settings: Any) -> None:
        """`settings`: AudioLMBackbone's (name, hub_id, path, layers, precision, ...)."""
        super().__init__(**settings)
        # Run the audio encoder on the batch's real mel frames only (calm.backbones.encoder_cut). Exact, so
        # not part of the cache key: the captured numbers are those of the full 30 s input.
        self.encoder_cut = bool(encoder_cut)

    def trim_for_capture(self, batch: dict[str, Any]) -> dict[str, Any]:
        """With `encoder_cut`, the mel input cut to the batch's longest clip + 2 frames already here:
        for 5 s clips a sixth of the 30 s padding is copied to the GPU. The cut in `capture` then
        finds nothing more to cut (cutting is idempotent), so the rows are the same either way."""
        if not self.encoder_cut:
            return batch
        features, mask = cut_mel(batch["input_features"], batch["feature_attention_mask"])
        return {**batch, "input_features": features, "feature_attention_mask": mask}

    @torch.no_grad()
    def capture(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """With `encoder_cut`, the audio features are merged here from the cut mel input and the base model
        then runs the LM only; without it, the shared forward pass."""
        if not self.encoder_cut:
            return super().capture(batch)
        assert self.model is not None and self._capture is not None, "call load() first"
        base = self.base_model()
        self._capture.set_positions(last_index=batch["last_index"])
        with self._capture.capturing():
            embeds = merged_embeddings(
                base, batch["input_ids"], batch["input_features"], batch["feature_attention_mask"]
            )
            base(
                inputs_embeds=embeds,
                attention_mask=batch["attention_mask"],
                position_ids=batch["position_ids"],
                use_cache=False,
            )
        return self._capture.stacked()

    def generation_waves(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        return [padded_for_generation(wave, self.sample_rate) for wave in waves]
