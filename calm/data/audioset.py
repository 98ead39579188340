"""AudioSet as Google ships it: segment CSVs + `class_labels_indices.csv`, with clips fetched locally.

Multi-label: every positive MID of a segment is in the clip's `labels`. Google distributes only
the metadata, so clips are the user's own download, named `{YTID}_{start:06d}.{ext}` (as for
VGGSound) or `{YTID}.{ext}` (one segment per video, as in the official segment files), anywhere
under the clips folder; segments without a clip are reported, not fatal.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from calm.data.audio import is_container
from calm.data.dataset import Dataset, LoadedDataset
from calm.data.roots import resolve_under
from calm.data.table import QUERY_SPLIT, SUPPORT_SPLIT, Clip, ClipTable
from calm.data.validate import (
    FirstSeen,
    check_fields,
    csv_rows,
    parse_float,
    parse_int,
    require_file,
    require_root,
)
from calm.data.vggsound import clip_stem, clips_folder, index_clips
from calm.errors import DataError

AUDIOSET_URL = "https://research.google.com/audioset/download.html"
LABELS_HEADER = ("index", "mid", "display_name")
SEGMENTS_HEADER = "YTID, start_seconds, end_seconds, positive_labels"
HOW_TO_GET = (
    f"download the segment CSVs and class_labels_indices.csv from {AUDIOSET_URL}, fetch the clips "
    "(named {YTID}_{start:06d}.wav or {YTID}.wav) into one folder, and set dataset.root=/path/to/that "
    "dataset folder (and dataset.clips_dir if the clips are not in its audio/ folder)"
)


@dataclass(frozen=True)
class AudioSet(Dataset):
    """`dataset=audioset`: the segment CSVs and class list under `root`, clips under `clips_dir`."""

    description = "AudioSet: 527 classes, multi-label; train segments = support pool, eval segments = queries"
    layout = (
        "class_labels_indices.csv + balanced_train_segments.csv + eval_segments.csv + "
        "audio/**/{YTID}_{start:06d}.wav or {YTID}.wav"
    )
    source = AUDIOSET_URL

    name: str
    root: str | None
    train_csv: str
    eval_csv: str
    labels_csv: str
    clips_dir: str
    extensions: Sequence[str]

    def load(self, data_dir: Path) -> LoadedDataset:
        root = require_root(self.root, "AudioSet", HOW_TO_GET)
        table, missing = load_audioset(
            root, self.train_csv, self.eval_csv, self.labels_csv, self.clips_dir, tuple(self.extensions)
        )
        return LoadedDataset(table, tuple(missing))


def load_audioset(
    root: Path,
    train_csv: str = "balanced_train_segments.csv",
    eval_csv: str = "eval_segments.csv",
    labels_csv: str = "class_labels_indices.csv",
    clips_dir: str | Path = "audio",
    extensions: Sequence[str] = (".wav", ".flac", ".mp4"),
) -> tuple[ClipTable, list[str]]:
    """The clip table (train segments: support pool, eval segments: queries) and the clips not found."""
    names, mids = _read_labels(require_file(root / labels_csv, "AudioSet class list", HOW_TO_GET))
    folder = clips_folder(root, clips_dir, HOW_TO_GET)
    extensions = tuple(e if e.startswith(".") else f".{e}" for e in extensions)
    found = index_clips(folder, extensions)
    seen = FirstSeen()
    clips, missing = [], []
    for csv_name, split in ((train_csv, SUPPORT_SPLIT), (eval_csv, QUERY_SPLIT)):
        segments = require_file(root / csv_name, "AudioSet segments file", HOW_TO_GET)
        for line, (ytid, start, end, positives) in _read_segments(segments):
            stem = clip_stem(ytid, int(start))
            seen.add(stem, segments, line)
            expected = resolve_under(folder, f"{stem}{extensions[0]}", f"{segments} line {line}")
            path = found.get(stem) or found.get(ytid)
            if path is None:
                missing.append(str(expected))
                continue
            labels = []
            for mid in positives:
                if mid not in mids:
                    raise DataError(
                        f"{segments} line {line}: label {mid!r} is not in {labels_csv}",
                        "use the class_labels_indices.csv that matches the segment files",
                    )
                if mids[mid] not in labels:
                    labels.append(mids[mid])
            clips.append(
                Clip(
                    id=stem,
                    audio_path=path,
                    label=labels[0],
                    split=split,
                    labels=tuple(labels),
                    video_path=path if is_container(path) else None,
                    meta={
                        "youtube_id": ytid,
                        "start_seconds": f"{start:.3f}",
                        "end_seconds": f"{end:.3f}",
                        "mids": ",".join(positives),
                    },
                )
            )
    return ClipTable("audioset", tuple(clips), names, source=str(root)), missing


def _read_labels(path: Path) -> tuple[tuple[str, ...], dict[str, int]]:
    """Display names by index and the index of each MID; indices must run 0..n-1 in order."""
    _, rows = csv_rows(path, [LABELS_HEADER], "use the official class_labels_indices.csv")
    names, mids = [], {}
    for line, (index, mid, display_name) in rows:
        if parse_int(path, line, index, "index") != len(names):
            raise DataError(
                f"{path} line {line}: index {index} out of order, expected {len(names)}",
                "use the official class_labels_indices.csv",
            )
        if mid in mids:
            raise DataError(f"{path} line {line}: MID {mid} listed twice", "use the official class_labels_indices.csv")
        mids[mid] = len(names)
        names.append(display_name)
    return tuple(names), mids


def _read_segments(path: Path) -> list[tuple[int, tuple[str, float, float, list[str]]]]:
    """(line, (YTID, start, end, MIDs)) per segment; the `# YTID, ...` header comment must come first."""
    rows, header_seen = [], False
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle, skipinitialspace=True)
        for fields in reader:
            line = reader.line_num
            if not fields:
                continue
            if fields[0].startswith("#"):
                header_seen = header_seen or ", ".join(fields).lstrip("# ").strip() == SEGMENTS_HEADER
                continue
            if not header_seen:
                raise DataError(
                    f"{path} line {line}: segment before the header line '# {SEGMENTS_HEADER}'",
                    "use the official segment CSV (three '#' lines, the last naming the columns)",
                )
            check_fields(path, line, fields, 4, SEGMENTS_HEADER)
            ytid, start, end, positives = fields
            mids = [m.strip() for m in positives.split(",") if m.strip()]
            if not mids:
                raise DataError(f"{path} line {line}: no positive labels", "use the official segment CSV")
            rows.append(
                (
                    line,
                    (
                        ytid,
                        parse_float(path, line, start, "start_seconds"),
                        parse_float(path, line, end, "end_seconds"),
                        mids,
                    ),
                )
            )
    return rows
