"""Dataset name -> builder, description and layout, so configs and tools pick datasets by name.

Builders import their loader when called: `python -m calm.data ls` stays instant and only the
`hf` dataset imports the `datasets` library.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from calm.data.fsdd import load_fsdd, resolve_root
from calm.data.table import ClipTable
from calm.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedDataset:
    """A clip table and the clips its metadata lists but the disk lacks (left out of the table)."""

    table: ClipTable
    missing: tuple[str, ...] = ()

    def write_missing(self, path: Path) -> None:
        """List the missing clips in a text file, one per line, so leaving them out is never silent."""
        if self.missing:
            Path(path).write_text("\n".join(self.missing) + "\n")


@dataclass(frozen=True)
class DatasetEntry:
    """How to build a dataset, and what `ls` says about it."""

    build: Callable[[DictConfig, Path], LoadedDataset]
    description: str
    layout: str
    source: str


def _fsdd(cfg: DictConfig, data_dir: Path) -> LoadedDataset:
    root = resolve_root(cfg.get("root"), data_dir, bool(cfg.get("download", False)))
    return LoadedDataset(load_fsdd(root, cfg.get("max_clips_per_class")))


def _esc50(cfg: DictConfig, data_dir: Path) -> LoadedDataset:
    from calm.data import esc50

    base = esc50.resolve_root(cfg.get("root"), data_dir)
    table, missing = esc50.load_esc50(base, int(cfg.get("test_fold", 1)), bool(cfg.get("esc10", False)))
    return LoadedDataset(table, tuple(missing))


def _vggsound(cfg: DictConfig, data_dir: Path) -> LoadedDataset:
    from calm.data import vggsound
    from calm.data.validate import require_root

    root = require_root(cfg.get("root"), "VGGSound", vggsound.HOW_TO_GET)
    table, missing = vggsound.load_vggsound(
        root, cfg.get("clips_dir", "video"), tuple(cfg.get("extensions", vggsound.CLIP_EXTENSIONS)))
    return LoadedDataset(table, tuple(missing))


def _asvspoof(cfg: DictConfig, data_dir: Path) -> LoadedDataset:
    from calm.data import asvspoof
    from calm.data.validate import require_root

    root = require_root(cfg.get("root"), "ASVspoof 2019 LA", asvspoof.HOW_TO_GET)
    table, missing = asvspoof.load_asvspoof2019_la(
        asvspoof.resolve_la(root), cfg.get("support_split", "train"), cfg.get("query_split", "eval"))
    return LoadedDataset(table, tuple(missing))


def _audioset(cfg: DictConfig, data_dir: Path) -> LoadedDataset:
    from calm.data import audioset
    from calm.data.validate import require_root

    root = require_root(cfg.get("root"), "AudioSet", audioset.HOW_TO_GET)
    options = {k: cfg[k] for k in ("train_csv", "eval_csv", "labels_csv", "clips_dir") if cfg.get(k) is not None}
    if cfg.get("extensions") is not None:
        options["extensions"] = tuple(cfg.extensions)
    table, missing = audioset.load_audioset(root, **options)
    return LoadedDataset(table, tuple(missing))


def _folder(cfg: DictConfig, data_dir: Path) -> LoadedDataset:
    from calm.data import folder
    from calm.data.validate import require_root

    csv = cfg.get("csv")
    root = cfg.get("root")
    if root is None and csv is not None and Path(csv).is_absolute():
        root = Path(csv).parent
    table, missing = folder.load_folder(
        require_root(root, "folder", folder.HOW_TO_GET), csv, float(cfg.get("test_fraction", 0.2)),
        int(cfg.get("seed", 0)), tuple(cfg.get("extensions", folder.FOLDER_EXTENSIONS)))
    return LoadedDataset(table, tuple(missing))


def _hf(cfg: DictConfig, data_dir: Path) -> LoadedDataset:
    from calm.data.hf import load_hf

    table, missing = load_hf(
        cfg.get("path") or cfg.get("root"), cfg.get("cache_dir") or Path(data_dir) / "hf", cfg.get("config"),
        cfg.get("train_split", "train"), cfg.get("test_split", "test"), cfg.get("audio_column", "audio"),
        cfg.get("label_column", "label"), float(cfg.get("test_fraction", 0.2)), int(cfg.get("seed", 0)),
        cfg.get("revision"))
    return LoadedDataset(table, tuple(missing))


DATASETS: dict[str, DatasetEntry] = {
    "fsdd": DatasetEntry(
        _fsdd, "Free Spoken Digit Dataset: 10 spoken digits, 8 kHz; test split = recording index 0-4",
        "recordings/{digit}_{speaker}_{index}.wav",
        "https://github.com/Jakobovski/free-spoken-digit-dataset (dataset.download=true fetches it)"),
    "esc50": DatasetEntry(
        _esc50, "ESC-50: 50 environmental sound classes x 40 clips, 5 folds; test fold 1, support from the others",
        "ESC-50-master/audio/*.wav + ESC-50-master/meta/esc50.csv",
        "https://github.com/karoldvl/ESC-50 (python scripts/prepare_esc50.py)"),
    "vggsound": DatasetEntry(
        _vggsound, "VGGSound: 309 classes of YouTube clips (audio, or audio+video from mp4); missing clips reported",
        "vggsound.csv (no header: youtube_id,start_seconds,label,split) + video/{youtube_id}_{start:06d}.mp4|wav|flac",
        "https://www.robots.ox.ac.uk/~vgg/data/vggsound/"),
    "asvspoof2019_la": DatasetEntry(
        _asvspoof, "ASVspoof 2019 LA: bonafide vs spoof speech; support from train, queries from eval (or dev)",
        "LA/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.{train.trn,dev.trl,eval.trl}.txt + "
        "LA/ASVspoof2019_LA_{train,dev,eval}/flac/UTT.flac",
        "https://datashare.ed.ac.uk/handle/10283/3336"),
    "audioset": DatasetEntry(
        _audioset, "AudioSet: 527 classes, multi-label; train segments = support pool, eval segments = queries",
        "class_labels_indices.csv + balanced_train_segments.csv + eval_segments.csv + "
        "audio/**/{YTID}_{start:06d}.wav or {YTID}.wav",
        "https://research.google.com/audioset/download.html"),
    "folder": DatasetEntry(
        _folder, "Your own data: one folder per class, or a CSV of path,label[,split]",
        "<root>/<class>/*.{wav,flac,mp3,ogg}  or  <root>/<csv> with header path,label[,split]",
        "-"),
    "hf": DatasetEntry(
        _hf, "A Hugging Face audio dataset (hub id or local copy) with an audio and a label column",
        "dataset.path = hub id | save_to_disk folder | local dataset folder; audio_column, label_column, splits",
        "https://huggingface.co/datasets"),
}


def read_dataset(cfg: DictConfig, data_dir: str | Path) -> LoadedDataset:
    """Read a dataset's clip table and missing-clip report (metadata only; no audio decoded)."""
    if cfg.name not in DATASETS:
        raise ConfigError(f"unknown dataset {cfg.name!r}", f"choose one of {sorted(DATASETS)}")
    return DATASETS[cfg.name].build(cfg, Path(data_dir))


def warn_missing(cfg: DictConfig, loaded: LoadedDataset) -> None:
    """One warning counting the clips listed in the metadata but absent on disk (left out of the table)."""
    if loaded.missing:
        shown = ", ".join(loaded.missing[:3])
        log.warning(
            "%s: %d clips listed in the metadata are missing on disk and were left out (%s%s); "
            "`python -m calm.data validate %s %s` lists them all",
            cfg.name, len(loaded.missing), shown, ", ..." if len(loaded.missing) > 3 else "", cfg.name,
            cfg.get("root") or "ROOT")


def load_dataset(cfg: DictConfig, data_dir: str | Path) -> ClipTable:
    """The clip table; clips listed but missing on disk are left out with a warning that counts them."""
    loaded = read_dataset(cfg, data_dir)
    warn_missing(cfg, loaded)
    return loaded.table
