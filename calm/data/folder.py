"""Users' own data: `root/<class>/*.{wav,flac,mp3,ogg}`, or a CSV of `path,label[,split]`.

A clip's id is its file's absolute path: ids name rows of caches that every dataset shares, and
relative paths such as `dog/1.wav` recur across users' folders. Without a split column, a seeded
hash of each clip's relative path (or its path as the CSV lists it) puts a fraction of every class
in the test pool: the same files always land in the same pool wherever the folder lives, and adding
a file moves no other.

Files come from under the root only (`calm.data.roots`): the walk follows no symlink that loops or
leaves the root, and a CSV row naming a file outside the root (absolute, or `..` above it) is an
error, unless `allow_outside_root` is set (a CSV that lists clips from several disks, clips linked
in from a store such as a Hugging Face snapshot). A CSV row's links follow the walk's rule, and two
rows (or files) that reach one file are refused: one audio under two names could be a support clip
and a query of the same episode. Labels may not be empty or differ only in case (`check_class_names`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from calm.data.dataset import Dataset, LoadedDataset
from calm.data.roots import FolderWalk, resolve_under
from calm.data.table import (
    QUERY_SPLIT,
    RELIABILITY_SPLIT,
    SUPPORT_SPLIT,
    Clip,
    ClipTable,
    check_class_names,
)
from calm.data.validate import FirstSeen, csv_rows, require_file, require_root
from calm.errors import ConfigError, DataError
from calm.storage.digests import text_sha256

FOLDER_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg")
CSV_HEADERS = (("path", "label"), ("path", "label", "split"))
# val: labelled clips a protocol may measure reliabilities on (protocol.reliability=val)
SPLITS = {"train": SUPPORT_SPLIT, "test": QUERY_SPLIT, "val": RELIABILITY_SPLIT}
HOW_TO_GET = (
    "set dataset.root to a folder with one sub-folder of audio files per class (root/<class>/*.wav), "
    "or set dataset.csv to a CSV with the header path,label (and optionally split)"
)
OUTSIDE_FIX = (
    "keep the clips under dataset.root (copy them in), or set dataset.allow_outside_root=true "
    "to read files outside it on purpose"
)


@dataclass(frozen=True)
class Folder(Dataset):
    """`dataset=folder`: class sub-folders of `root`, or `csv` (relative to `root`; an absolute CSV's
    folder is the root when `root` is unset)."""

    description = "Your own data: one folder per class, or a CSV of path,label[,split]"
    layout = "<root>/<class>/*.{wav,flac,mp3,ogg}  or  <root>/<csv> with header path,label[,split]"
    source = "-"

    name: str
    root: str | None
    csv: str | None
    test_fraction: float
    seed: int
    extensions: Sequence[str]
    allow_outside_root: bool

    def load(self, data_dir: Path) -> LoadedDataset:
        root = self.root
        if root is None and self.csv is not None and Path(self.csv).is_absolute():
            root = Path(self.csv).parent
        if not isinstance(self.allow_outside_root, bool):
            raise ConfigError(
                f"dataset.allow_outside_root must be true or false, got {self.allow_outside_root!r}",
                "set dataset.allow_outside_root=false (the default) or true",
            )
        table, missing = load_folder(
            require_root(root, "folder", HOW_TO_GET),
            self.csv,
            float(self.test_fraction),
            int(self.seed),
            tuple(self.extensions),
            self.allow_outside_root,
        )
        return LoadedDataset(table, tuple(missing))


def holdout_split(ids_by_class: dict[str, list[str]], test_fraction: float, seed: int) -> set[str]:
    """The ids that go to the test pool: per class, round(n * fraction) of them, at least one and
    never all when the class has two or more clips, ranked by a seeded hash of the id."""
    if not 0.0 <= test_fraction < 1.0:
        raise ConfigError(f"dataset.test_fraction={test_fraction}", "use a fraction in [0, 1)")
    test: set[str] = set()
    for ids in ids_by_class.values():
        n_test = round(len(ids) * test_fraction)
        if test_fraction > 0 and len(ids) >= 2:
            n_test = min(max(n_test, 1), len(ids) - 1)
        ranked = sorted(ids, key=lambda cid: text_sha256(f"{seed}:{cid}"))
        test.update(ranked[:n_test])
    return test


@dataclass(frozen=True)
class Entry:
    """One clip as a folder or CSV names it: the path as listed, the file, its real path (links
    followed), class name, split (None: drawn by `holdout_split`), and where it was read (for errors)."""

    listed: str
    path: Path
    real: str
    label: str
    split: str | None
    where: str


def load_folder(
    root: Path,
    csv: str | Path | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    extensions: Sequence[str] = FOLDER_EXTENSIONS,
    allow_outside_root: bool = False,
) -> tuple[ClipTable, list[str]]:
    """The clip table and the CSV-listed paths that do not exist (class folders cannot miss any)."""
    walk = FolderWalk(root, allow_outside_root, OUTSIDE_FIX)
    if csv is not None:
        return _from_csv(root, Path(csv), test_fraction, seed, walk)
    extensions = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
    entries, class_folders = [], {}
    for class_dir in walk.folders():
        files = sorted(p for p in walk.files(class_dir) if p.suffix.lower() in extensions)
        if files:
            class_folders[class_dir.name] = str(class_dir)
        entries.extend(
            Entry(p.relative_to(root).as_posix(), p, os.path.realpath(p), class_dir.name, None, str(p)) for p in files
        )
    walk.warn_loops(f"folder dataset {root}")
    if not entries:
        raise DataError(f"no class folders with {sorted(extensions)} files in {root}", HOW_TO_GET)
    check_class_names(class_folders, f"folder dataset {root}")
    _one_entry_per_file(entries)
    return _table(root, entries, test_fraction, seed), []


def _from_csv(root: Path, csv: Path, test_fraction: float, seed: int, walk: FolderWalk) -> tuple[ClipTable, list[str]]:
    """Rows of `path,label[,split]`; relative paths are relative to the CSV's folder, and every path
    must lead under `root`, links followed, unless `walk.allow_outside`."""
    path = require_file(csv if csv.is_absolute() else root / csv, "clip list CSV", HOW_TO_GET)
    header, rows = csv_rows(path, CSV_HEADERS, "the first line must be path,label or path,label,split")
    seen = FirstSeen()
    entries, missing = [], []
    first_line: dict[str, str] = {}
    for line, fields in rows:
        clip_path, label = fields[0], fields[1]
        split = fields[2] if len(header) == 3 else None
        where = f"{path} line {line}"
        if split is not None and split not in SPLITS:
            raise DataError(
                f"{where}: split is {split!r}, expected train, test or val",
                "fix that line; the split column holds train, test or val",
            )
        first_line.setdefault(label, f"line {line}")
        seen.add(clip_path, path, line)
        audio = Path(clip_path).expanduser()
        audio = audio if audio.is_absolute() else path.parent / audio
        if not walk.allow_outside:
            audio = resolve_under(root, audio, where, OUTSIDE_FIX)
        real = walk.real_file(audio, where)
        if not os.path.isfile(real):
            missing.append(str(audio))
            continue
        entries.append(Entry(clip_path, audio, real, label, split, f"{where} ({clip_path!r})"))
    check_class_names(first_line, str(path))
    _one_entry_per_file(entries)
    return _table(root, entries, test_fraction, seed), missing


def _one_entry_per_file(entries: Sequence[Entry]) -> None:
    """Two entries reaching one file (by a link, or `./`) would put the same audio in the support set and
    the queries at once: refused, naming both."""
    first: dict[str, Entry] = {}
    for entry in entries:
        other = first.setdefault(entry.real, entry)
        if other is not entry:
            raise DataError(
                f"{other.where} and {entry.where} reach the same file {entry.real}",
                "list each audio file once: one file under two names can be a support clip and a "
                "query of the same episode",
            )


def _table(root: Path, entries: Sequence[Entry], test_fraction: float, seed: int) -> ClipTable:
    """Clips from entries; a None split comes from `holdout_split` on the listed path, and the id is the
    file's absolute path."""
    names = tuple(sorted({e.label for e in entries}))
    label_of = {name: i for i, name in enumerate(names)}
    listed_by_class: dict[str, list[str]] = {}
    for e in entries:
        if e.split is None:
            listed_by_class.setdefault(e.label, []).append(e.listed)
    test = holdout_split(listed_by_class, test_fraction, seed)
    clips = tuple(
        Clip(
            id=Path(os.path.abspath(e.path)).as_posix(),
            audio_path=e.path,
            label=label_of[e.label],
            split=SPLITS[e.split] if e.split is not None else (QUERY_SPLIT if e.listed in test else SUPPORT_SPLIT),
            meta={"listed_as": e.listed},
        )
        for e in entries
    )
    return ClipTable("folder", clips, names, source=str(root))
