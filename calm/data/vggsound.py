"""VGGSound as its authors ship it: `vggsound.csv` (no header) + a folder of `{youtube_id}_{start:06d}` clips.

Clips come from YouTube and many can no longer be fetched, so clips listed in the CSV but absent
from the folder are left out and reported, never fatal. mp4 clips keep their video for
audio-visual backbones.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from calm.data.audio import is_container
from calm.data.dataset import Dataset, LoadedDataset
from calm.data.listed import ListedClips
from calm.data.roots import require_folder, resolve_under
from calm.data.table import QUERY_SPLIT, SUPPORT_SPLIT, ClipTable
from calm.data.validate import FirstSeen, check_fields, parse_int, require_file, require_root
from calm.errors import DataError

VGGSOUND_URL = "https://www.robots.ox.ac.uk/~vgg/data/vggsound/"
LAYOUT = "youtube_id,start_seconds,label,split"
CLIP_EXTENSIONS = (".mp4", ".wav", ".flac")
SPLITS = {"train": SUPPORT_SPLIT, "test": QUERY_SPLIT}
HOW_TO_GET = (
    f"get vggsound.csv and the clips from {VGGSOUND_URL} (clips named {{youtube_id}}_{{start:06d}}.mp4), "
    "then set dataset.root=/path/to/the folder holding vggsound.csv and dataset.clips_dir to the clips folder"
)


@dataclass(frozen=True)
class VggSound(Dataset):
    """`dataset=vggsound`: vggsound.csv under `root`, clips under `clips_dir` (relative to `root`, or absolute)."""

    description = "VGGSound: 309 classes of YouTube clips (audio, or audio+video from mp4); missing clips reported"
    layout = (
        "vggsound.csv (no header: youtube_id,start_seconds,label,split) + video/{youtube_id}_{start:06d}.mp4|wav|flac"
    )
    source = VGGSOUND_URL

    name: str
    root: str | None
    clips_dir: str
    extensions: Sequence[str]

    def load(self, data_dir: Path) -> LoadedDataset:
        root = require_root(self.root, "VGGSound", HOW_TO_GET)
        table, missing = load_vggsound(root, self.clips_dir, tuple(self.extensions))
        return LoadedDataset(table, tuple(missing))


def clip_stem(youtube_id: str, start_seconds: int) -> str:
    """The file name (without extension) VGGSound's clips use: `{youtube_id}_{start:06d}`."""
    return f"{youtube_id}_{start_seconds:06d}"


def index_clips(folder: Path, extensions: Sequence[str]) -> dict[str, Path]:
    """Files under `folder` (recursively) by name stem; for a shared stem the earlier extension wins.

    One directory walk instead of a stat per listed clip keeps 200k-clip datasets fast.
    """
    rank: dict[str, int] = {}
    for i, ext in enumerate(extensions):
        rank.setdefault(ext.lower(), i)
    found: dict[str, Path] = {}
    for directory, subdirs, files in os.walk(folder):
        subdirs.sort()
        for name in sorted(files):
            stem, ext = os.path.splitext(name)
            if ext.lower() not in rank:
                continue
            if stem not in found or rank[ext.lower()] < rank[found[stem].suffix.lower()]:
                found[stem] = Path(directory) / name
    return found


def clips_folder(root: Path, clips_dir: str | Path, how_to_get: str) -> Path:
    """The clips folder (absolute, or relative to the dataset root); it must exist."""
    folder = Path(clips_dir).expanduser()
    folder = folder if folder.is_absolute() else root / folder
    return require_folder(folder, "clips folder", how_to_get)


def load_vggsound(
    root: Path, clips_dir: str | Path = "video", extensions: Sequence[str] = CLIP_EXTENSIONS
) -> tuple[ClipTable, list[str]]:
    """The clip table and the expected paths of clips listed in vggsound.csv but not found."""
    meta = require_file(root / "vggsound.csv", "VGGSound metadata", HOW_TO_GET)
    folder = clips_folder(root, clips_dir, HOW_TO_GET)
    extensions = tuple(e if e.startswith(".") else f".{e}" for e in extensions)
    rows = _read_csv(meta)
    names = tuple(sorted({label for _, _, _, _, label, _ in rows}))
    label_of = {name: i for i, name in enumerate(names)}
    found = index_clips(folder, extensions)
    listed = ListedClips()
    for line, stem, youtube_id, start, label, split in rows:
        expected = resolve_under(folder, f"{stem}{extensions[0]}", f"{meta} line {line}")
        path = found.get(stem)
        listed.add(
            path,
            expected,
            id=stem,
            label=label_of[label],
            split=SPLITS[split],
            video_path=path if path is not None and is_container(path) else None,
            meta={"youtube_id": youtube_id, "start_seconds": str(start)},
        )
    return ClipTable("vggsound", tuple(listed.clips), names, source=str(root)), listed.missing


def _read_csv(meta: Path) -> list[tuple[int, str, str, int, str, str]]:
    """(line, clip stem, youtube id, start, label, split) per line; every malformed line is an error naming it."""
    seen = FirstSeen()
    rows = []
    with open(meta, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        for fields in reader:
            line = reader.line_num
            if not fields:
                continue
            check_fields(meta, line, fields, 4, LAYOUT)
            youtube_id, start, label, split = (f.strip() for f in fields)
            if line == 1 and not start.isdigit():
                raise DataError(
                    f"{meta} line 1: looks like a header ({','.join(fields)}); the official vggsound.csv has none",
                    f"remove the header line; each line is {LAYOUT}",
                )
            start_seconds = parse_int(meta, line, start, "start_seconds")
            if split not in SPLITS:
                raise DataError(
                    f"{meta} line {line}: split is {split!r}, expected train or test",
                    f"fix that line; each line is {LAYOUT}",
                )
            stem = clip_stem(youtube_id, start_seconds)
            seen.add(stem, meta, line)
            rows.append((line, stem, youtube_id, start_seconds, label, split))
    return rows
