"""`dataset=manifest`: the authors' own JSON manifests (their support, val and test files) as one clip table.

Up to three manifests are named in `dataset.manifests`: `support` (split "train", the support pool),
`val` (split "val", the reliability set V; optional) and `test` (split "test", the queries). Each
entry is one row, in file order, so the rows are exactly the questions the authors ran:

- ids: `<manifest stem>:<entry index>` (`<role>:<stem>:<index>` when one file is named for two
  roles). A clip listed twice (the authors' 40-shot files repeat clips) is two rows; rows of the
  same audio file share its audio digest, and rows whose questions differ are different cache rows
  (the cache keys each row by its own prompt text).
- label: the entry's `mapped_label` (`correct_label` in AudioSet test files); classes are the sorted
  label names of all rows. See `calm.data.manifest_entries` for each file kind's fields.
- meta: the manifest's file name and the entry's index, the question verbatim (`prompt=manifest`
  renders it), the options (JSON, in letter order), the answer, the foreign paths and, for pseudo-labelled entries,
  the true label, votes, trials and
  confidence = votes/trials (the authors' rule). AudioSet rows of one clip share `question_of`
  (`<stem>:sample:<original_sample_id>`) so the clip can be scored as a whole.
- files: each foreign `wav` (and `video`, when `read_video`) is mapped onto `root` by
  `calm.data.manifest_paths`. An entry whose file is missing is an error counting them and naming
  the first few; with `on_missing: skip` it is left out and listed (missing_clips.txt).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from calm.data.dataset import Dataset, LoadedDataset
from calm.data.manifest_entries import ManifestEntry, dumps, read_manifest
from calm.data.manifest_paths import PathMapper
from calm.data.table import QUERY_SPLIT, RELIABILITY_SPLIT, SUPPORT_SPLIT, Clip, ClipTable
from calm.data.validate import require_root
from calm.errors import ConfigError, DataError

__all__ = ["ROLES", "Manifest", "load_manifests", "resolve_manifest"]

ROLES = {"support": SUPPORT_SPLIT, "val": RELIABILITY_SPLIT, "test": QUERY_SPLIT}
ON_MISSING = ("error", "skip")
# Whose label a pseudo-labelled entry's row gets: `file` (the model's label the authors' file ships, their
# confidence rule kept in meta) or `truth` (the true class the file keeps, so the project's own
# pseudo-labelling, method=pseudo_label, can relabel the same clips: the replay's `regenerate` setting).
PSEUDO_LABELS = ("file", "truth")
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".mp4")
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi")
SHOWN = 5
QUESTION = "question"  # the meta key holding the entry's question text, verbatim
HOW_TO_GET = (
    "set dataset.root to the folder holding the clips the manifests name (their paths are mapped onto "
    "it: see README 'Manifest dataset'), and dataset.manifests.support / .test (and optionally .val) "
    "to the manifest files"
)


@dataclass(frozen=True)
class Manifest(Dataset):
    """`dataset=manifest`: the support / val / test manifests in `manifests`, clips under `root`."""

    description = "The authors' JSON manifests (support / val / test files), one row per entry"
    layout = "manifests: JSON lists of {wav, question, options, mapped_label, ...}; clips anywhere under <root>"
    source = "github.com/mvideet/CALM (SAVs/data)"

    name: str
    root: str | None
    manifests: Mapping[str, str | None]
    manifests_dir: str | None
    anchors: Sequence[str]
    extensions: Sequence[str]
    video_extensions: Sequence[str]
    on_missing: str
    read_video: bool
    pseudo_trials: int
    pseudo_labels: str

    def load(self, data_dir: Path) -> LoadedDataset:
        if self.on_missing not in ON_MISSING:
            raise ConfigError(
                f"dataset.on_missing={self.on_missing!r} is not one of {list(ON_MISSING)}",
                "set dataset.on_missing=error (the default) or skip (missing files listed and left out)",
            )
        if self.pseudo_labels not in PSEUDO_LABELS:
            raise ConfigError(
                f"dataset.pseudo_labels={self.pseudo_labels!r} is not one of {list(PSEUDO_LABELS)}",
                "set dataset.pseudo_labels=file (the labels the manifest ships) or truth (the true "
                "classes, for method=pseudo_label to relabel)",
            )
        unknown = sorted(set(self.manifests) - set(ROLES))
        if unknown:
            raise ConfigError(f"dataset.manifests has unknown roles {unknown}", f"use {list(ROLES)}")
        files = {role: resolve_manifest(path, self.manifests_dir) for role, path in self.manifests.items() if path}
        for role in ("support", "test"):
            if role not in files:
                raise ConfigError(f"dataset.manifests.{role} is not set", HOW_TO_GET)
        mapper = PathMapper(require_root(self.root, "manifest", HOW_TO_GET), self.anchors)
        table, missing = load_manifests(
            files,
            mapper,
            self.name,
            tuple(self.extensions),
            tuple(self.video_extensions) if self.read_video else None,
            int(self.pseudo_trials),
            self.pseudo_labels,
        )
        if missing and self.on_missing == "error":
            shown = "; ".join(missing[:SHOWN]) + (
                f"; ... ({len(missing) - SHOWN} more)" if len(missing) > SHOWN else ""
            )
            raise DataError(
                f"{len(missing)} manifest entries name files not found under {self.root}: {shown}",
                "check dataset.root and dataset.anchors (`python -m calm.data manifests DIR --root ROOT` "
                "counts found and missing clips per file), or set dataset.on_missing=skip to leave them "
                "out (listed in missing_clips.txt)",
            )
        return LoadedDataset(table, tuple(missing))


def resolve_manifest(path: str | Path, manifests_dir: str | Path | None) -> Path:
    """A manifest path as configured: relative ones are relative to `manifests_dir` when it is set."""
    path = Path(path).expanduser()
    if not path.is_absolute() and manifests_dir is None:
        raise ConfigError(
            f"manifest {path} is relative and dataset.manifests_dir is not set",
            "set dataset.manifests_dir to the folder it is relative to (the paper table's replay "
            "groups, experiment=replay_*: needs the authors' files: set paper.manifests_dir to a "
            "checkout of their SAVs/data)",
        )
    if not path.is_absolute() and manifests_dir is not None:
        path = Path(manifests_dir).expanduser() / path
    if not path.is_file():
        raise DataError(
            f"manifest not found: {path}",
            "set dataset.manifests.* (and dataset.manifests_dir, which "
            "relative manifest paths start from) to the authors' .json files",
        )
    return path


def load_manifests(
    files: Mapping[str, Path],
    mapper: PathMapper,
    name: str = "manifest",
    extensions: Sequence[str] = AUDIO_EXTENSIONS,
    video_extensions: Sequence[str] | None = VIDEO_EXTENSIONS,
    pseudo_trials: int = 8,
    pseudo_labels: str = "file",
) -> tuple[ClipTable, list[str]]:
    """The clip table of the manifests by role (support, val, test) and the entries whose files are
    missing (`<row id> <foreign path>`), in role then file order. Audio is looked up with `extensions`,
    video with `video_extensions` (None: entries' videos are not read). `meta["manifest"]` is the file's
    name, not its path, so the table's digest does not change when the manifests move. `pseudo_labels`:
    `file` labels a pseudo-labelled entry's row with the model's label, `truth` with its true class."""
    stems = [Path(p).stem for p in files.values()]
    entries = {role: read_manifest(path, pseudo_trials) for role, path in files.items()}
    codes = _truth_names(entries.values())
    if pseudo_labels == "truth":
        entries = {role: [_with_truth(e, codes, files[role]) for e in rows] for role, rows in entries.items()}
    labels = sorted({e.label for rows in entries.values() for e in rows})
    class_of = {label: k for k, label in enumerate(labels)}
    clips: list[Clip] = []
    missing: list[str] = []
    for role, path in files.items():
        stem = Path(path).stem
        prefix = f"{role}:{stem}" if stems.count(stem) > 1 else stem
        for entry in entries[role]:
            row_id = f"{prefix}:{entry.index}"
            audio = mapper.locate(entry.wav, extensions)
            wants_video = video_extensions is not None and entry.video is not None
            video = mapper.locate(entry.video, video_extensions) if wants_video else None
            absent = ([] if audio else [entry.wav]) + ([entry.video] if wants_video and video is None else [])
            if absent:
                missing.append(f"{row_id} {' '.join(absent)}")
                continue
            clips.append(_clip(row_id, prefix, entry, ROLES[role], audio, video, class_of, codes, Path(path).name))
    return ClipTable(name, tuple(clips), tuple(labels), source=mapper.root.as_posix()), missing


def _clip(
    row_id: str,
    prefix: str,
    entry: ManifestEntry,
    split: str,
    audio: Path,
    video: Path | None,
    class_of: Mapping[str, int],
    codes: Mapping[str, str],
    manifest: str,
) -> Clip:
    meta: dict[str, str] = {
        "manifest": manifest,
        "entry": str(entry.index),
        QUESTION: entry.question,
        "options": dumps(entry.options),
        "wav": entry.wav,
    }
    if entry.answer is not None:
        meta["answer"] = entry.answer
    if entry.video is not None:
        meta["video"] = entry.video
    if entry.original_labels:
        meta["original_labels"] = dumps(entry.original_labels)
    if entry.pseudo:
        meta.update(votes=str(entry.votes), trials=str(entry.trials), confidence=repr(entry.confidence))
        if entry.file_confidence is not None:
            meta["file_confidence"] = repr(entry.file_confidence)
        if entry.true_label is not None:
            meta["true_label"] = entry.true_label
            meta["true_class"] = codes.get(entry.true_label, entry.true_label)
    label = class_of[entry.label]
    grouped = entry.sample is not None and bool(entry.original_labels)
    others = tuple(class_of[x] for x in entry.original_labels if x in class_of and class_of[x] != label)
    return Clip(
        id=row_id,
        audio_path=audio,
        label=label,
        split=split,
        video_path=video,
        meta=meta,
        question_of=f"{prefix}:sample:{entry.sample}" if grouped else None,
        clip_labels=(label, *others) if grouped else (),
    )


def _with_truth(entry: ManifestEntry, codes: Mapping[str, str], path: Path) -> ManifestEntry:
    """A pseudo-labelled entry relabelled with its true class name (other entries as they are)."""
    if not entry.pseudo:
        return entry
    code = entry.true_label
    truth = codes.get(code) if code in codes else (code if code in (*entry.options, *entry.original_labels) else None)
    if truth is None:
        raise DataError(
            f"{Path(path).name} entry {entry.index}: dataset.pseudo_labels=truth needs its true class, "
            f"but its code {code!r} names no class (no labelled entry maps it to a name)",
            "name a labelled manifest (the test file) beside it, or keep dataset.pseudo_labels=file",
        )
    return replace(entry, label=truth)


def _truth_names(manifests: Any) -> dict[str, str]:
    """Class code -> class name (`label` -> `mapped_label`) from the labelled entries, so a pseudo-labelled
    entry's true code (`/m/07rwj13`) can be named; codes that map to two names are left out."""
    names: dict[str, set[str]] = {}
    for rows in manifests:
        for e in rows:
            if not e.pseudo and e.code is not None:
                names.setdefault(e.code, set()).add(e.label)
    return {code: next(iter(n)) for code, n in names.items() if len(n) == 1}


def question_text(clip: Clip) -> str:
    """The entry's question, verbatim; a DataError for a row that did not come from a manifest."""
    try:
        return clip.meta[QUESTION]
    except KeyError:
        raise DataError(
            f"row {clip.id!r} has no manifest question: prompt=manifest reads each entry's question",
            "use prompt=manifest with dataset=manifest only (other datasets: prompt=clean or paper)",
        ) from None


def options_of(clip: Clip) -> list[str]:
    """The entry's option names, in letter order."""
    return list(json.loads(clip.meta.get("options", "[]")))
