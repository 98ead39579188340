"""How the backbone decodes for the generation baselines: greedy, or seeded sampling with a fixed
temperature or one drawn per call from a range (the authors' Qwen2.5-Omni helper draws
temperature ~ U(0.5, 1.5) on every generate call).

One seeding rule for every sampled answer, here: clip `c` under seed `s` samples from
`clip_seed(s, c.id)`, so a rerun gives the same answers whatever the batch or the other clips.
With a temperature range each answer is one call, and call `k` of a clip draws its temperature and
samples from seeds derived from the clip's seed and `k`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np

from calm.backbones.base import Backbone, check_sampling
from calm.errors import ConfigError
from calm.storage.digests import seeded_int

# Tag of every sampling seed (the value pseudo-labelling has always used: changing it changes every answer).
SAMPLING_TAG = "calm.pseudo_label.v1"
DECODINGS = ("greedy", "sample")


def clip_seed(seed: int, clip_id: str) -> int:
    """The seed a clip's sampled answers are drawn from (SHA-256 of the tag, the run's seed and the clip id)."""
    return seeded_int(SAMPLING_TAG, "clip", int(seed), clip_id)


def call_seed(seed: int, clip_id: str, call: int) -> int:
    """The seed of the `call`-th single-answer call for a clip (temperature-range sampling)."""
    return seeded_int(SAMPLING_TAG, "call", int(seed), clip_id, int(call))


def call_temperature(low: float, high: float, seed: int, clip_id: str, call: int) -> float:
    """The temperature of the `call`-th call for a clip: uniform on [low, high], seeded like the call."""
    rng = np.random.default_rng(seeded_int(SAMPLING_TAG, "temperature", int(seed), clip_id, int(call)))
    return float(rng.uniform(low, high))


@dataclass(frozen=True)
class Sampling:
    """Sampled decoding: nucleus `top_p`, and either a fixed `temperature` or, when `temperature_range`
    is set, a temperature drawn per call from it (the fixed one is then unused)."""

    temperature: float = 1.0
    top_p: float = 1.0
    temperature_range: tuple[float, float] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.temperature_range is not None:
            object.__setattr__(self, "temperature_range", tuple(self.temperature_range))

    def check(self, samples: int, where: str) -> None:
        """Every setting valid, or a ConfigError naming `where` (the config block) and the fix."""
        try:
            check_sampling(samples, self.temperature, self.top_p)
        except ConfigError as err:
            raise ConfigError(f"{where}: {err.problem}", err.fix) from None
        if self.temperature_range is not None:
            bounds = self.temperature_range
            if (
                len(bounds) != 2
                or not all(isinstance(b, Real) and not isinstance(b, bool) for b in bounds)
                or not 0 < bounds[0] <= bounds[1]
            ):
                raise ConfigError(
                    f"{where}.temperature_range must be [low, high] with 0 < low <= high, got {list(bounds)}",
                    f"set {where}.temperature_range to e.g. [0.5, 1.5], or null",
                )
        if isinstance(self.seed, bool) or not isinstance(self.seed, Integral):
            raise ConfigError(f"{where}.seed must be an integer, got {self.seed!r}", f"set {where}.seed to e.g. 0")

    def key_fields(self) -> dict[str, Any]:
        """Everything that changes a sampled answer (for the answer stores' keys)."""
        return {
            "temperature": None if self.temperature_range else float(self.temperature),
            "top_p": float(self.top_p),
            "seed": int(self.seed),
            "temperature_range": list(self.temperature_range) if self.temperature_range else None,
        }

    def sample(
        self,
        backbone: Backbone,
        waves: Sequence[np.ndarray],
        prompts: Sequence[str],
        clip_ids: Sequence[str],
        samples: int,
        max_new_tokens: int,
    ) -> list[list[str]]:
        """`samples` answers per clip, each clip from its own seeds (independent of the batch)."""
        if self.temperature_range is None:
            seeds = [clip_seed(self.seed, cid) for cid in clip_ids]
            return backbone.sample_answers(
                list(waves), list(prompts), seeds, samples, self.temperature, self.top_p, max_new_tokens
            )
        low, high = self.temperature_range
        answers = []
        for wave, prompt, cid in zip(waves, prompts, clip_ids, strict=True):
            answers.append(
                [
                    backbone.sample_answers(
                        [wave],
                        [prompt],
                        [call_seed(self.seed, cid, k)],
                        1,
                        call_temperature(low, high, self.seed, cid, k),
                        self.top_p,
                        max_new_tokens,
                    )[0][0]
                    for k in range(samples)
                ]
            )
        return answers
