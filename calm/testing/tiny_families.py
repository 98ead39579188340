"""Tiny random copies of the shared-adapter families (calm.backbones.audio_lm), for tests, smoke tables and
offline dry runs: each family's real config, model, tokenizer and processor classes at tiny sizes, with
its real special tokens and turn format. Their numbers mean nothing.
"""

from __future__ import annotations

import base64
import json
import tempfile
from pathlib import Path
from typing import Any

from transformers import (
    AudioFlamingo3Config,
    AudioFlamingo3EncoderConfig,
    AudioFlamingo3ForConditionalGeneration,
    AudioFlamingo3Processor,
    GlmAsrConfig,
    GlmAsrEncoderConfig,
    GlmAsrForConditionalGeneration,
    GlmAsrProcessor,
    MusicFlamingoConfig,
    MusicFlamingoForConditionalGeneration,
    MusicFlamingoProcessor,
    Phi4MultimodalAudioConfig,
    Phi4MultimodalConfig,
    Phi4MultimodalFeatureExtractor,
    Phi4MultimodalForCausalLM,
    Phi4MultimodalImageProcessor,
    Phi4MultimodalProcessor,
    Phi4MultimodalVisionConfig,
    Qwen2Config,
    Qwen2VLImageProcessor,
    Qwen3ASRConfig,
    Qwen3ASREncoderConfig,
    Qwen3ASRForConditionalGeneration,
    Qwen3ASRProcessor,
    Qwen3OmniMoeProcessor,
    Qwen3OmniMoeThinkerForConditionalGeneration,
    VoxtralConfig,
    VoxtralEncoderConfig,
    VoxtralForConditionalGeneration,
    VoxtralProcessor,
)
from transformers.models.qwen3_asr.feature_extraction_qwen3_asr import Qwen3ASRFeatureExtractor
from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import (
    Qwen3OmniMoeAudioEncoderConfig,
    Qwen3OmniMoeTextConfig,
    Qwen3OmniMoeThinkerConfig,
    Qwen3OmniMoeVisionEncoderConfig,
)

from calm.backbones.audio_lm import require_extras
from calm.backbones.voxtral import VOXTRAL
from calm.testing.tiny import (
    TINY_INIT_RANGE,
    TINY_WHISPER_ENCODER,
    chatml_template,
    save_tiny,
    special_tokens_tokenizer,
    tiny_text_sizes,
    whisper_features,
)

CHATML_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _build_tiny_flamingo(
    processor_class: Any, config_class: Any, model_class: Any, sound_tokens: list[str], dest: Path, seed: int
) -> Path:
    """A tiny random Audio/Music Flamingo: real config, model and processor classes; ChatML with `<sound>`
    before the text, plus the sound tokens the family's processor reads."""
    tokenizer = special_tokens_tokenizer(
        [*CHATML_SPECIALS, *sound_tokens], "<|im_end|>", "<|endoftext|>", chatml_template("<sound>")
    )
    processor = processor_class(
        feature_extractor=whisper_features(), tokenizer=tokenizer, chat_template=tokenizer.chat_template
    )
    config = config_class(
        audio_config=AudioFlamingo3EncoderConfig(**TINY_WHISPER_ENCODER),
        text_config=Qwen2Config(**tiny_text_sizes(tokenizer)),
        audio_token_id=tokenizer.convert_tokens_to_ids("<sound>"),
    )
    config.calm_tiny_seed = seed
    return save_tiny(model_class, config, processor, dest, seed)


def build_tiny_audio_flamingo3(dest: Path, seed: int = 0) -> Path:
    """A tiny random AF3."""
    return _build_tiny_flamingo(
        AudioFlamingo3Processor, AudioFlamingo3Config, AudioFlamingo3ForConditionalGeneration, ["<sound>"], dest, seed
    )


