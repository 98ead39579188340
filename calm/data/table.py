"""The clip table: what a dataset is once its metadata is read (no audio decoded, no model loaded)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from calm.errors import DataError
from calm.storage.digests import digest
from calm.storage.file_digests import FileDigests

SUPPORT_SPLIT = "train"
QUERY_SPLIT = "test"
RELIABILITY_SPLIT = "val"  # labelled clips a protocol may measure CALM's reliabilities on (protocol.reliability=val)


@dataclass(frozen=True)
class Clip:
    """One labelled clip; `split` says which pool it belongs to (train: support pool, test: queries).

    Multi-label datasets (AudioSet) put every positive class in `labels` and the first in `label`.
    A per-label question (`calm.data.questions`) is a single-label row: `label` is the class it asks
    about, `question_of` the id of the clip it was made from, `clip_labels` every positive class of
    that clip (so its prompt never offers another right answer as a distractor).
    """

    id: str
    audio_path: Path
    label: int
    split: str
    video_path: Path | None = None
    meta: Mapping[str, str] = field(default_factory=dict)
    labels: tuple[int, ...] = ()
    question_of: str | None = None
    clip_labels: tuple[int, ...] = ()

    @property
    def all_labels(self) -> tuple[int, ...]:
        return self.labels or (self.label,)


@dataclass(frozen=True)
class ClipTable:
    """A dataset's clips with class names; labels are indices into `class_names`."""

    name: str
    clips: tuple[Clip, ...]
    class_names: tuple[str, ...]
    source: str = ""

    def __post_init__(self) -> None:
        check_class_names(dict.fromkeys(self.class_names, ""), f"dataset {self.name!r} ({self.source})")
        duplicates = [cid for cid, n in Counter(c.id for c in self.clips).items() if n > 1]
        if duplicates:
            raise DataError(
                f"dataset {self.name!r} ({self.source}) has duplicate clip ids: {duplicates[:5]}",
                "make every clip id unique (ids name cache rows, so two clips may not share one)",
            )
        bad = [
            c.id for c in self.clips if not all(0 <= y < len(self.class_names) for y in (*c.all_labels, *c.clip_labels))
        ]
        if bad:
            raise DataError(
                f"dataset {self.name!r} has clips with labels outside 0..{len(self.class_names) - 1}: {bad[:5]}",
                "check the label column of the dataset's metadata",
            )

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def ids(self) -> list[str]:
        return [c.id for c in self.clips]

    @property
    def multi_label(self) -> bool:
        return any(len(c.all_labels) > 1 for c in self.clips)

    @property
    def labels(self) -> np.ndarray:
        return np.array([c.label for c in self.clips], dtype=np.int64)

    def split_mask(self, split: str) -> np.ndarray:
        return np.array([c.split == split for c in self.clips], dtype=bool)

    def subset(self, indices: Sequence[int]) -> ClipTable:
        return ClipTable(self.name, tuple(self.clips[i] for i in indices), self.class_names, self.source)

    def without(self, clip_ids: set[str]) -> ClipTable:
        """The table minus some clips (e.g. those skipped as undecodable)."""
        keep = [i for i, c in enumerate(self.clips) if c.id not in clip_ids]
        return self.subset(keep)

    def digest(self, file_digests: FileDigests) -> str:
        """SHA-256 of everything in the table a job's numbers depend on: the class names and, per clip in
        order, its id, label(s), split, metadata and the content digests of its audio and video files;
        for a per-label question also its source clip and that clip's labels (they change its prompt).

        Finished-job records are keyed by it next to the settings, so a class folder added, a file removed,
        relabelled or overwritten means the job runs again. Files count by content, not by path or mtime
        (a touched or copied folder is the same data); each is hashed once and remembered by path, size
        and mtime in `file_digests`. `name` and `source` are left out: they are settings or paths.
        """
        paths = list(dict.fromkeys(p for c in self.clips for p in (c.audio_path, c.video_path) if p is not None))
        try:
            contents = dict(zip(paths, file_digests.of_many(paths), strict=True))
        except OSError as err:
            raise DataError(
                f"dataset {self.name!r}: cannot read {err.filename or 'a clip'} to digest it ({err})",
                "check that the dataset's files are present and readable, then run again",
            ) from err
        return digest(
            {
                "classes": list(self.class_names),
                "clips": [
                    [
                        c.id,
                        c.label,
                        list(c.all_labels),
                        c.split,
                        dict(c.meta),
                        contents[c.audio_path],
                        contents[c.video_path] if c.video_path is not None else None,
                        *_question_fields(c),
                    ]
                    for c in self.clips
                ],
            }
        )

    def counts(self) -> dict[str, dict[str, int]]:
        """Clips per split and class name, for reports."""
        out: dict[str, dict[str, int]] = {}
        for c in self.clips:
            per_class = out.setdefault(c.split, {})
            name = self.class_names[c.label]
            per_class[name] = per_class.get(name, 0) + 1
        return out


def check_class_names(first_seen: Mapping[str, str], context: str) -> None:
    """Class names must be non-empty and differ by more than case: a blank label would run as a class
    named "", and `D0`/`d0` as two classes of one digit (a 5-way task that should be 4-way).

    `first_seen` maps each name to where it was first read ("list.csv line 4", a folder), or to "" when
    unknown; the error names both places of a case-only pair, and the place of an empty name.
    """
    for name, place in first_seen.items():
        if not name.strip():
            raise DataError(
                f"{context}: the label is empty ({place})" if place else f"{context}: a class name is empty",
                "give every clip a non-empty label (an empty one would become a class named '')",
            )
    spelled: dict[str, str] = {}
    for name in first_seen:
        other = spelled.setdefault(name.casefold(), name)
        if other != name:
            shown = [
                f"{label!r} ({first_seen[label]})" if first_seen[label] else repr(label) for label in (other, name)
            ]
            raise DataError(
                f"{context}: class names {shown[0]} and {shown[1]} differ only in case",
                f"use one spelling per class: {other!r} and {name!r} would be counted as two classes",
            )


def _question_fields(clip: Clip) -> list[object]:
    """A question's source clip and labels, for the table digest; nothing for an ordinary clip, so the
    digests (and finished-job records) of tables without questions stay what they were."""
    return [] if clip.question_of is None else [clip.question_of, list(clip.clip_labels)]
