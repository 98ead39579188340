"""GLM-ASR (Z.ai): a Whisper-style encoder on 30 s windows and a Llama language model. Only its
description and tiny random copy live here; the rest is the shared adapter."""

from __future__ import annotations

from pathlib import Path

from transformers import (
    GlmAsrConfig,
    GlmAsrEncoderConfig,
    GlmAsrForConditionalGeneration,
    GlmAsrProcessor,
)

from calm.backbones.audio_lm import AudioLMBackbone, Family
from calm.backbones.tiny import (
    TINY_TEXT,
    TINY_WHISPER_ENCODER,
    save_tiny,
    special_tokens_tokenizer,
    tiny_text_sizes,
    whisper_features,
)

# GLM's turn format: role tokens, the audio between begin/end-of-audio markers, then the text.
GLM_ASR_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}{% if content['type'] == 'audio' %}"
    "<|begin_of_audio|><|pad|><|end_of_audio|>\n{% endif %}{% endfor %}"
    "{% for content in message['content'] %}{% if content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def build_tiny_glm_asr(dest: Path, seed: int = 0) -> Path:
    """A tiny random GLM-ASR: real config, model and processor classes (Llama text config at tiny sizes)."""
    specials = ["<|endoftext|>", "<|user|>", "<|assistant|>", "<|begin_of_audio|>", "<|pad|>", "<|end_of_audio|>"]
    tokenizer = special_tokens_tokenizer(specials, "<|user|>", "<|endoftext|>", GLM_ASR_TEMPLATE)
    processor = GlmAsrProcessor(feature_extractor=whisper_features(), tokenizer=tokenizer,
                                chat_template=GLM_ASR_TEMPLATE)
    text = {key: value for key, value in tiny_text_sizes(tokenizer).items() if key != "head_dim"}
    config = GlmAsrConfig(audio_config=GlmAsrEncoderConfig(**TINY_WHISPER_ENCODER), text_config=text,
                          audio_token_id=tokenizer.convert_tokens_to_ids("<|pad|>"))
    config.calm_tiny_seed = seed
    return save_tiny(GlmAsrForConditionalGeneration, config, processor, dest, seed)


GLM_ASR = Family(
    name="glm_asr", model_class="GlmAsrForConditionalGeneration", hub_id="zai-org/GLM-ASR-Nano-2512",
    license="MIT", audio="30 s Whisper windows, up to the processor's max_audio_len",
    tiny_text=TINY_TEXT, build_tiny=build_tiny_glm_asr,
)


class GlmAsrBackbone(AudioLMBackbone):
    """GLM-ASR (or its tiny random copy, `tiny=True`)."""

    spec = GLM_ASR