def build_tiny_music_flamingo(dest: Path, seed: int = 0) -> Path:
    """A tiny random Music Flamingo: as AF3, with the sound begin/end tokens its processor wraps audio in."""
    return _build_tiny_flamingo(
        MusicFlamingoProcessor,
        MusicFlamingoConfig,
        MusicFlamingoForConditionalGeneration,
        ["<sound>", "<|sound_bos|>", "<|sound_eos|>"],
        dest,
        seed,
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
    processor = GlmAsrProcessor(
        feature_extractor=whisper_features(), tokenizer=tokenizer, chat_template=GLM_ASR_TEMPLATE
    )
    text = {key: value for key, value in tiny_text_sizes(tokenizer).items() if key != "head_dim"}
    config = GlmAsrConfig(
        audio_config=GlmAsrEncoderConfig(**TINY_WHISPER_ENCODER),
        text_config=text,
        audio_token_id=tokenizer.convert_tokens_to_ids("<|pad|>"),
    )
    config.calm_tiny_seed = seed
    return save_tiny(GlmAsrForConditionalGeneration, config, processor, dest, seed)


AUDIO_MARKUP = "<|audio_start|><|audio_pad|><|audio_end|>"
QWEN3_AUDIO_TOKENS = {
    "audio_token": "<|audio_pad|>",
    "audio_bos_token": "<|audio_start|>",
    "audio_eos_token": "<|audio_end|>",
}
TINY_CHUNKED_ENCODER = {
    "d_model": 64,
    "encoder_layers": 2,
    "encoder_attention_heads": 4,
    "encoder_ffn_dim": 128,
    "output_dim": 64,
    "downsample_hidden_size": 32,
    "initializer_range": TINY_INIT_RANGE,
}


def build_tiny_qwen3_asr(dest: Path, seed: int = 0) -> Path:
    """A tiny random Qwen3-ASR: real config, model, feature-extractor and processor classes."""
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|audio_start|>", "<|audio_end|>", "<|audio_pad|>"]
    tokenizer = special_tokens_tokenizer(
        specials, "<|im_end|>", "<|endoftext|>", chatml_template(AUDIO_MARKUP), named=QWEN3_AUDIO_TOKENS
    )
    processor = Qwen3ASRProcessor(
        feature_extractor=Qwen3ASRFeatureExtractor(), tokenizer=tokenizer, chat_template=tokenizer.chat_template
    )
    config = Qwen3ASRConfig(
        audio_config=Qwen3ASREncoderConfig(**TINY_CHUNKED_ENCODER),
        text_config={"model_type": "qwen3", **tiny_text_sizes(tokenizer)},
        audio_token_id=tokenizer.convert_tokens_to_ids("<|audio_pad|>"),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    config.calm_tiny_seed = seed
    return save_tiny(Qwen3ASRForConditionalGeneration, config, processor, dest, seed)


VISION_TOKENS = {
    "image_token": "<|image_pad|>",
    "video_token": "<|video_pad|>",
    "vision_bos_token": "<|vision_start|>",
    "vision_eos_token": "<|vision_end|>",
}
QWEN3_OMNI_VISION = {
    "depth": 2,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_heads": 2,
    "out_hidden_size": 64,
    "deepstack_visual_indexes": [1],
    "num_position_embeddings": 64,
    "initializer_range": TINY_INIT_RANGE,
}
TINY_MOE = {"moe_intermediate_size": 32, "num_experts": 4, "num_experts_per_tok": 2}
# Interleaved multimodal RoPE over head_dim 16 (the real model: [24, 20, 20] of 128).
TINY_ROPE = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3], "interleaved": True}


