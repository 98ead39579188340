"""Any audio-classification dataset in Hugging Face format, from the hub or a local copy.

`datasets` reads the rows; the audio column is cast to `Audio(decode=False)` so the stored bytes
come back untouched (TorchCodec is never used) and are written once, with their own format, under
a cache folder keyed by the split's fingerprint. The pipeline then reads them as files, decoded
by soundfile like every other dataset. `datasets` is imported only when a split is opened, so
`python -m calm.data ls` and the other datasets never import it.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import soundfile as sf

from calm.data.audio import AUDIO_EXTENSIONS, CONTAINER_EXTENSIONS
from calm.data.dataset import Dataset, LoadedDataset
from calm.data.folder import holdout_split
from calm.data.table import QUERY_SPLIT, SUPPORT_SPLIT, Clip, ClipTable
from calm.errors import ConfigError, DataError
from calm.storage.atomic_write import write_bytes_atomic, write_text_atomic
from calm.storage.digests import text_sha256

if TYPE_CHECKING:
    import datasets

HOW_TO_GET = (
    "set dataset.path to a hub id (e.g. ashraq/esc50), a folder written by save_to_disk, or a local "
    "dataset folder (parquet, audiofolder), and dataset.audio_column / dataset.label_column to its columns"
)
FORMAT_EXTENSIONS = {"WAV": ".wav", "FLAC": ".flac", "OGG": ".ogg", "MP3": ".mp3"}
INDEX_FILE = "files.json"


@dataclass(frozen=True)
class HfDataset(Dataset):
    """`dataset=hf`: `path` (or `root`) is a hub id or a local copy; audio files are written under `cache_dir`."""

    description = "A Hugging Face audio dataset (hub id or local copy) with an audio and a label column"
    layout = "dataset.path = hub id | save_to_disk folder | local dataset folder; audio_column, label_column, splits"
    source = "https://huggingface.co/datasets"

    name: str
    path: str | None
    root: str | None
    config: str | None
    revision: str | None
    train_split: str
    test_split: str | None
    test_fraction: float
    seed: int
    audio_column: str
    label_column: str
    cache_dir: str | None

    def load(self, data_dir: Path) -> LoadedDataset:
        table, missing = load_hf(
            self.path or self.root,
            self.cache_dir or Path(data_dir) / "hf",
            self.config,
            self.train_split,
            self.test_split,
            self.audio_column,
            self.label_column,
            float(self.test_fraction),
            int(self.seed),
            self.revision,
        )
        return LoadedDataset(table, tuple(missing))


def load_hf(
    path: str | None,
    cache_dir: str | Path,
    config: str | None = None,
    train_split: str = "train",
    test_split: str | None = "test",
    audio_column: str = "audio",
    label_column: str = "label",
    test_fraction: float = 0.2,
    seed: int = 0,
    revision: str | None = None,
) -> tuple[ClipTable, list[str]]:
    """The clip table (ids `<dataset>/<split>/<row>`, see `dataset_tag`) and the rows that carry no audio.

    With `test_split` unset, a seeded `test_fraction` of each class of `train_split` becomes the test
    pool, drawn by `<split>/<row>` so the split does not depend on where the dataset lives.
    """
    if path is None:
        raise DataError("hf: dataset.path is not set", HOW_TO_GET)
    if test_split == train_split:
        raise ConfigError(
            f"dataset.train_split and dataset.test_split are both {train_split!r}",
            "set dataset.test_split=null to hold out dataset.test_fraction of it instead",
        )
    wanted = [train_split] if test_split is None else [train_split, test_split]
    splits = {s: _open_split(path, config, s, revision, Path(cache_dir)) for s in wanted}
    for split, ds in splits.items():
        _check_columns(ds, split, audio_column, label_column)
    names, label_of = _label_names(splits, label_column)
    tag = dataset_tag(path, config, revision)
    clips, missing = [], []
    for split, ds in splits.items():
        files = _materialise(ds, split, audio_column, Path(cache_dir) / _fingerprint(path, config, revision, split, ds))
        labels = list(ds[label_column])
        for index, audio in enumerate(files):
            cid = f"{tag}/{split}/{index}"
            if audio is None:
                missing.append(cid)
                continue
            if labels[index] is None or labels[index] == -1:
                raise DataError(
                    f"hf: row {index} of split {split!r} of {path} has no label",
                    "choose splits whose rows are all labelled (hidden test labels cannot be used)",
                )
            clips.append((cid, f"{split}/{index}", audio, label_of[labels[index]], split))
    held_out: set[str] = set()
    if test_split is None:
        by_class: dict[str, list[str]] = {}
        for _, row, _, label, _ in clips:
            by_class.setdefault(str(label), []).append(row)
        held_out = holdout_split(by_class, test_fraction, seed)
    table = tuple(
        Clip(
            id=cid,
            audio_path=audio,
            label=label,
            split=QUERY_SPLIT if split == test_split or row in held_out else SUPPORT_SPLIT,
            meta={"hf_split": split, "hf_row": row},
        )
        for cid, row, audio, label, split in clips
    )
    return ClipTable("hf", table, names, source=tag), missing


def dataset_tag(path: str, config: str | None, revision: str | None) -> str:
    """Names the dataset in its clip ids: the hub id or the local folder's absolute path, with the config
    (`:config`) and revision (`@revision`). Ids name rows of caches that every dataset shares, so
    `train/0` alone would let two datasets read each other's activations and answers."""
    local = Path(path).expanduser()
    name = os.path.abspath(local) if local.exists() else path
    return name + (f":{config}" if config else "") + (f"@{revision}" if revision else "")


