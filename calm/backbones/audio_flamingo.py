"""Audio Flamingo 3 and Music Flamingo (NVIDIA): a Whisper-style encoder on 30 s windows and a Qwen2.5-7B
language model. Only their descriptions live here; the rest is the shared adapter."""

from __future__ import annotations

from calm.backbones.audio_lm import AudioLMBackbone, Family

AUDIO_FLAMINGO3 = Family(
    name="audio_flamingo3",
    model_class="AudioFlamingo3ForConditionalGeneration",
    hub_id="nvidia/audio-flamingo-3-hf",
    license="NVIDIA OneWay Noncommercial License",
)
MUSIC_FLAMINGO = Family(
    name="music_flamingo",
    model_class="MusicFlamingoForConditionalGeneration",
    hub_id="nvidia/music-flamingo-2601-hf",
    license="NVIDIA OneWay Noncommercial License",
)


class AudioFlamingo3Backbone(AudioLMBackbone):
    """Audio Flamingo 3."""

    spec = AUDIO_FLAMINGO3


class MusicFlamingoBackbone(AudioLMBackbone):
    """Music Flamingo."""

    spec = MUSIC_FLAMINGO