def build_tiny_qwen3_omni(dest: Path, seed: int = 0) -> Path:
    """A tiny random Qwen3-Omni thinker: real config classes (MoE text model, chunked audio encoder, vision
    tower), the real thinker and processor classes (Whisper features, Qwen2-VL image/video processors)."""
    from transformers import Qwen2VLVideoProcessor  # needs torchvision

    specials = [
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<|audio_start|>",
        "<|audio_end|>",
        "<|audio_pad|>",
        "<|vision_start|>",
        "<|vision_end|>",
        "<|image_pad|>",
        "<|video_pad|>",
    ]
    tokenizer = special_tokens_tokenizer(
        specials,
        "<|im_end|>",
        "<|endoftext|>",
        chatml_template(AUDIO_MARKUP),
        named={**QWEN3_AUDIO_TOKENS, **VISION_TOKENS},
    )
    vision = {
        "patch_size": 16,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "size": {"shortest_edge": 64 * 64, "longest_edge": 128 * 128},
    }
    processor = Qwen3OmniMoeProcessor(
        image_processor=Qwen2VLImageProcessor(**vision),
        video_processor=Qwen2VLVideoProcessor(**vision),
        feature_extractor=whisper_features(),
        tokenizer=tokenizer,
        chat_template=tokenizer.chat_template,
    )
    ids = tokenizer.convert_tokens_to_ids
    config = Qwen3OmniMoeThinkerConfig(
        audio_config=Qwen3OmniMoeAudioEncoderConfig(**TINY_CHUNKED_ENCODER),
        vision_config=Qwen3OmniMoeVisionEncoderConfig(**QWEN3_OMNI_VISION),
        text_config=Qwen3OmniMoeTextConfig(**tiny_text_sizes(tokenizer, rope_parameters=TINY_ROPE, **TINY_MOE)),
        audio_token_id=ids("<|audio_pad|>"),
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        audio_start_token_id=ids("<|audio_start|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        user_token_id=ids("<|im_start|>"),
        initializer_range=TINY_INIT_RANGE,
    )
    config.calm_tiny_seed = seed
    return save_tiny(Qwen3OmniMoeThinkerForConditionalGeneration, config, processor, dest, seed)


# Phi's turn format: role tokens, the audio placeholder, the text, <|end|>; generation prompt <|assistant|>.
PHI4_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}{% if content['type'] == 'audio' %}<|audio|>{% endif %}{% endfor %}"
    "{% for content in message['content'] %}{% if content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|end|>{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
TINY_CONFORMER = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_blocks": 2,
    "num_attention_heads": 2,
    "ext_pw_out_channel": 32,
    "depthwise_separable_out_channel": 32,
    "nemo_conv_channels": 32,
}
PHI4_VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}


def build_tiny_phi4_multimodal(dest: Path, seed: int = 0) -> Path:
    """A tiny random Phi-4-multimodal: real config, model, feature-extractor, image and processor classes."""
    specials = ["<|endoftext|>", "<|user|>", "<|assistant|>", "<|end|>", "<|image|>", "<|audio|>"]
    tokenizer = special_tokens_tokenizer(
        specials,
        "<|end|>",
        "<|endoftext|>",
        PHI4_TEMPLATE,
        named={"image_token": "<|image|>", "audio_token": "<|audio|>"},
    )
    processor = Phi4MultimodalProcessor(
        image_processor=Phi4MultimodalImageProcessor(),
        audio_processor=Phi4MultimodalFeatureExtractor(),
        tokenizer=tokenizer,
        chat_template=PHI4_TEMPLATE,
    )
    ids = tokenizer.convert_tokens_to_ids
    text = {key: value for key, value in tiny_text_sizes(tokenizer).items() if key not in ("head_dim", "rms_norm_eps")}
    config = Phi4MultimodalConfig(
        **text,
        original_max_position_embeddings=text["max_position_embeddings"],
        bos_token_id=tokenizer.pad_token_id,
        vision_config=Phi4MultimodalVisionConfig(**PHI4_VISION, image_token_id=ids("<|image|>")),
        audio_config=Phi4MultimodalAudioConfig(**TINY_CONFORMER, audio_token_id=ids("<|audio|>")),
    )
    config.calm_tiny_seed = seed
    return save_tiny(Phi4MultimodalForCausalLM, config, processor, dest, seed)


