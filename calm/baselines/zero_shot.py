"""Zero-shot baseline: the backbone answers each query clip's prompt by generation; the answer is
mapped to a class (calm.baselines.answer_matching), by its name or, under the multiple-choice prompt,
by the option letter it gives. Unmatched answers count as wrong and are reported. Answers are
computed once per clip (and kept in an answer store under the cache folder, keyed by every input
that changes them) and scored on the same episodes as the other methods.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np
import torch

from calm.backbones.base import Backbone
from calm.baselines.answer_matching import match_answer, match_option_letter
from calm.baselines.answer_store import AnswerStore
from calm.baselines.decoding import DECODINGS, Sampling
from calm.baselines.generation import stored_or_generated
from calm.config.builder import build
from calm.data.prompts import ClipPrompt, PaperPrompt
from calm.data.table import Clip, ClipTable
from calm.errors import ConfigError
from calm.extraction.row_inputs import model_key_fields
from calm.protocols import Episode
from calm.storage.atomic_write import write_lines_atomic
from calm.storage.file_digests import FileDigests

# The results row this baseline produces (tables and sweep figures look it up by this name).
ZERO_SHOT_ROW = "zero_shot"
STORE_FOLDER = "zero_shot_answers"
MATCHINGS = ("class_names", "option_letter")


@dataclass(frozen=True)
class ZeroShotSettings:
    """The `zero_shot` block of the method config (configs/method/zero_shot.yaml holds the defaults a job
    runs with and says what each key means)."""

    max_new_tokens: int = 32
    batch_size: int = 8
    decoding: str = "greedy"
    matching: str = "class_names"
    temperature: float = 1.0
    top_p: float = 1.0
    temperature_range: tuple[float, float] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.temperature_range is not None:  # a config list, kept hashable and comparable
            object.__setattr__(self, "temperature_range", tuple(self.temperature_range))

    @classmethod
    def from_config(
        cls, cfg: Mapping[str, Any], prompt: ClipPrompt, table: ClipTable | None = None
    ) -> ZeroShotSettings:
        """Settings from the `method.zero_shot` block (built by `calm.config.builder.build`: an unknown or
        missing key is a ConfigError naming the accepted ones), checked against the job's prompt (and the
        table it is asked about, which decides which option wording applies: see `check`)."""
        settings = build(cfg, "method", cls=cls, key="method.zero_shot")
        settings.check(prompt, table)
        return settings

    @property
    def sampling(self) -> Sampling:
        return Sampling(self.temperature, self.top_p, self.temperature_range, self.seed)

    def check(self, prompt: ClipPrompt, table: ClipTable | None = None) -> None:
        """Refuse bad settings. `matching=option_letter` needs a prompt whose options, for `table`'s
        clips, are shown with letters (without a table: under every option wording of the prompt)."""
        for name in ("max_new_tokens", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
                raise ConfigError(
                    f"zero_shot.{name} must be a positive integer, got {value!r}",
                    f"set method.zero_shot.{name} to a positive number",
                )
        if self.decoding not in DECODINGS:
            raise ConfigError(
                f"zero_shot.decoding must be one of {list(DECODINGS)}, got {self.decoding!r}",
                "set method.zero_shot.decoding=greedy (clean) or sample (the authors')",
            )
        if self.decoding == "sample":
            self.sampling.check(1, "zero_shot")
        if self.matching not in MATCHINGS:
            raise ConfigError(
                f"zero_shot.matching must be one of {list(MATCHINGS)}, got {self.matching!r}",
                "set method.zero_shot.matching=class_names or option_letter",
            )
        if self.matching == "option_letter" and not (isinstance(prompt, PaperPrompt) and prompt.shows_letters(table)):
            name = getattr(prompt, "name", prompt)
            whose = "its options" if table is None else f"the options of {table.name}"
            shown = (
                "offers no options"
                if not isinstance(prompt, PaperPrompt)
                else f"shows {whose} without letters (option format {prompt.option_format_for(table)!r} "
                "has no {letter})"
            )
            raise ConfigError(
                f"zero_shot.matching=option_letter needs options shown with letters: prompt={name} "
                f"{shown}, so no answer could name one",
                "use a lettered multiple-choice prompt (prompt=paper, or prompt=paper_asvspoof_lettered "
                "for ASVspoof), or method.zero_shot.matching=class_names",
            )

    def notes(self, unmatched: int, answered: int) -> list[str]:
        """What a reader of the zero-shot row must know under the authors' matching (results.json notes)."""
        if self.matching != "option_letter":
            return []
        return [
            f"zero_shot is scored by the option letter of the multiple-choice prompt, whose options contain "
            f"each clip's true label (as in the authors' runs); {unmatched} of {answered} answers gave no "
            "offered letter and count as wrong"
        ]

    def decoding_key(self) -> dict[str, Any]:
        """Everything about decoding that changes an answer (the answer store's key)."""
        sampled = self.sampling.key_fields() if self.decoding == "sample" else {}
        return {"decoding": self.decoding, "max_new_tokens": int(self.max_new_tokens), **sampled}


