"""`python -m calm.data ls / validate`: counts, missing and undecodable files, JSON, and no model import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from calm.data.__main__ import main
from calm.testing.smoke_layouts import esc50_rows, make_esc50, make_vggsound
from tests.cli import REPO

FOLD2 = [row[0] for row in esc50_rows() if row[1] == 2]


@pytest.fixture(scope="module")
def esc50_parent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    parent = tmp_path_factory.mktemp("esc50")
    base = make_esc50(parent, skip=FOLD2[:2])
    (base / "audio" / FOLD2[2]).write_bytes(b"RIFF\x00\x00 truncated")
    return parent


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "calm.data", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_validate_json_reports_esc50_per_fold_class_missing_and_undecodable_without_a_model(esc50_parent: Path) -> None:
    result = _cli("validate", "esc50", str(esc50_parent), "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    base = esc50_parent / "ESC-50-master"
    assert (report["dataset"], report["clips"], report["classes"]) == ("esc50", 1998, 50)
    assert report["per_split"] == {
        "test": 400,
        "train": 1598,
        "fold1": 400,
        "fold2": 398,
        "fold3": 400,
        "fold4": 400,
        "fold5": 400,
    }
    assert len(report["per_class"]) == 50 and sum(report["per_class"].values()) == 1998
    assert report["per_class"]["dog"] == 38 and report["per_class"]["cat"] == 40
    assert sorted(report["missing"]) == sorted(str(base / "audio" / name) for name in FOLD2[:2])
    assert report["undecodable"] == [str(base / "audio" / FOLD2[2])]
    assert report["per_split_class"]["test"]["dog"] == 8
    imported = {
        line.rsplit("|", 1)[-1].strip().split(".")[0]
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "calm" in imported and "soundfile" in imported
    assert not imported & {"transformers", "pytorch_lightning", "lightning", "wandb", "torchcodec", "datasets"}


def test_missing_root_exits_non_zero_with_the_data_error(tmp_path: Path) -> None:
    result = _cli("validate", "esc50", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert "ESC-50 root" in result.stderr and "does not exist" in result.stderr
    assert "python scripts/prepare_esc50.py" in result.stderr and result.stdout == ""


def test_validate_table_lists_counts_and_problems(esc50_parent: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "esc50", str(esc50_parent), "--set", "test_fold=2"]) == 0
    out = capsys.readouterr().out
    assert "1998 clips, 50 classes (test: 398, train: 1600, fold1: 400, fold2: 398" in out
    assert "missing: 2" in out and "undecodable: 1" in out and FOLD2[2] in out
    assert "chainsaw" in out
    assert main(["validate", "esc50", str(esc50_parent), "--strict", "--no-probe"]) == 1
    capsys.readouterr()


def test_validate_vggsound_probes_mp4_and_counts_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [("aaa", 1, "dog", "train"), ("bbb", 2, "cat", "test"), ("ccc", 3, "cat", "train")]
    make_vggsound(tmp_path, rows, {"aaa_000001": "mp4", "bbb_000002": "wav"})
    assert main(["validate", "vggsound", str(tmp_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["per_class"] == {"cat": 1, "dog": 1} and report["per_split"] == {"test": 1, "train": 1}
    assert report["missing"] == [str(tmp_path / "video" / "ccc_000003.mp4")] and report["undecodable"] == []
    assert main(["validate", "vggsound", str(tmp_path), "--set", "clips_dir=elsewhere"]) == 2
    assert "clips folder" in capsys.readouterr().err


def test_unknown_setting_or_dataset_is_a_clear_error(esc50_parent: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "esc50", str(esc50_parent), "--set", "tset_fold=2"]) == 2
    assert "use keys of configs/dataset/esc50.yaml" in capsys.readouterr().err
    assert main(["validate", "nope", str(esc50_parent)]) == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err


def test_ls_lists_every_dataset_with_its_layout(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    for name in ("fsdd", "esc50", "vggsound", "asvspoof2019_la", "audioset", "folder", "hf"):
        assert f"│ {name}" in out
    assert "vggsound.csv" in out and "class_labels_indices.csv" in out
