"""Qwen3-ASR: a chunked audio encoder (no 30 s padding: clips are padded to the batch's longest) and a
Qwen3 language model. Only its description and tiny random copy live here; the rest is the shared adapter."""

from __future__ import annotations

from pathlib import Path

from transformers import (
    Qwen3ASRConfig,
    Qwen3ASREncoderConfig,
    Qwen3ASRForConditionalGeneration,
    Qwen3ASRProcessor,
)
from transformers.models.qwen3_asr.feature_extraction_qwen3_asr import Qwen3ASRFeatureExtractor

from calm.backbones.audio_lm import AudioLMBackbone, Family
from calm.backbones.tiny import (
    TINY_INIT_RANGE,
    TINY_TEXT,
    chatml_template,
    save_tiny,
    special_tokens_tokenizer,
    tiny_text_sizes,
)

AUDIO_MARKUP = "<|audio_start|><|audio_pad|><|audio_end|>"
QWEN3_AUDIO_TOKENS = {"audio_token": "<|audio_pad|>", "audio_bos_token": "<|audio_start|>",
                      "audio_eos_token": "<|audio_end|>"}
TINY_CHUNKED_ENCODER = {"d_model": 64, "encoder_layers": 2, "encoder_attention_heads": 4, "encoder_ffn_dim": 128,
                        "output_dim": 64, "downsample_hidden_size": 32, "initializer_range": TINY_INIT_RANGE}


def build_tiny_qwen3_asr(dest: Path, seed: int = 0) -> Path:
    """A tiny random Qwen3-ASR: real config, model, feature-extractor and processor classes."""
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|audio_start|>", "<|audio_end|>", "<|audio_pad|>"]
    tokenizer = special_tokens_tokenizer(specials, "<|im_end|>", "<|endoftext|>", chatml_template(AUDIO_MARKUP),
                                         named=QWEN3_AUDIO_TOKENS)
    processor = Qwen3ASRProcessor(feature_extractor=Qwen3ASRFeatureExtractor(), tokenizer=tokenizer,
                                  chat_template=tokenizer.chat_template)
    config = Qwen3ASRConfig(audio_config=Qwen3ASREncoderConfig(**TINY_CHUNKED_ENCODER),
                            text_config={"model_type": "qwen3", **tiny_text_sizes(tokenizer)},
                            audio_token_id=tokenizer.convert_tokens_to_ids("<|audio_pad|>"),
                            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    config.calm_tiny_seed = seed
    return save_tiny(Qwen3ASRForConditionalGeneration, config, processor, dest, seed)


QWEN3_ASR = Family(
    name="qwen3_asr", model_class="Qwen3ASRForConditionalGeneration", hub_id="Qwen/Qwen3-ASR-1.7B-hf",
    license="Apache-2.0", audio="whole clip, padded to the batch's longest (chunked encoder)", window=None,
    audio_padding="zeros_to_longest_in_batch", per_clip_features=True, tiny_text=TINY_TEXT, build_tiny=build_tiny_qwen3_asr,
)


class Qwen3ASRBackbone(AudioLMBackbone):
    """Qwen3-ASR (or its tiny random copy, `tiny=True`)."""

    spec = QWEN3_ASR
