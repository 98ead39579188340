"""Every file in configs/dataset names a dataset class in `_target_`; a config that composes without
data stops with how to get it, and an unknown name or a bad target is a ConfigError naming the fix."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from calm.data.dataset import Dataset
from calm.data.registry import LoadedDataset, dataset_classes, load_dataset, read_dataset
from calm.data.table import Clip, ClipTable
from calm.errors import ConfigError, DataError
from tests.cli import REPO, compose_config, dataset_config

NO_DATA = {
    "esc50": ("ESC-50 not found", "prepare_esc50.py"),
    "vggsound": ("VGGSound: dataset.root is not set", "robots.ox.ac.uk"),
    "asvspoof2019_la": ("ASVspoof 2019 LA: dataset.root is not set", "datashare.ed.ac.uk"),
    "audioset": ("AudioSet: dataset.root is not set", "research.google.com/audioset"),
    "folder": ("folder: dataset.root is not set", "root/<class>/*.wav"),
    "hf": ("hf: dataset.path is not set", "hub id"),
}


def test_every_dataset_config_names_a_dataset_class_whose_fields_are_its_keys() -> None:
    """The YAML is the one home of the defaults: its keys are exactly the class's fields, none defaulted."""
    classes = dict(dataset_classes())
    assert set(classes) == {p.stem for p in (REPO / "configs" / "dataset").glob("*.yaml")}
    for name, cls in classes.items():
        cfg = OmegaConf.load(REPO / "configs" / "dataset" / f"{name}.yaml")
        assert cfg.name == name and "root" in cfg and issubclass(cls, Dataset)
        fields = dataclasses.fields(cls)
        assert {f.name for f in fields} == set(cfg) - {"_target_"}, name
        assert all(f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING for f in fields)
        assert cls.description and cls.layout and cls.source


def test_ls_lists_every_config_without_importing_datasets() -> None:
    code = (
        "import sys; from calm.data.__main__ import main; main(['ls']); "
        "assert 'datasets' not in sys.modules, 'ls imported the datasets library'"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "300"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("asvspoof2019_la", "audioset", "esc50", "folder", "fsdd", "hf", "vggsound"):
        assert name in done.stdout
    assert "Free Spoken Digit Dataset" in done.stdout and "huggingface.co/datasets" in done.stdout


@pytest.mark.parametrize("name", sorted(NO_DATA))
def test_composed_config_without_data_is_a_data_error_saying_how_to_get_it(name: str, tmp_path: Path) -> None:
    cfg = compose_config([f"dataset={name}", f"paths.data_dir={tmp_path / 'data'}"], tmp_path / "out")
    problem, fix = NO_DATA[name]
    with pytest.raises(DataError, match=problem) as err:
        load_dataset(cfg.dataset, cfg.paths.data_dir)
    assert fix in str(err.value)


def test_unknown_dataset(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown dataset 'nope'") as err:
        read_dataset(OmegaConf.create({"name": "nope"}), tmp_path)
    assert "configs/dataset/nope.yaml" in err.value.fix and "'esc50'" in err.value.fix


@pytest.mark.parametrize(
    ("change", "problem", "fix"),
    [
        ({"_target_": None}, "has no _target_", "configs/dataset/esc50.yaml"),
        ({"_target_": "calm.data.esc50.Nope"}, "cannot be imported", "dotted path of an existing class"),
        ({"_target_": "calm.data.table.ClipTable"}, "is not a calm.data.dataset.Dataset", "subclass of Dataset"),
        ({"name": "fsdd"}, "is the dataset of configs/dataset/fsdd.yaml", "dataset=fsdd"),
        ({"test_fold": None, "fold": 2}, "has no setting(s) ['fold']", "'test_fold'"),
    ],
    ids=["no-target", "unimportable", "not-a-dataset", "name-of-another-dataset", "unknown-key"],
)
def test_bad_dataset_configs_are_config_errors_naming_the_fix(
    change: dict, problem: str, fix: str, tmp_path: Path
) -> None:
    cfg = dataset_config("esc50", **{k: v for k, v in change.items() if v is not None})
    for key in (k for k, v in change.items() if v is None):
        del cfg[key]
    with pytest.raises(ConfigError) as err:
        read_dataset(cfg, tmp_path)
    assert problem in err.value.problem and fix in err.value.fix


def test_a_config_lacking_a_key_says_to_compose_it(tmp_path: Path) -> None:
    cfg = OmegaConf.create({"_target_": "calm.data.esc50.Esc50", "name": "esc50", "root": str(tmp_path)})
    with pytest.raises(ConfigError, match=r"lacks the setting\(s\) \['esc10', 'test_fold'\]"):
        read_dataset(cfg, tmp_path)


def test_missing_report_is_written_one_path_per_line(tmp_path: Path) -> None:
    table = ClipTable("x", (Clip("a", tmp_path / "a.wav", 0, "train"),), ("c",))
    LoadedDataset(table, ("/d/b.wav", "/d/c.wav")).write_missing(tmp_path / "missing.txt")
    assert (tmp_path / "missing.txt").read_text() == "/d/b.wav\n/d/c.wav\n"
    LoadedDataset(table).write_missing(tmp_path / "none.txt")
    assert not (tmp_path / "none.txt").exists()
