"""Zero-shot baseline: the backbone answers each query clip's prompt by generation; the answer is
mapped to a class name (calm.baselines.answer_matching). Unmatched answers count as wrong and are
reported. Answers are computed once per clip and scored on the same episodes as the other methods.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from calm.backbones.base import Backbone
from calm.baselines.answer_matching import match_answer
from calm.baselines.generation import generate_in_batches
from calm.data.prompts import ClipPrompt
from calm.data.table import ClipTable
from calm.protocols import Episode

# The results row this baseline produces (tables and sweep figures look it up by this name).
ZERO_SHOT_ROW = "zero_shot"


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
        Path(path).write_text("\n".join(lines) + "\n")


def answer_clips(backbone: Backbone, table: ClipTable, prompt: ClipPrompt, clip_ids: Sequence[str],
                 batch_size: int = 8, max_new_tokens: int = 32,
                 device: torch.device | None = None) -> ZeroShotAnswers:
    """Generate an answer for every clip in `clip_ids` on `device` (default CPU; the model is loaded if
    it is not yet)."""
    by_id = {c.id: c for c in table.clips}
    clips = [by_id[cid] for cid in dict.fromkeys(clip_ids)]
    answers: dict[str, str] = {}
    for batch, texts in generate_in_batches(
            backbone, table, prompt, clips, batch_size, device or torch.device("cpu"),
            lambda waves, prompts, _: backbone.generate_answers(waves, prompts, max_new_tokens)):
        answers.update({c.id: text for c, text in zip(batch, texts, strict=True)})
    classes = {cid: match_answer(text, table.class_names) for cid, text in answers.items()}
    return ZeroShotAnswers(answers, classes)


def zero_shot_accuracy(episode: Episode, table: ClipTable, answers: ZeroShotAnswers) -> float:
    """Percent of the episode's queries whose answer names their true class."""
    truth = table.labels[episode.query]
    named = np.array([answers.classes.get(table.clips[i].id) for i in episode.query], dtype=object)
    return float(100.0 * np.mean([n is not None and n == t for n, t in zip(named, truth, strict=True)]))
