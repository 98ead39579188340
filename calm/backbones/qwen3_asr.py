"""Qwen3-ASR: a chunked audio encoder (no 30 s padding: clips are padded to the batch's longest) and a
Qwen3 language model. Only its description lives here; the rest is the shared adapter."""

from __future__ import annotations

from calm.backbones.audio_lm import WHOLE_CLIP, AudioLMBackbone, Family

QWEN3_ASR = Family(
    name="qwen3_asr",
    model_class="Qwen3ASRForConditionalGeneration",
    hub_id="Qwen/Qwen3-ASR-1.7B-hf",
    license="Apache-2.0",
    audio=WHOLE_CLIP,
)


class Qwen3ASRBackbone(AudioLMBackbone):
    """Qwen3-ASR."""

    spec = QWEN3_ASR
