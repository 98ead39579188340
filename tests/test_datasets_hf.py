"""`hf`: a dataset written by `datasets` in the test, read back with the audio bytes decoded by soundfile."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
from omegaconf import DictConfig

from calm.cache import ActivationCache
from calm.data.audio import load_audio, probe_audio
from calm.data.hf import dataset_tag, load_hf
from calm.data.registry import read_dataset
from calm.data.table import QUERY_SPLIT, SUPPORT_SPLIT
from calm.errors import CacheError, ConfigError, DataError
from calm.testing.smoke_layouts import audio_bytes
from tests.cli import dataset_config

STORED = datasets.Features(
    {
        "audio": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")},
        "label": datasets.ClassLabel(names=["yes", "no", "maybe"]),
    }
)


def _split(rows: list[tuple[bytes, str | None, int]], features: datasets.Features = STORED) -> datasets.Dataset:
    """Rows of (bytes, original name, label) as a dataset whose audio column is an Audio feature.

    Built through a plain struct and cast, which is how `datasets` stores audio without encoding it.
    """
    ds = datasets.Dataset.from_dict(
        {"audio": [{"bytes": b, "path": p} for b, p, _ in rows], "label": [y for *_, y in rows]}, features=features
    )
    return ds.cast_column("audio", datasets.Audio())


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hf") / "saved"
    train = _split(
        [
            (audio_bytes(16000, 0.1), "a.wav", 0),
            (audio_bytes(22050, 0.2, "FLAC", channels=2), None, 1),
            (audio_bytes(8000, 0.3, "OGG"), "c.ogg", 2),
            (audio_bytes(44100, 0.1), "d.wav", 0),
        ]
    )
    test = _split([(audio_bytes(16000, 0.15), "e.wav", 1), (audio_bytes(11025, 0.1, "FLAC"), "f.flac", 2)])
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(folder))
    return folder


def _cfg(path: Path | str | None, cache: Path, **options) -> DictConfig:
    return dataset_config("hf", path=None if path is None else str(path), cache_dir=str(cache), **options)


def test_saved_dataset_is_read_with_class_names_and_bytes_written_as_files(saved: Path, tmp_path: Path) -> None:
    loaded = read_dataset(_cfg(saved, tmp_path / "cache"), tmp_path)
    table = loaded.table
    assert table.class_names == ("yes", "no", "maybe") and loaded.missing == ()
    assert table.ids == [f"{saved}/{row}" for row in ("train/0", "train/1", "train/2", "train/3", "test/0", "test/1")]
    assert table.source == str(saved) and table.clips[4].meta == {"hf_split": "test", "hf_row": "test/0"}
    assert [c.split for c in table.clips] == [SUPPORT_SPLIT] * 4 + [QUERY_SPLIT] * 2
    assert table.labels.tolist() == [0, 1, 2, 0, 1, 2]
    assert [c.audio_path.suffix for c in table.clips] == [".wav", ".flac", ".ogg", ".wav", ".wav", ".flac"]
    assert all(c.audio_path.is_relative_to(tmp_path / "cache") for c in table.clips)
    stereo = table.clips[1].audio_path
    assert (probe_audio(stereo).sample_rate, probe_audio(stereo).channels) == (22050, 2)
    assert load_audio(stereo, 16000).shape == (3200,)
    assert load_audio(table.clips[2].audio_path, 16000).shape == (4800,)
    assert "torchcodec" not in sys.modules


def test_second_load_reuses_the_written_files(saved: Path, tmp_path: Path) -> None:
    first = load_hf(str(saved), tmp_path / "cache")[0]
    stamps = [c.audio_path.stat().st_mtime_ns for c in first.clips]
    second = load_hf(str(saved), tmp_path / "cache")[0]
    assert second == first
    assert [c.audio_path.stat().st_mtime_ns for c in second.clips] == stamps


def test_plain_labels_and_a_held_out_fraction_from_a_local_parquet_folder(tmp_path: Path) -> None:
    features = datasets.Features({"audio": STORED["audio"], "label": datasets.Value("string")})
    rows = [(audio_bytes(16000, 0.05, freq=300 + 50 * i), f"{i}.wav", "bird" if i % 2 else "car") for i in range(8)]
    folder = tmp_path / "local"
    folder.mkdir()
    _split(rows, features).rename_column("label", "kind").to_parquet(str(folder / "train.parquet"))
    table, _ = load_hf(str(folder), tmp_path / "cache", test_split=None, label_column="kind", test_fraction=0.25)
    assert table.class_names == ("bird", "car")
    assert np.bincount(table.labels).tolist() == [4, 4]
    assert [sum(c.split == QUERY_SPLIT and c.label == k for c in table.clips) for k in (0, 1)] == [1, 1]
    assert load_audio(table.clips[0].audio_path, 16000).shape == (800,)
    shutil.copytree(folder, tmp_path / "moved")
    moved, _ = load_hf(
        str(tmp_path / "moved"), tmp_path / "cache", test_split=None, label_column="kind", test_fraction=0.25
    )
    assert not set(moved.ids) & set(table.ids)
    assert [(c.meta["hf_row"], c.split) for c in moved.clips] == [(c.meta["hf_row"], c.split) for c in table.clips], (
        "the held-out rows do not depend on where the dataset lives"
    )


def test_ids_name_the_dataset_its_config_and_revision(tmp_path: Path) -> None:
    assert dataset_tag("ashraq/esc50", None, None) == "ashraq/esc50"
    assert dataset_tag("org/speech", "clean", "abc123") == "org/speech:clean@abc123"
    assert dataset_tag(str(tmp_path), None, None) == str(tmp_path)


def test_two_datasets_sharing_a_cache_never_read_each_others_rows(tmp_path: Path) -> None:
    """Same splits, same row numbers, other audio: the ids differ, so neither dataset finds the other's rows."""
    tables = []
    for name, freq in (("low", 300.0), ("high", 900.0)):
        rows = [(audio_bytes(16000, 0.1, freq=freq + i), f"{i}.wav", i % 3) for i in range(3)]
        datasets.DatasetDict({"train": _split(rows), "test": _split(rows)}).save_to_disk(str(tmp_path / name))
        tables.append(load_hf(str(tmp_path / name), tmp_path / "hf")[0])
    low, high = tables
    assert not set(low.ids) & set(high.ids)
    cache = ActivationCache.open_path(tmp_path / "cache", {"backbone": "any"}, n_heads=1, head_dim=1)
    cache.write(low.ids, np.arange(len(low), dtype=np.float32).reshape(-1, 1, 1))
    assert cache.missing(high.ids) == high.ids
    with pytest.raises(CacheError, match="no cached activations"):
        cache.read(high.ids)
    cache.write(high.ids, -np.ones((len(high), 1, 1), dtype=np.float32))
    assert cache.read(low.ids).flatten().tolist() == list(range(len(low)))
    assert cache.read(high.ids).flatten().tolist() == [-1.0] * len(high)


def test_wrong_columns_splits_or_paths_are_clear_errors(saved: Path, tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"no column 'sound'.*\n.*dataset.audio_column to one of \['audio', 'label'\]"
    ):
        load_hf(str(saved), tmp_path, audio_column="sound")
    with pytest.raises(ConfigError, match="column 'label' is ClassLabel"):
        load_hf(str(saved), tmp_path, audio_column="label")
    with pytest.raises(DataError, match=r"has no split 'validation' \(it has \['test', 'train'\]\)"):
        load_hf(str(saved), tmp_path, test_split="validation")
    with pytest.raises(ConfigError, match="both 'train'"):
        load_hf(str(saved), tmp_path, test_split="train")
    with pytest.raises(DataError, match="hf: dataset.path is not set") as err:
        read_dataset(_cfg(None, tmp_path), tmp_path)
    assert "hub id" in str(err.value)
    with pytest.raises(DataError, match=r"hf: dataset folder .*nowhere does not exist"):
        load_hf(str(tmp_path / "nowhere"), tmp_path)
