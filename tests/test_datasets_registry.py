"""Every registered dataset has a config that composes, and without data it stops with how to get it."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from calm.data.registry import DATASETS, LoadedDataset, load_dataset, read_dataset
from calm.data.table import Clip, ClipTable
from calm.errors import ConfigError, DataError
from tests.cli import REPO, compose_config

NO_DATA = {
    "esc50": ("ESC-50 not found", "prepare_esc50.py"),
    "vggsound": ("VGGSound: dataset.root is not set", "robots.ox.ac.uk"),
    "asvspoof2019_la": ("ASVspoof 2019 LA: dataset.root is not set", "datashare.ed.ac.uk"),
    "audioset": ("AudioSet: dataset.root is not set", "research.google.com/audioset"),
    "folder": ("folder: dataset.root is not set", "root/<class>/*.wav"),
    "hf": ("hf: dataset.path is not set", "hub id"),
}


def test_every_dataset_has_a_config_file_a_description_and_a_layout() -> None:
    configs = {p.stem for p in (REPO / "configs" / "dataset").glob("*.yaml")}
    assert set(DATASETS) <= configs
    for name, entry in DATASETS.items():
        cfg = OmegaConf.load(REPO / "configs" / "dataset" / f"{name}.yaml")
        assert cfg.name == name and "root" in cfg
        assert entry.description and entry.layout and entry.source


@pytest.mark.parametrize("name", sorted(NO_DATA))
def test_composed_config_without_data_is_a_data_error_saying_how_to_get_it(name: str, tmp_path: Path) -> None:
    cfg = compose_config([f"dataset={name}", f"paths.data_dir={tmp_path / 'data'}"], tmp_path / "out")
    problem, fix = NO_DATA[name]
    with pytest.raises(DataError, match=problem) as err:
        load_dataset(cfg.dataset, cfg.paths.data_dir)
    assert fix in str(err.value)


def test_unknown_dataset(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown dataset 'nope'"):
        read_dataset(OmegaConf.create({"name": "nope"}), tmp_path)


def test_missing_report_is_written_one_path_per_line(tmp_path: Path) -> None:
    table = ClipTable("x", (Clip("a", tmp_path / "a.wav", 0, "train"),), ("c",))
    LoadedDataset(table, ("/d/b.wav", "/d/c.wav")).write_missing(tmp_path / "missing.txt")
    assert (tmp_path / "missing.txt").read_text() == "/d/b.wav\n/d/c.wav\n"
    LoadedDataset(table).write_missing(tmp_path / "none.txt")
    assert not (tmp_path / "none.txt").exists()
