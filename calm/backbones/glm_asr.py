"""GLM-ASR (Z.ai): a Whisper-style encoder on 30 s windows and a Llama language model. Only its
description lives here; the rest is the shared adapter."""

from __future__ import annotations

from calm.backbones.audio_lm import AudioLMBackbone, Family

GLM_ASR = Family(
    name="glm_asr",
    model_class="GlmAsrForConditionalGeneration",
    hub_id="zai-org/GLM-ASR-Nano-2512",
    license="MIT",
)


class GlmAsrBackbone(AudioLMBackbone):
    """GLM-ASR."""

    spec = GLM_ASR
