"""Audio Flamingo 3 and Music Flamingo (NVIDIA): a Whisper-style encoder on 30 s windows and a Qwen2.5-7B
language model. Only their descriptions and tiny random copies live here; the rest is the shared adapter."""

from __future__ import annotations

from pathlib import Path

from transformers import (
    AudioFlamingo3Config,
    AudioFlamingo3EncoderConfig,
    AudioFlamingo3ForConditionalGeneration,
    AudioFlamingo3Processor,
    MusicFlamingoConfig,
    MusicFlamingoForConditionalGeneration,
    MusicFlamingoProcessor,
    Qwen2Config,
)

from calm.backbones.audio_lm import AudioLMBackbone, Family
from calm.backbones.tiny import (
    TINY_TEXT,
    TINY_WHISPER_ENCODER,
    chatml_template,
    save_tiny,
    special_tokens_tokenizer,
    tiny_text_sizes,
    whisper_features,
)

CHATML_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def build_tiny_audio_flamingo3(dest: Path, seed: int = 0) -> Path:
    """A tiny random AF3: real config, model and processor classes; ChatML with `<sound>` before the text."""
    tokenizer = special_tokens_tokenizer([*CHATML_SPECIALS, "<sound>"], "<|im_end|>", "<|endoftext|>",
                                         chatml_template("<sound>"))
    processor = AudioFlamingo3Processor(feature_extractor=whisper_features(), tokenizer=tokenizer,
                                        chat_template=tokenizer.chat_template)
    config = AudioFlamingo3Config(audio_config=AudioFlamingo3EncoderConfig(**TINY_WHISPER_ENCODER),
                                  text_config=Qwen2Config(**tiny_text_sizes(tokenizer)),
                                  audio_token_id=tokenizer.convert_tokens_to_ids("<sound>"))
    config.calm_tiny_seed = seed
    return save_tiny(AudioFlamingo3ForConditionalGeneration, config, processor, dest, seed)


def build_tiny_music_flamingo(dest: Path, seed: int = 0) -> Path:
    """A tiny random Music Flamingo: as AF3, with the sound begin/end tokens its processor wraps audio in."""
    tokenizer = special_tokens_tokenizer([*CHATML_SPECIALS, "<sound>", "<|sound_bos|>", "<|sound_eos|>"], "<|im_end|>",
                                         "<|endoftext|>", chatml_template("<sound>"))
    processor = MusicFlamingoProcessor(feature_extractor=whisper_features(), tokenizer=tokenizer,
                                       chat_template=tokenizer.chat_template)
    config = MusicFlamingoConfig(audio_config=AudioFlamingo3EncoderConfig(**TINY_WHISPER_ENCODER),
                                 text_config=Qwen2Config(**tiny_text_sizes(tokenizer)),
                                 audio_token_id=tokenizer.convert_tokens_to_ids("<sound>"))
    config.calm_tiny_seed = seed
    return save_tiny(MusicFlamingoForConditionalGeneration, config, processor, dest, seed)


AUDIO_FLAMINGO3 = Family(
    name="audio_flamingo3", model_class="AudioFlamingo3ForConditionalGeneration", hub_id="nvidia/audio-flamingo-3-hf",
    license="NVIDIA OneWay Noncommercial License", audio="30 s Whisper windows, up to the processor's max_audio_len",
    tiny_text=TINY_TEXT, build_tiny=build_tiny_audio_flamingo3,
)
MUSIC_FLAMINGO = Family(
    name="music_flamingo", model_class="MusicFlamingoForConditionalGeneration", hub_id="nvidia/music-flamingo-2601-hf",
    license="NVIDIA OneWay Noncommercial License", audio="30 s Whisper windows, up to the processor's max_audio_len",
    tiny_text=TINY_TEXT, build_tiny=build_tiny_music_flamingo,
)


class AudioFlamingo3Backbone(AudioLMBackbone):
    """Audio Flamingo 3 (or its tiny random copy, `tiny=True`)."""

    spec = AUDIO_FLAMINGO3


class MusicFlamingoBackbone(AudioLMBackbone):
    """Music Flamingo (or its tiny random copy, `tiny=True`)."""

    spec = MUSIC_FLAMINGO
