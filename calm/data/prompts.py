"""The text each clip is paired with (DESIGN.md section 5).

Two prompts, reportable side by side: `clean` (the default) asks one fixed question; `paper`
reproduces the reference code's multiple-choice question, whose options always contain the answer.
`build_prompt` builds the class a `prompt` config's `_target_` names (configs/prompt/*.yaml), as
every configurable object is built (`calm.config_objects`). A prompt's `key_fields` name
everything that changes its text, because they key the activation cache.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from calm.config_objects import build
from calm.data.table import Clip, ClipTable
from calm.digests import seeded_int
from calm.errors import ConfigError

__all__ = ["ClipPrompt", "PaperPrompt", "Prompt", "build_prompt", "option_seed"]

_OPTION_TAG = "calm.prompt.paper.v1"
_LETTERS = string.ascii_uppercase


class ClipPrompt(Protocol):
    """What extraction needs from a prompt: the text for a clip, and what keys the cache."""

    name: str

    def text_for(self, clip: Clip, table: ClipTable, label: int | None = None) -> str: ...

    def key_fields(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Prompt:
    """`clean`: one fixed question for every clip, no options (the default), so no label leaks in."""

    name: str = "clean"
    question: str = "What sound is this?"
    instruction: str = "Answer with the class name."

    def text_for(self, clip: Clip, table: ClipTable, label: int | None = None) -> str:
        """The same text for every clip; `label` is accepted for a uniform call and ignored."""
        return f"{self.question} {self.instruction}".strip()

    def key_fields(self) -> dict[str, Any]:
        """What about the prompt changes the features (goes into the cache key)."""
        return {"name": self.name, "question": self.question, "instruction": self.instruction}


def option_seed(seed: int, clip_id: str) -> int:
    """Seed of one clip's options from (prompt seed, clip id): SHA-256, not the per-process `hash()`."""
    return seeded_int(_OPTION_TAG, int(seed), str(clip_id))


@dataclass(frozen=True)
class PaperPrompt:
    """`paper`: the reference code's multiple-choice question, e.g.

        What sound is this?
        A. dog B. rain C. siren D. clock_tick Answer with the class name.

    The options are the true label plus `options - 1` other classes drawn at random, in shuffled
    order; every class when the dataset has no more than `options`. The draw is seeded by
    `option_seed(seed, clip.id)`, so a clip always gets the same text on every machine.

    The features therefore see text that contains the answer: this is how the published numbers
    were obtained, and why `clean` is the default.

    Multi-label clips: the true label is `label` when given (the reference asks one question per
    positive label), else the clip's first label; the clip's other positive labels are never drawn
    as distractors, so each question has exactly one right option.

    Spoofing: when the dataset's classes are exactly `spoof_classes` (case-insensitive), the
    question is `spoof_question` and both classes are offered in the fixed order of
    `spoof_classes`; the text is then the same for every clip and carries no label information.
    """

    name: str = "paper"
    question: str = "What sound is this?"
    instruction: str = "Answer with the class name."
    options: int = 4
    seed: int = 0
    spoof_question: str = "Is this audio bonafide or spoofed?"
    spoof_classes: tuple[str, ...] = ("bonafide", "spoof")

    def __post_init__(self) -> None:
        object.__setattr__(self, "spoof_classes", tuple(str(c) for c in self.spoof_classes))
        if isinstance(self.options, bool) or not isinstance(self.options, int) or not 2 <= self.options <= len(_LETTERS):
            raise ConfigError(f"prompt.options must be an integer in 2..{len(_LETTERS)}, got {self.options!r}",
                              "set prompt.options to 4 (the paper's setting)")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"prompt.seed must be an integer, got {self.seed!r}", "set prompt.seed to e.g. 0")
        if len(self.spoof_classes) != 2:
            raise ConfigError(f"prompt.spoof_classes must name two classes, got {list(self.spoof_classes)}",
                              "set prompt.spoof_classes to [bonafide, spoof]")

    def text_for(self, clip: Clip, table: ClipTable, label: int | None = None) -> str:
        """The question, the lettered options on one line, then the instruction."""
        names = self.option_names(clip, table, label)
        question = self.spoof_question if self._is_spoof(table) else self.question
        listed = " ".join(f"{letter}. {name}" for letter, name in zip(_LETTERS, names, strict=False))
        return f"{question}\n{listed} {self.instruction}".strip()

    def option_names(self, clip: Clip, table: ClipTable, label: int | None = None) -> list[str]:
        """The class names offered to this clip, in the order they are lettered."""
        return [table.class_names[c] for c in self.option_ids(clip, table, label)]

    def option_ids(self, clip: Clip, table: ClipTable, label: int | None = None) -> list[int]:
        """The class ids offered to this clip, in the order they are lettered."""
        positives = clip.all_labels
        true = positives[0] if label is None else int(label)
        if true not in positives:
            raise ValueError(f"label {true} is not one of clip {clip.id!r}'s labels {list(positives)}")
        if self._is_spoof(table):
            lowered = [n.lower() for n in table.class_names]
            return [lowered.index(c.lower()) for c in self.spoof_classes]
        rng = np.random.default_rng(option_seed(self.seed, clip.id))
        others = [c for c in range(len(table.class_names)) if c not in positives]
        picked = rng.choice(others, size=min(self.options - 1, len(others)), replace=False).tolist()
        chosen = [true, *picked]
        return [chosen[i] for i in rng.permutation(len(chosen))]

    def _is_spoof(self, table: ClipTable) -> bool:
        return sorted(n.lower() for n in table.class_names) == sorted(c.lower() for c in self.spoof_classes)

    def key_fields(self) -> dict[str, Any]:
        """Everything that changes the text: the template version, wording, option count and seed."""
        return {"name": self.name, "template": _OPTION_TAG, "question": self.question,
                "instruction": self.instruction, "options": self.options, "seed": self.seed,
                "spoof_question": self.spoof_question, "spoof_classes": list(self.spoof_classes)}


def build_prompt(cfg: Mapping[str, Any]) -> ClipPrompt:
    """The prompt a `prompt` config builds: its `name` is a configs/prompt file's, its fields checked."""
    return build(cfg, "prompt", named=True)
