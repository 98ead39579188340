"""How the authors' manifests overlap, measured: per file its size and coverage, per pair the audio files
they share, and per job the share of support / val rows that are test clips.

A clip is one audio file: the file its path maps to under the root (`calm.data.manifest_paths`), or,
when it is not found there (or no root is given), the path as the manifest writes it. Two entries
naming the same file with different questions are one clip; an entry listed twice counts once.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

from calm.data.manifest_entries import read_manifest
from calm.data.manifest_paths import PathMapper
from calm.data.table import QUERY_SPLIT, RELIABILITY_SPLIT, SUPPORT_SPLIT, ClipTable
from calm.errors import DataError

__all__ = ["ManifestSummary", "PairOverlap", "LeakShare", "pair_overlaps", "summarize_manifests", "leak_shares"]


@dataclass(frozen=True)
class ManifestSummary:
    """One manifest: entries, distinct clips, classes, entries per class and clips found under the root
    (`found`, `missing`, `ambiguous` are None without a root)."""

    name: str
    entries: int
    clips: frozenset[str]
    classes: int
    per_class: tuple[int, float, int]
    found: int | None = None
    missing: int | None = None
    ambiguous: int | None = None

    def as_dict(self) -> dict:
        low, median, high = self.per_class
        return {
            "manifest": self.name,
            "entries": self.entries,
            "distinct_clips": len(self.clips),
            "classes": self.classes,
            "entries_per_class": {"min": low, "median": median, "max": high},
            "found": self.found,
            "missing": self.missing,
            "ambiguous": self.ambiguous,
        }


@dataclass(frozen=True)
class PairOverlap:
    """Distinct audio files two manifests share, and that count as a percentage of each one's clips."""

    first: str
    second: str
    shared: int
    of_first: float
    of_second: float

    def as_dict(self) -> dict:
        return {
            "first": self.first,
            "second": self.second,
            "shared_clips": self.shared,
            "percent_of_first": self.of_first,
            "percent_of_second": self.of_second,
        }


def summarize_manifests(
    folder: Path, mapper: PathMapper | None = None, extensions: Sequence[str] = (), pseudo_trials: int = 8
) -> tuple[list[ManifestSummary], dict[str, str]]:
    """A summary of every manifest under `folder` (recursively, `*.json`, by relative path; audio looked
    up with `extensions`), and the JSON files that are not manifests with the reason."""
    summaries, skipped = [], {}
    for path in sorted(Path(folder).rglob("*.json")):
        name = path.relative_to(folder).as_posix()
        try:
            entries = read_manifest(path, pseudo_trials)
        except DataError as err:
            skipped[name] = str(err)
            continue
        keys, found, missing, ambiguous = [], 0, 0, 0
        for wav in dict.fromkeys(e.wav for e in entries):
            located = None
            if mapper is not None:
                try:
                    located = mapper.locate(wav, extensions)
                except DataError:
                    ambiguous += 1
                found += located is not None
            keys.append(located.as_posix() if located is not None else wav)
        missing = len(keys) - found - ambiguous
        counts = sorted(Counter(e.label for e in entries).values())
        summaries.append(
            ManifestSummary(
                name,
                len(entries),
                frozenset(keys),
                len(counts),
                (counts[0], float(statistics.median(counts)), counts[-1]),
                *((found, missing, ambiguous) if mapper is not None else ()),
            )
        )
    return summaries, skipped


def pair_overlaps(summaries: Sequence[ManifestSummary]) -> list[PairOverlap]:
    """Every pair of manifests, in name order, with the distinct clips they share."""
    pairs = []
    for a, b in combinations(summaries, 2):
        shared = len(a.clips & b.clips)
        pairs.append(PairOverlap(a.name, b.name, shared, 100.0 * shared / len(a.clips), 100.0 * shared / len(b.clips)))
    return pairs


@dataclass(frozen=True)
class LeakShare:
    """Of one split's rows (support or val), how many are test clips: rows, and distinct audio files."""

    split: str
    rows: int
    leaking_rows: int
    files: int
    leaking_files: int

    @property
    def row_share(self) -> float:
        return self.leaking_rows / self.rows if self.rows else 0.0

    @property
    def file_share(self) -> float:
        return self.leaking_files / self.files if self.files else 0.0

    def note(self) -> str:
        """A line for a results table's notes."""
        split = "support" if self.split == SUPPORT_SPLIT else self.split
        return (
            f"{self.row_share:.1%} of the {self.rows} {split} rows ({self.leaking_files} of {self.files} "
            f"distinct clips) are test clips"
        )


def leak_shares(table: ClipTable, splits: Sequence[str] = (SUPPORT_SPLIT, RELIABILITY_SPLIT)) -> dict[str, LeakShare]:
    """For each of `splits` that has rows: how many of its rows, and of its distinct audio files, are also
    test clips (the same audio file as some row of the test split), for marking rows that leak."""
    test_files = {c.audio_path for c in table.clips if c.split == QUERY_SPLIT}
    shares = {}
    for split in splits:
        files = [c.audio_path for c in table.clips if c.split == split]
        if files:
            distinct = set(files)
            shares[split] = LeakShare(
                split, len(files), sum(f in test_files for f in files), len(distinct), len(distinct & test_files)
            )
    return shares
