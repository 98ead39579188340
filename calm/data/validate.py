"""Checks of dataset metadata (headers, fields, duplicate ids) and of clips (present, decodable).

Loaders read metadata through these checks so that every bad line is a DataError naming the file
and the line; `python -m calm.data validate` uses the clip checks to report on a dataset before
any model is loaded.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path

from calm.data.audio import decode_audio, probe_audio
from calm.data.roots import require_folder
from calm.data.table import ClipTable
from calm.errors import CalmError, DataError

Row = tuple[int, list[str]]


def require_file(path: Path, what: str, fix: str) -> Path:
    """A metadata file the loader cannot do without; its absence says how to get the data."""
    if not path.is_file():
        raise DataError(f"{what} not found: {path}", fix)
    return path


def require_root(root: str | Path | None, name: str, how_to_get: str) -> Path:
    """The dataset root from `dataset.root`; unset, absent or a file is a DataError saying how to get the data."""
    if root is None:
        raise DataError(f"{name}: dataset.root is not set", how_to_get)
    return require_folder(Path(root).expanduser(), f"{name} root", how_to_get)


def csv_rows(path: Path, headers: Sequence[Sequence[str]], fix: str) -> tuple[tuple[str, ...], list[Row]]:
    """The header (one of `headers`) and the (line number, fields) rows of a CSV file.

    Blank lines are skipped; a row whose field count differs from the header is an error. A UTF-8
    byte-order mark (how spreadsheets save CSV) is dropped, not read as part of the first column's name.
    """
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = tuple(cell.strip() for cell in next(reader, []))
        if header not in {tuple(h) for h in headers}:
            expected = " or ".join(repr(",".join(h)) for h in headers)
            raise DataError(f"{path} line 1: header is {','.join(header)!r}, expected {expected}", fix)
        rows = []
        for fields in reader:
            if not fields:
                continue
            check_fields(path, reader.line_num, fields, len(header), ",".join(header))
            rows.append((reader.line_num, [cell.strip() for cell in fields]))
    return header, rows


def check_fields(path: Path, line: int, fields: Sequence[str], count: int, layout: str) -> None:
    """A metadata line must have exactly the fields its layout says."""
    if len(fields) != count:
        raise DataError(
            f"{path} line {line}: expected {count} fields ({layout}), found {len(fields)}",
            "fix or remove that line; the file must keep the dataset's official layout",
        )


def parse_int(path: Path, line: int, value: str, column: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise DataError(
            f"{path} line {line}: {column} must be an integer, found {value!r}",
            "fix or remove that line; the file must keep the dataset's official layout",
        ) from None


def parse_float(path: Path, line: int, value: str, column: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise DataError(
            f"{path} line {line}: {column} must be a number, found {value!r}",
            "fix or remove that line; the file must keep the dataset's official layout",
        ) from None


class FirstSeen:
    """Where each clip id was first listed, so that a duplicate names both places."""

    def __init__(self) -> None:
        self._where: dict[str, tuple[Path, int]] = {}

    def add(self, clip_id: str, path: Path, line: int) -> None:
        if clip_id in self._where:
            first_path, first_line = self._where[clip_id]
            raise DataError(
                f"duplicate clip id {clip_id!r} in {path} line {line} (first listed in {first_path} line {first_line})",
                "remove the duplicate line: clip ids name cache rows, so each clip may appear only once",
            )
        self._where[clip_id] = (path, line)


def undecodable_clips(table: ClipTable, whole: bool = False) -> dict[str, str]:
    """Clip paths that cannot be used, with the first line of the reason: an unreadable, empty or
    truncated file, or a float file with NaN/Inf samples (the header pass the pipeline runs); with
    `whole`, every clip is also decoded to its end (damage mid-file that no header check sees)."""
    bad = {}
    for clip in table.clips:
        try:
            probe_audio(clip.audio_path, samples=True)
            if whole:
                decode_audio(clip.audio_path)
        except CalmError as err:
            bad[str(clip.audio_path)] = err.problem
    return bad


def split_names(table: ClipTable) -> dict[str, int]:
    """Clips per pool (train/test) and, where the dataset has folds, per fold ("fold1", ...)."""
    counts: dict[str, int] = {}
    for clip in table.clips:
        counts[clip.split] = counts.get(clip.split, 0) + 1
    folds: dict[str, int] = {}
    for clip in table.clips:
        if "fold" in clip.meta:
            key = f"fold{clip.meta['fold']}"
            folds[key] = folds.get(key, 0) + 1
    return {**dict(sorted(counts.items())), **dict(sorted(folds.items()))}


def class_counts(table: ClipTable, clips: Iterable | None = None) -> dict[str, int]:
    """Clips per class name (every positive label counts for multi-label clips); empty classes included."""
    counts = dict.fromkeys(table.class_names, 0)
    for clip in table.clips if clips is None else clips:
        for label in clip.all_labels:
            counts[table.class_names[label]] += 1
    return counts


def dataset_report(table: ClipTable, missing: Sequence[str], probe: bool = True, decode: bool = False) -> dict:
    """Everything `validate` prints: counts per split and class, missing and undecodable files (probed
    headers, or with `decode` every clip decoded whole)."""
    bad = undecodable_clips(table, whole=decode) if probe else {}
    splits = sorted({c.split for c in table.clips})
    return {
        "dataset": table.name,
        "source": table.source,
        "clips": len(table),
        "classes": len(table.class_names),
        "multi_label": table.multi_label,
        "per_class": class_counts(table),
        "per_split": split_names(table),
        "per_split_class": {s: class_counts(table, (c for c in table.clips if c.split == s)) for s in splits},
        "missing": list(missing),
        "undecodable": sorted(bad),
        "undecodable_reasons": dict(sorted(bad.items())),
        "probed": probe,
        "decoded": probe and decode,
    }
