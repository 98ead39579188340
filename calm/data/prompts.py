"""The text each clip is paired with (docs/design/datasets.md#prompts).

Two prompts, reportable side by side: `clean` (the default) asks one fixed question; `paper`
reproduces the reference code's multiple-choice question, whose options always contain the answer.
`build_prompt` builds the class a `prompt` config's `_target_` names (configs/prompt/*.yaml), as
every configurable object is built (`calm.config.builder`). A prompt's `key_fields` name
everything that changes its text, because they key the activation cache.
"""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np

from calm.config.authors_modes import register_authors_resolver
from calm.config.builder import build
from calm.data.table import Clip, ClipTable
from calm.errors import ConfigError
from calm.storage.digests import seeded_int

__all__ = ["ClipPrompt", "PaperPrompt", "Prompt", "build_prompt", "option_seed"]

_OPTION_TAG = "calm.prompt.paper.v1"
_LETTERS = string.ascii_uppercase


class ClipPrompt(Protocol):
    """What extraction needs from a prompt: the text for a clip, and what keys the cache."""

    name: str
    per_label_questions: bool  # True: the job asks one question per positive label (calm.data.questions)

    def text_for(self, clip: Clip, table: ClipTable, label: int | None = None) -> str: ...

    def key_fields(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Prompt:
    """`clean`: one fixed question for every clip, no options (the default), so no label leaks in."""

    name: str = "clean"
    question: str = "What sound is this?"
    instruction: str = "Answer with the class name."
    per_label_questions: ClassVar[bool] = False  # one row per clip: the text names no label to ask about

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

    Wording: `layout` places the question, the options and the instruction; each option is
    `option_format` (with `{letter}` and `{name}`), joined by `option_separator`. The defaults give the
    text above; configs/prompt/paper_*.yaml hold the authors' other wordings (ESC-50's caption
    question, AudioSet's "Choose from:" line, ASVspoof's two option layouts).

    Multi-label clips: with `per_label_questions` the job asks one question per positive label
    (`calm.data.questions`; each question row's `label` is the class it asks about). Otherwise the
    true label is `label` when given, else the clip's first label. Either way the clip's other positive
    labels are never drawn as distractors, so each question has exactly one right option.

    Spoofing: when the dataset's classes are exactly `spoof_classes` (case-insensitive), the
    question is `spoof_question`, both classes are offered in the fixed order of `spoof_classes`, named
    `spoof_option_names` when given (the authors' text says "spoofed" for the class `spoof`), laid out
    by the `spoof_*` wording fields; the text is then the same for every clip and carries no label
    information.
    """

    name: str = "paper"
    question: str = "What sound is this?"
    instruction: str = "Answer with the class name."
    options: int = 4
    seed: int = 0
    spoof_question: str = "Is this audio bonafide or spoofed?"
    spoof_classes: tuple[str, ...] = ("bonafide", "spoof")
    per_label_questions: bool = False
    layout: str = "{question}\n{options} {instruction}"
    option_format: str = "{letter}. {name}"
    option_separator: str = " "
    spoof_layout: str = "{question}\n{options} {instruction}"
    spoof_option_format: str = "{letter}. {name}"
    spoof_option_separator: str = " "
    spoof_option_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("spoof_classes", "spoof_option_names"):
            object.__setattr__(self, name, tuple(str(c) for c in getattr(self, name)))
        if (
            isinstance(self.options, bool)
            or not isinstance(self.options, int)
            or not 2 <= self.options <= len(_LETTERS)
        ):
            raise ConfigError(
                f"prompt.options must be an integer in 2..{len(_LETTERS)}, got {self.options!r}",
                "set prompt.options to 4 (the paper's setting)",
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"prompt.seed must be an integer, got {self.seed!r}", "set prompt.seed to e.g. 0")
        if len(self.spoof_classes) != 2:
            raise ConfigError(
                f"prompt.spoof_classes must name two classes, got {list(self.spoof_classes)}",
                "set prompt.spoof_classes to [bonafide, spoof]",
            )
        if self.spoof_option_names and len(self.spoof_option_names) != 2:
            raise ConfigError(
                f"prompt.spoof_option_names must name two options, got {list(self.spoof_option_names)}",
                "set prompt.spoof_option_names to [] (the class names) or e.g. [bonafide, spoofed]",
            )
        if not isinstance(self.per_label_questions, bool):
            raise ConfigError(
                f"prompt.per_label_questions must be true or false, got {self.per_label_questions!r}",
                "set prompt.per_label_questions to true (one question per label) or false",
            )
        for layout, item in (("layout", "option_format"), ("spoof_layout", "spoof_option_format")):
            _check_template(layout, getattr(self, layout), {"question", "options", "instruction"}, {"options"})
            _check_template(item, getattr(self, item), {"letter", "name"}, {"name"})

    def text_for(self, clip: Clip, table: ClipTable, label: int | None = None) -> str:
        """The question, the options and the instruction, placed by `layout` (`spoof_layout` for spoofing)."""
        names = self.option_names(clip, table, label)
        if self._is_spoof(table):
            layout, item, separator = self.spoof_layout, self.spoof_option_format, self.spoof_option_separator
            question, names = self.spoof_question, list(self.spoof_option_names) or names
        else:
            layout, item, separator = self.layout, self.option_format, self.option_separator
            question = self.question
        listed = separator.join(
            item.format(letter=letter, name=name) for letter, name in zip(_LETTERS, names, strict=False)
        )
        return layout.format(question=question, options=listed, instruction=self.instruction).strip()

    def option_names(self, clip: Clip, table: ClipTable, label: int | None = None) -> list[str]:
        """The class names offered to this clip, in the order they are lettered."""
        return [table.class_names[c] for c in self.option_ids(clip, table, label)]

    def option_ids(self, clip: Clip, table: ClipTable, label: int | None = None) -> list[int]:
        """The class ids offered to this clip, in the order they are lettered; no distractor is another
        positive label of the clip (of the source clip, for a per-label question)."""
        positives = clip.all_labels
        true = positives[0] if label is None else int(label)
        if true not in positives:
            raise ValueError(f"label {true} is not one of clip {clip.id!r}'s labels {list(positives)}")
        if self._is_spoof(table):
            lowered = [n.lower() for n in table.class_names]
            return [lowered.index(c.lower()) for c in self.spoof_classes]
        excluded = set(clip.clip_labels) | set(positives)
        rng = np.random.default_rng(option_seed(self.seed, clip.id))
        others = [c for c in range(len(table.class_names)) if c not in excluded]
        picked = rng.choice(others, size=min(self.options - 1, len(others)), replace=False).tolist()
        chosen = [true, *picked]
        return [chosen[i] for i in rng.permutation(len(chosen))]

    def option_format_for(self, table: ClipTable | None) -> str:
        """The option wording that applies to `table`'s clips (`spoof_option_format` for a spoofing
        table); without a table, the first of the two that shows no letter, else `option_format`."""
        if table is not None:
            return self.spoof_option_format if self._is_spoof(table) else self.option_format
        unlettered = [f for f in (self.option_format, self.spoof_option_format) if "letter" not in _fields(f)]
        return unlettered[0] if unlettered else self.option_format

    def shows_letters(self, table: ClipTable | None = None) -> bool:
        """Whether the options shown for `table`'s clips carry letters (`{letter}` in the option wording
        that applies to it); without a table, whether every option wording does."""
        return "letter" in _fields(self.option_format_for(table))

    def _is_spoof(self, table: ClipTable) -> bool:
        return sorted(n.lower() for n in table.class_names) == sorted(c.lower() for c in self.spoof_classes)

    def key_fields(self) -> dict[str, Any]:
        """Everything that changes the text: the template version, wording, option count and seed. The
        wording fields are listed only when they differ from their defaults, so the key (and the cache
        folder) of the default wording is the one it had before they existed. `per_label_questions`
        changes which rows exist, not any row's text: the rows are keyed by their own ids."""
        fields = {
            "name": self.name,
            "template": _OPTION_TAG,
            "question": self.question,
            "instruction": self.instruction,
            "options": self.options,
            "seed": self.seed,
            "spoof_question": self.spoof_question,
            "spoof_classes": list(self.spoof_classes),
        }
        defaults = {f.name: f.default for f in dataclasses.fields(PaperPrompt)}
        for name in _WORDING_FIELDS:
            value = getattr(self, name)
            if value != defaults[name]:
                fields[name] = list(value) if isinstance(value, tuple) else value
        return fields