def _open_split(path: str, config: str | None, split: str, revision: str | None, cache_dir: Path) -> datasets.Dataset:
    """One split from a `save_to_disk` folder, a local dataset folder, or the hub."""
    import datasets

    local = Path(path).expanduser()
    try:
        if (local / "dataset_dict.json").is_file() or (local / "state.json").is_file():
            saved = datasets.load_from_disk(str(local))
            if isinstance(saved, datasets.Dataset):
                saved = datasets.DatasetDict({"train": saved})
            if split not in saved:
                raise DataError(
                    f"hf: {local} has no split {split!r} (it has {sorted(saved)})",
                    "set dataset.train_split / dataset.test_split to existing splits",
                )
            return saved[split]
        if path.startswith((".", "/", "~")) and not local.exists():
            raise DataError(f"hf: dataset folder {local} does not exist", HOW_TO_GET)
        return datasets.load_dataset(
            path, config, split=split, revision=revision, cache_dir=str(cache_dir / "datasets")
        )
    except DataError:
        raise
    except Exception as err:  # datasets raises many types (hub, file, split, config errors)
        raise DataError(
            f"hf: cannot load split {split!r} of {path!r}: {type(err).__name__}: {err}", HOW_TO_GET
        ) from err


def _check_columns(ds: datasets.Dataset, split: str, audio_column: str, label_column: str) -> None:
    import datasets

    for key, column in (("audio_column", audio_column), ("label_column", label_column)):
        if column not in ds.column_names:
            raise ConfigError(
                f"hf: split {split!r} has no column {column!r}", f"set dataset.{key} to one of {ds.column_names}"
            )
    if not isinstance(ds.features[audio_column], datasets.Audio):
        raise ConfigError(
            f"hf: column {audio_column!r} is {ds.features[audio_column]}, not an Audio feature",
            "set dataset.audio_column to the dataset's audio column",
        )


def _label_names(splits: dict[str, datasets.Dataset], label_column: str) -> tuple[tuple[str, ...], dict]:
    """Class names from the ClassLabel feature, else the sorted distinct values of the label column."""
    import datasets

    feature = next(iter(splits.values())).features[label_column]
    if isinstance(feature, datasets.ClassLabel):
        return tuple(feature.names), {i: i for i in range(len(feature.names))}
    values = sorted(
        {v for ds in splits.values() for v in ds[label_column] if v is not None}, key=lambda v: (isinstance(v, str), v)
    )
    return tuple(str(v) for v in values), {v: i for i, v in enumerate(values)}


def _fingerprint(path: str, config: str | None, revision: str | None, split: str, ds: datasets.Dataset) -> str:
    """Names the cache folder: changes when the split's content (its `datasets` fingerprint) changes."""
    text = json.dumps([path, config, revision, split, ds._fingerprint])
    return text_sha256(text, 16)


def _materialise(ds: datasets.Dataset, split: str, audio_column: str, folder: Path) -> list[Path | None]:
    """One file per row (None for a row with no audio); the file list is kept so reloads skip the bytes."""
    import datasets

    index = folder / INDEX_FILE
    if index.is_file():
        return [None if name is None else folder / name for name in json.loads(index.read_text())]
    folder.mkdir(parents=True, exist_ok=True)
    raw = ds.select_columns([audio_column]).cast_column(audio_column, datasets.Audio(decode=False))
    names: list[str | None] = []
    for batch in raw.iter(batch_size=64):
        for audio in batch[audio_column]:
            names.append(_write_row(audio, folder, len(names)))
    write_text_atomic(index, json.dumps(names))
    return [None if name is None else folder / name for name in names]


def _write_row(audio: dict | None, folder: Path, row: int) -> str | None:
    """Write a row's bytes as `<row><ext>`, or point at the local file the row names."""
    if not audio or not audio.get("bytes"):
        source = Path(audio["path"]) if audio and audio.get("path") else None
        return str(source.resolve()) if source is not None and source.is_file() else None
    data = audio["bytes"]
    target = folder / f"{row}{_extension(audio.get('path'), data)}"
    write_bytes_atomic(target, data, durable=False)  # a unique temporary name each: concurrent writers never collide
    return target.name


def _extension(original: str | None, data: bytes) -> str:
    """The original file's extension, else the format soundfile reads from the header."""
    suffix = Path(original).suffix.lower() if original else ""
    if suffix in AUDIO_EXTENSIONS or suffix in CONTAINER_EXTENSIONS:
        return suffix
    try:
        return FORMAT_EXTENSIONS.get(sf.info(io.BytesIO(data)).format, ".bin")
    except (sf.LibsndfileError, RuntimeError):
        return ".bin"