# Tekken's special tokens in the order of Mistral's tokenizer files: VoxtralProcessor expects [AUDIO] at id 24.
TEKKEN_SPECIALS = (
    "<unk>",
    "<s>",
    "</s>",
    "[INST]",
    "[/INST]",
    "[AVAILABLE_TOOLS]",
    "[/AVAILABLE_TOOLS]",
    "[TOOL_RESULTS]",
    "[/TOOL_RESULTS]",
    "[TOOL_CALLS]",
    "[IMG]",
    "<pad>",
    "[IMG_BREAK]",
    "[IMG_END]",
    "[PREFIX]",
    "[MIDDLE]",
    "[SUFFIX]",
    "[SYSTEM_PROMPT]",
    "[/SYSTEM_PROMPT]",
    "[TOOL_CONTENT]",
    "[ARGS]",
    "[CALL_ID]",
    "<SPECIAL_22>",
    "<SPECIAL_23>",
    "[AUDIO]",
    "[BEGIN_AUDIO]",
    "[TRANSCRIBE]",
)
TINY_NUM_SPECIAL = 32
# tiktoken's pre-tokenizer split (the pattern of Mistral's Tekken files).
TEKKEN_PATTERN = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|"
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Voxtral's audio framing: 16 kHz, 128 mel bins every 10 ms, 12.5 audio tokens per second, 30 s windows.
VOXTRAL_AUDIO = {
    "sampling_rate": 16000,
    "frame_rate": 12.5,
    "chunk_length_s": 30.0,
    "audio_encoding_config": {"num_mel_bins": 128, "hop_length": 160, "window_size": 400},
}
# The projector stacks 4 encoder frames (intermediate_size = 4 x hidden) into one audio token.
TINY_VOXTRAL_ENCODER = {
    **TINY_WHISPER_ENCODER,
    "intermediate_size": 4 * TINY_WHISPER_ENCODER["hidden_size"],
    "num_mel_bins": 128,
    "max_source_positions": 1500,
}


def write_tiny_tekken(path: Path) -> Path:
    """A Tekken tokenizer file made in code: every byte one token (no merges), Voxtral's special tokens, its
    audio framing. The real file has a 131k-token vocabulary; the ids of the special tokens are the same."""
    specials = [*TEKKEN_SPECIALS, *(f"<SPECIAL_{i}>" for i in range(len(TEKKEN_SPECIALS), TINY_NUM_SPECIAL))]
    model = {
        "config": {
            "pattern": TEKKEN_PATTERN,
            "num_vocab_tokens": 256,
            "default_vocab_size": 256 + TINY_NUM_SPECIAL,
            "default_num_special_tokens": TINY_NUM_SPECIAL,
            "version": "v7",
        },
        "vocab": [
            {"rank": b, "token_bytes": base64.b64encode(bytes([b])).decode(), "token_str": None} for b in range(256)
        ],
        "special_tokens": [{"rank": i, "token_str": t, "is_control": True} for i, t in enumerate(specials)],
        "audio": VOXTRAL_AUDIO,
        "version": 1,
        "type": "Tekken",
    }
    path.write_text(json.dumps(model))
    return path


def build_tiny_voxtral(dest: Path, seed: int = 0) -> Path:
    """A tiny random Voxtral: real config, model and processor classes, a tiny Tekken tokenizer through
    transformers' MistralCommonBackend (mistral-common needed, as for the real checkpoint)."""
    require_extras(VOXTRAL)
    from transformers.tokenization_mistral_common import MistralCommonBackend

    with tempfile.TemporaryDirectory() as source:
        tokenizer = MistralCommonBackend(tokenizer_path=str(write_tiny_tekken(Path(source) / "tekken.json")))
        processor = VoxtralProcessor(feature_extractor=whisper_features(), tokenizer=tokenizer)
        text = {"model_type": "llama", **tiny_text_sizes(tokenizer), "bos_token_id": tokenizer.bos_token_id}
        config = VoxtralConfig(
            audio_config=VoxtralEncoderConfig(**TINY_VOXTRAL_ENCODER),
            text_config=text,
            audio_token_id=processor.audio_token_id,
        )
        config.calm_tiny_seed = seed
        return save_tiny(VoxtralForConditionalGeneration, config, processor, dest, seed)