_WORDING_FIELDS = (
    "layout",
    "option_format",
    "option_separator",
    "spoof_layout",
    "spoof_option_format",
    "spoof_option_separator",
    "spoof_option_names",
)


def _fields(template: str) -> set[str]:
    """The placeholders a (checked) wording template uses."""
    return {name for _, name, _, _ in string.Formatter().parse(str(template)) if name is not None}


def _check_template(field: str, template: str, allowed: set[str], required: set[str]) -> None:
    """A wording template may use only `allowed` placeholders and must use `required` ones."""
    try:
        used = {name for _, name, _, _ in string.Formatter().parse(str(template)) if name is not None}
    except ValueError as err:
        raise ConfigError(
            f"prompt.{field}={template!r} is not a valid template ({err})", "write literal braces as {{ and }}"
        ) from err
    if not used <= allowed or not required <= used:
        raise ConfigError(
            f"prompt.{field}={template!r} uses {sorted(used)}; it may use {sorted(allowed)} "
            f"and must use {sorted(required)}",
            f"fix prompt.{field} (see configs/prompt/paper.yaml)",
        )


def build_prompt(cfg: Mapping[str, Any]) -> ClipPrompt:
    """The prompt a `prompt` config builds: its `name` is a configs/prompt file's, its fields checked.
    Its `${calm.authors:...}` values (per_label_questions) resolve whoever composed the config."""
    register_authors_resolver()
    return build(cfg, "prompt", named=True)