@dataclass
class ZeroShotAnswers:
    """Each answered clip's generated text and the class it names (None: unmatched)."""

    answers: dict[str, str]
    classes: dict[str, int | None]

    @property
    def unmatched(self) -> list[str]:
        return sorted(cid for cid, label in self.classes.items() if label is None)

    def write(self, path: Path, class_names: Sequence[str]) -> None:
        lines = ["clip_id\tclass\tanswer"] + [
            f"{cid}\t{class_names[self.classes[cid]] if self.classes[cid] is not None else '-'}\t"
            f"{self.answers[cid].replace(chr(9), ' ').replace(chr(10), ' ')}"
            for cid in sorted(self.answers)
        ]
        write_lines_atomic(path, lines)


def zero_shot_store(
    cache_dir: Path, backbone: Backbone, prompt: ClipPrompt, settings: ZeroShotSettings, table: ClipTable
) -> AnswerStore:
    """The answer store for this dataset (name and source: clip ids are unique only within one),
    backbone and prompt (keyed as rows are: `calm.extraction.row_inputs.model_key_fields`, weights by content) and
    decoding settings; each answer is stored with its clip's audio and prompt-text digests
    (`AnswerStore.current`)."""
    digests = FileDigests(cache_dir)
    fields = {
        "dataset": {"name": table.name, "source": table.source},
        **model_key_fields(backbone, prompt, digests),
        "decoding": settings.decoding_key(),
    }
    return AnswerStore(Path(cache_dir) / STORE_FOLDER, fields, backbone.name, digests)


def named_class(answer: str, clip: Clip, table: ClipTable, prompt: ClipPrompt, matching: str) -> int | None:
    """The class (dataset index) an answer names: by class name, or by the letter of an offered option."""
    if matching == "class_names":
        return match_answer(answer, table.class_names)
    offered = prompt.option_ids(clip, table)
    position = match_option_letter(answer, len(offered))
    return None if position is None else offered[position]


def answer_clips(
    backbone: Backbone,
    table: ClipTable,
    prompt: ClipPrompt,
    clip_ids: Sequence[str],
    settings: ZeroShotSettings | None = None,
    device: torch.device | None = None,
    store: AnswerStore | None = None,
) -> ZeroShotAnswers:
    """An answer for every clip in `clip_ids`, from `store` where it has one generated from the clip's
    current inputs (audio content, rendered prompt text), else generated on `device` (default CPU; the
    model is loaded if it is not yet) and added to the store batch by batch."""
    settings = settings or ZeroShotSettings()
    by_id = {c.id: c for c in table.clips}
    clips = [by_id[cid] for cid in dict.fromkeys(clip_ids)]

    def generate(waves: list[np.ndarray], prompts: list[str], batch: list[Clip]) -> list[str]:
        if settings.decoding == "greedy":
            return backbone.generate_answers(waves, prompts, settings.max_new_tokens)
        sampled = settings.sampling.sample(backbone, waves, prompts, [c.id for c in batch], 1, settings.max_new_tokens)
        return [texts[0] for texts in sampled]

    generation = {"batch_size": settings.batch_size, "device": device or torch.device("cpu"), "generate": generate}
    answers, _ = stored_or_generated(backbone, table, prompt, clips, store, **generation)
    classes = {c.id: named_class(answers[c.id], c, table, prompt, settings.matching) for c in clips}
    return ZeroShotAnswers(answers, classes)


def zero_shot_accuracy(episode: Episode, table: ClipTable, answers: ZeroShotAnswers) -> float:
    """Percent of the episode's queries whose answer names their true class."""
    truth = table.labels[episode.query]
    named = np.array([answers.classes.get(table.clips[i].id) for i in episode.query], dtype=object)
    return float(100.0 * np.mean([n is not None and n == t for n, t in zip(named, truth, strict=True)]))
