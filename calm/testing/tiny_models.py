"""The tiny random models a backbone config names (`tiny_model: calm.testing.tiny_models.<NAME>`): the
backbone builds one under its `backbone.path` on first use (calm.backbones.base.tiny_weights), so the
product holds no test scaffolding and `backbone=tiny_<family>` runs anywhere calm is installed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from calm.testing.tiny import TINY_TEXT, build_tiny_qwen2_audio, ensure_built
from calm.testing.tiny_clap import build_tiny_clap
from calm.testing.tiny_families import (
    build_tiny_audio_flamingo3,
    build_tiny_glm_asr,
    build_tiny_music_flamingo,
    build_tiny_phi4_multimodal,
    build_tiny_qwen3_asr,
    build_tiny_qwen3_omni,
    build_tiny_voxtral,
)
from calm.testing.tiny_omni import build_tiny_qwen2_5_omni


@dataclass(frozen=True)
class TinyModel:
    """How one tiny random model is built, and its language model's sizes (what `python -m calm.backbones ls`
    lists for it; None where no LM heads are read)."""

    build: Callable[[Path, int], Path]
    text_sizes: dict[str, int] | None = None

    def ensure(self, dest: Path, seed: int) -> Path:
        """The model at `dest`, built there first unless it is (safe when several processes race)."""
        return ensure_built(dest, seed, self.build)


QWEN2_AUDIO = TinyModel(build_tiny_qwen2_audio, TINY_TEXT)
QWEN2_5_OMNI = TinyModel(build_tiny_qwen2_5_omni, TINY_TEXT)
QWEN3_ASR = TinyModel(build_tiny_qwen3_asr, TINY_TEXT)
QWEN3_OMNI = TinyModel(build_tiny_qwen3_omni, TINY_TEXT)
GLM_ASR = TinyModel(build_tiny_glm_asr, TINY_TEXT)
PHI4_MULTIMODAL = TinyModel(build_tiny_phi4_multimodal, TINY_TEXT)
VOXTRAL = TinyModel(build_tiny_voxtral, TINY_TEXT)
AUDIO_FLAMINGO3 = TinyModel(build_tiny_audio_flamingo3, TINY_TEXT)
MUSIC_FLAMINGO = TinyModel(build_tiny_music_flamingo, TINY_TEXT)
CLAP = TinyModel(build_tiny_clap)
