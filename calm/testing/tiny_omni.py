"""A tiny random Qwen2.5-Omni thinker from the real classes, for tests and offline dry runs.

Real config classes (Qwen2_5OmniThinkerConfig with tiny audio, vision and text sub-configs), the real
thinker model class, Qwen2's real tokenizer class over a byte-level vocabulary with the real Omni
special tokens and chat template, and the real processor classes (Whisper features, Qwen2-VL image
and video processors, Qwen2_5OmniProcessor). Its numbers mean nothing.
"""

from __future__ import annotations

from pathlib import Path

from transformers import (
    Qwen2_5OmniAudioEncoderConfig,
    Qwen2_5OmniProcessor,
    Qwen2_5OmniTextConfig,
    Qwen2_5OmniThinkerConfig,
    Qwen2_5OmniThinkerForConditionalGeneration,
    Qwen2_5OmniVisionEncoderConfig,
    Qwen2Tokenizer,
    Qwen2VLImageProcessor,
)

from calm.testing.tiny import (
    QWEN2_AUDIO_SPECIAL_TOKENS,
    QWEN_TURNS_HEAD,
    QWEN_TURNS_TAIL,
    TINY_AUDIO,
    TINY_INIT_RANGE,
    TINY_TEXT,
    byte_vocab,
    ensure_built,
    save_tiny,
    tiny_text_sizes,
    whisper_features,
)

# The chat template shipped with Qwen/Qwen2.5-Omni-7B (audio, image and video items, then text).
QWEN2_5_OMNI_CHAT_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}{% set image_count = namespace(value=0) %}"
    "{% set video_count = namespace(value=0) %}"
    + QWEN_TURNS_HEAD
    + "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_bos|><|IMAGE|><|vision_eos|>"
    "{% elif content['type'] == 'audio' or 'audio' in content or 'audio_url' in content %}"
    "{% set audio_count.value = audio_count.value + 1 %}"
    "{% if add_audio_id %}Audio {{ audio_count.value }}: {% endif %}<|audio_bos|><|AUDIO|><|audio_eos|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_bos|><|VIDEO|><|vision_eos|>"
    + QWEN_TURNS_TAIL
)
# Qwen2.5-Omni's added tokens in id order (151643...151656 in the real vocabulary), Qwen2-Audio's first.
OMNI_SPECIAL_TOKENS = (
    *QWEN2_AUDIO_SPECIAL_TOKENS,
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_bos|>",
    "<|vision_eos|>",
    "<|vision_pad|>",
    "<|IMAGE|>",
    "<|VIDEO|>",
)
# The named special tokens the Omni processor reads from its tokenizer (`tokenizer.audio_token`, ...).
OMNI_NAMED_TOKENS = {
    "image_token": "<|IMAGE|>",
    "audio_token": "<|AUDIO|>",
    "video_token": "<|VIDEO|>",
    "vision_bos_token": "<|vision_bos|>",
    "vision_eos_token": "<|vision_eos|>",
    "audio_bos_token": "<|audio_bos|>",
    "audio_eos_token": "<|audio_eos|>",
}
# The shared tiny sizes; the text config without head_dim (its default, hidden/heads, is the same 16), as saved.
OMNI_TEXT = {key: size for key, size in TINY_TEXT.items() if key != "head_dim"}
TINY_MROPE_SECTION = [2, 3, 3]  # temporal, height, width halves of head_dim 16 (real: [16, 24, 24] of 128)
OMNI_AUDIO = {**TINY_AUDIO, "n_window": 100, "output_dim": 64}
TINY_VISION = {
    "depth": 2,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_heads": 2,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "window_size": 56,
    "out_hidden_size": 64,
    "fullatt_block_indexes": [1],
}
# Small frames keep the tiny vision tower fast: between 2x2 and 4x4 merged patches per temporal patch.
TINY_VIDEO_PIXELS = {"shortest_edge": 56 * 56, "longest_edge": 112 * 112}


def tiny_omni_tokenizer() -> Qwen2Tokenizer:
    """Qwen2's real tokenizer class over a byte-level vocabulary, with Qwen2.5-Omni's special tokens."""
    vocab = byte_vocab(OMNI_SPECIAL_TOKENS)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=[],
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=dict(OMNI_NAMED_TOKENS),
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(OMNI_SPECIAL_TOKENS[1:])})
    tokenizer.padding_side = "left"
    tokenizer.chat_template = QWEN2_5_OMNI_CHAT_TEMPLATE
    return tokenizer


def tiny_omni_processor() -> Qwen2_5OmniProcessor:
    """The real processor classes: Whisper features (128 mel, 16 kHz, 30 s), Qwen2-VL image and video processors."""
    from transformers import Qwen2VLVideoProcessor  # needs torchvision

    features = whisper_features()
    vision = {"patch_size": 14, "temporal_patch_size": 2, "merge_size": 2, "size": dict(TINY_VIDEO_PIXELS)}
    return Qwen2_5OmniProcessor(
        image_processor=Qwen2VLImageProcessor(**vision),
        video_processor=Qwen2VLVideoProcessor(**vision),
        feature_extractor=features,
        tokenizer=tiny_omni_tokenizer(),
        chat_template=QWEN2_5_OMNI_CHAT_TEMPLATE,
    )


def tiny_omni_config(tokenizer: Qwen2Tokenizer, seed: int) -> Qwen2_5OmniThinkerConfig:
    """Real config classes at tiny sizes; GQA (4 query, 2 KV heads) and multimodal RoPE as in the real model."""
    text = Qwen2_5OmniTextConfig(
        **tiny_text_sizes(
            tokenizer,
            OMNI_TEXT,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": TINY_MROPE_SECTION},
        )
    )
    ids = tokenizer.convert_tokens_to_ids
    config = Qwen2_5OmniThinkerConfig(
        audio_config=Qwen2_5OmniAudioEncoderConfig(initializer_range=TINY_INIT_RANGE, **OMNI_AUDIO),
        vision_config=Qwen2_5OmniVisionEncoderConfig(initializer_range=TINY_INIT_RANGE, **TINY_VISION),
        text_config=text,
        audio_token_index=ids("<|AUDIO|>"),
        image_token_index=ids("<|IMAGE|>"),
        video_token_index=ids("<|VIDEO|>"),
        audio_start_token_id=ids("<|audio_bos|>"),
        audio_end_token_id=ids("<|audio_eos|>"),
        initializer_range=TINY_INIT_RANGE,
    )
    config.vision_start_token_id = ids("<|vision_bos|>")
    config.calm_tiny_seed = seed
    return config


def build_tiny_qwen2_5_omni(dest: Path, seed: int = 0) -> Path:
    """Write a tiny random Qwen2.5-Omni thinker (model + processor) to `dest`; same seed, same files."""
    processor = tiny_omni_processor()
    config = tiny_omni_config(processor.tokenizer, seed)
    return save_tiny(Qwen2_5OmniThinkerForConditionalGeneration, config, processor, dest, seed)


def ensure_tiny_qwen2_5_omni(dest: Path, seed: int = 0) -> Path:
    """The tiny Qwen2.5-Omni thinker at `dest`, built on first use."""
    return ensure_built(dest, seed, build_tiny_qwen2_5_omni)
