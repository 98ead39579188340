"""Multi-label clips as the authors asked them: one multiple-choice question per positive label.

`question_table` turns every clip of a multi-label table into one single-label row per positive label,
in file order (clip order, then the clip's label order). Each row is its own cache row (its own prompt
text names its own label among the options) and is predicted on its own; `question_groups` says which
rows came from the same clip, so a clip can be scored as a whole (`calm.methods.metrics.question_exact_match`,
`calm.methods.metrics.set_exact_match`).

Ids: a clip with several labels gives `"<clip id>#<label position>"` (position in the clip's label
list, from 0); a clip with one label is its own single question and keeps its id, so its row and
prompt text are those of the same clip without the expansion. Clip ids containing `#` are refused,
so a question id never equals a clip id. A table without multi-label clips is already one question
per clip and is returned unchanged. A clip that cannot be decoded (on_bad_clip=skip) is skipped as each
of its questions; skipped_clips.tsv lists them by question id, which starts with the clip id.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from calm.data.table import Clip, ClipTable
from calm.errors import DataError

__all__ = ["QUESTION_SEPARATOR", "covers_whole_clips", "question_groups", "question_table"]

QUESTION_SEPARATOR = "#"


def question_table(table: ClipTable) -> ClipTable:
    """One single-label question row per positive label of every clip (see the module docstring)."""
    if not table.multi_label:
        return table
    clashing = [c.id for c in table.clips if QUESTION_SEPARATOR in c.id]
    if clashing:
        raise DataError(
            f"dataset {table.name!r} has clip ids containing {QUESTION_SEPARATOR!r}, which names "
            f"per-label questions: {clashing[:5]}",
            "rename those clips, or set prompt.per_label_questions=false",
        )
    rows = tuple(question for clip in table.clips for question in _questions(clip))
    return ClipTable(table.name, rows, table.class_names, table.source)


def _questions(clip: Clip) -> list[Clip]:
    positives = clip.all_labels
    if len(positives) == 1:
        return [replace(clip, label=positives[0], labels=(), question_of=clip.id, clip_labels=positives)]
    return [
        replace(
            clip,
            id=f"{clip.id}{QUESTION_SEPARATOR}{k}",
            label=label,
            labels=(),
            question_of=clip.id,
            clip_labels=positives,
        )
        for k, label in enumerate(positives)
    ]


def question_groups(table: ClipTable, rows: np.ndarray) -> np.ndarray | None:
    """Which clip each of `rows` (indices into `table`) asks about: int64 ids, dense 0..G-1 in order of
    first appearance; None when `table` is not a question table (then every row is its own clip)."""
    if not any(c.question_of is not None for c in table.clips):
        return None
    dense: dict[str, int] = {}
    return np.array(
        [dense.setdefault(_source(table.clips[int(i)]), len(dense)) for i in np.asarray(rows).ravel()], dtype=np.int64
    )


def covers_whole_clips(table: ClipTable, rows: np.ndarray) -> bool:
    """True when every question of each clip that `rows` ask about is among `rows`: only then can a clip
    be scored as a whole (protocol=paper scores the whole test split; a sampled episode may not)."""
    picked = {int(i) for i in np.asarray(rows).ravel()}
    sources = {_source(table.clips[i]) for i in picked}
    return all(i in picked for i, c in enumerate(table.clips) if _source(c) in sources)


def _source(clip: Clip) -> str:
    return clip.question_of if clip.question_of is not None else clip.id
