"""Issue 10 case 9: every path a metadata file names stays under the dataset root; the folder loader
follows no symlink that leaves or loops the root; a folder CSV reaches outside only when asked to."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import soundfile as sf

from calm.data.registry import read_dataset
from calm.errors import DataError
from calm.testing.smoke_layouts import (
    audio_bytes,
    esc50_rows,
    make_asvspoof,
    make_audioset,
    make_esc50,
    make_vggsound,
    tone,
)
from tests.cli import dataset_config

OUTSIDE = "outside the dataset root"


def _read(name: str, tmp_path: Path, **settings):
    return read_dataset(dataset_config(name, **settings), tmp_path)


def test_an_asvspoof_protocol_line_cannot_reach_outside_the_root(tmp_path: Path) -> None:
    """The line's name matches a file of flac/, but its path climbs out of the root to another file."""
    (tmp_path / "outside").mkdir()
    escape = "../../../../outside/LA_T_0"
    partitions = {
        "train": ["LA_0079 LA_T_1 - - bonafide", f"LA_0079 {escape} - A01 spoof"],
        "eval": ["LA_0039 LA_E_1 - - bonafide", "LA_0039 LA_E_2 - A11 spoof"],
    }
    la = make_asvspoof(tmp_path / "ds", partitions)
    assert (tmp_path / "outside" / "LA_T_0.flac").is_file()
    (la / "ASVspoof2019_LA_train" / "flac" / "LA_T_0.flac").write_bytes(audio_bytes(16000, 0.05, "FLAC"))
    with pytest.raises(DataError, match=rf"train.trn.txt line 2: .*{escape}.* {OUTSIDE}") as err:
        _read("asvspoof2019_la", tmp_path, root=str(tmp_path / "ds"))
    assert "How to fix" in str(err.value)


def test_an_esc50_filename_cannot_reach_outside_the_root(tmp_path: Path) -> None:
    rows = esc50_rows(classes=2, per_class=5)
    base = make_esc50(tmp_path / "ds", rows)
    (tmp_path / "secret.wav").write_bytes(audio_bytes(44100, 0.01))
    meta = base / "meta" / "esc50.csv"
    meta.write_text(meta.read_text().replace(rows[0][0], "../../../secret.wav", 1))
    with pytest.raises(DataError, match=rf"esc50.csv line 2: .*secret.wav.* {OUTSIDE}"):
        _read("esc50", tmp_path, root=str(tmp_path / "ds"))


def test_a_vggsound_id_cannot_reach_outside_the_root(tmp_path: Path) -> None:
    rows = [("abc", 30, "dog", "train"), ("../../evil", 30, "dog", "test")]
    root = make_vggsound(tmp_path / "vgg", rows, {"abc_000030": "wav"})
    with pytest.raises(DataError, match=rf"vggsound.csv line 2: .*evil.* {OUTSIDE}"):
        _read("vggsound", tmp_path, root=str(root))


def test_an_audioset_id_cannot_reach_outside_the_root(tmp_path: Path) -> None:
    labels = [("/m/09x0r", "Speech"), ("/m/0jbk", "Animal")]
    root = make_audioset(
        tmp_path / "as",
        labels,
        [("aaa", 0.0, 10.0, "/m/09x0r")],
        [("../../../evil", 0.0, 10.0, "/m/0jbk")],
        {"aaa_000000.flac": "x"},
    )
    with pytest.raises(DataError, match=rf"eval_segments.csv line 4: .*evil.* {OUTSIDE}"):
        _read("audioset", tmp_path, root=str(root))


def _classes(root: Path, names: tuple[str, ...] = ("cat", "dog"), per_class: int = 3) -> Path:
    for name in names:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            sf.write(root / name / f"{name}{i}.wav", tone(16000, 0.05), 16000)
    return root


def test_a_symlink_to_the_root_is_not_a_class(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = _classes(tmp_path / "data")
    os.symlink(".", root / "all")
    os.symlink("..", root / "cat" / "up")
    with caplog.at_level(logging.WARNING):
        table = _read("folder", tmp_path, root=str(root)).table
    assert table.class_names == ("cat", "dog") and len(table) == 6
    assert "all" in caplog.text and "loops" in caplog.text


def test_a_symlink_leaving_the_root_is_refused_unless_allowed(tmp_path: Path) -> None:
    root = _classes(tmp_path / "data")
    _classes(tmp_path / "elsewhere", names=("bird",))
    os.symlink(tmp_path / "elsewhere" / "bird", root / "bird")
    with pytest.raises(DataError, match=rf"{root / 'bird'} .*{OUTSIDE}") as err:
        _read("folder", tmp_path, root=str(root))
    assert "dataset.allow_outside_root=true" in str(err.value)
    table = _read("folder", tmp_path, root=str(root), allow_outside_root=True).table
    assert table.class_names == ("bird", "cat", "dog") and len(table) == 9


@pytest.mark.parametrize("listed", ["../elsewhere/bird/bird0.wav", "{tmp}/elsewhere/bird/bird0.wav"])
def test_a_csv_path_outside_the_root_needs_the_opt_in(tmp_path: Path, listed: str) -> None:
    root = _classes(tmp_path / "data")
    _classes(tmp_path / "elsewhere", names=("bird",))
    listed = listed.format(tmp=tmp_path)
    (root / "list.csv").write_text(f"path,label\ncat/cat0.wav,cat\ncat/cat1.wav,cat\n{listed},bird\ndog/dog0.wav,dog\n")
    with pytest.raises(DataError, match=rf"list.csv line 4: .*bird0.wav.* {OUTSIDE}") as err:
        _read("folder", tmp_path, root=str(root), csv="list.csv")
    assert "dataset.allow_outside_root=true" in str(err.value)
    table = _read("folder", tmp_path, root=str(root), csv="list.csv", allow_outside_root=True).table
    assert str(tmp_path / "elsewhere" / "bird" / "bird0.wav") in table.ids


def test_a_csv_path_inside_the_root_may_be_absolute(tmp_path: Path) -> None:
    root = _classes(tmp_path / "data")
    (root / "list.csv").write_text(f"path,label\n{root / 'cat' / 'cat0.wav'},cat\ndog/dog0.wav,dog\n")
    assert len(_read("folder", tmp_path, root=str(root), csv="list.csv").table) == 2


@pytest.mark.parametrize("link", ["folder", "file"])
def test_a_csv_row_through_a_symlink_out_of_the_root_is_refused_unless_allowed(tmp_path: Path, link: str) -> None:
    """Issue 16 item 2: the row is written inside the root, but a link on its way leads out of it."""
    root = _classes(tmp_path / "data")
    _classes(tmp_path / "elsewhere", names=("bird",))
    if link == "folder":
        os.symlink(tmp_path / "elsewhere" / "bird", root / "bird")
        listed = "bird/bird0.wav"
    else:
        os.symlink(tmp_path / "elsewhere" / "bird" / "bird0.wav", root / "cat" / "bird0.wav")
        listed = "cat/bird0.wav"
    (root / "list.csv").write_text(f"path,label\ncat/cat0.wav,cat\n{listed},bird\ndog/dog0.wav,dog\n")
    with pytest.raises(DataError, match=rf"list.csv line 3: the symlink .* leads to .*elsewhere.* {OUTSIDE}") as err:
        _read("folder", tmp_path, root=str(root), csv="list.csv")
    assert "dataset.allow_outside_root=true" in str(err.value)
    table = _read("folder", tmp_path, root=str(root), csv="list.csv", allow_outside_root=True).table
    assert len(table) == 3


def test_a_csv_row_through_a_looping_folder_link_is_refused(tmp_path: Path) -> None:
    """`clips/again -> .` makes every clip reachable under endless names: refused like the folder walk does."""
    root = _classes(tmp_path / "data")
    os.symlink(".", root / "cat" / "again")
    (root / "list.csv").write_text("path,label\ncat/again/cat0.wav,cat\ndog/dog0.wav,dog\n")
    for allow in (False, True):
        with pytest.raises(
            DataError,
            match=r"list.csv line 2: the symlink .*again points back into a folder "
            r"that holds it",
        ) as err:
            _read("folder", tmp_path, root=str(root), csv="list.csv", allow_outside_root=allow)
        assert "How to fix" in str(err.value)


@pytest.mark.parametrize("second", ["cat/./cat0.wav", "dog/copy.wav"])
def test_two_csv_rows_reaching_one_file_are_refused_naming_both_rows(tmp_path: Path, second: str) -> None:
    """One file listed twice could be a support clip and a query at once (identical audio on both sides)."""
    root = _classes(tmp_path / "data")
    os.symlink("../cat/cat0.wav", root / "dog" / "copy.wav")
    (root / "list.csv").write_text(
        f"path,label,split\ncat/cat0.wav,cat,test\ndog/dog0.wav,dog,test\n{second},dog,train\n"
    )
    with pytest.raises(
        DataError,
        match=r"list.csv line 2 \('cat/cat0.wav'\) and .*list.csv line 4 .*reach the same "
        r"file .*cat0.wav",
    ):
        _read("folder", tmp_path, root=str(root), csv="list.csv")


def test_two_class_folder_files_reaching_one_file_are_refused(tmp_path: Path) -> None:
    root = _classes(tmp_path / "data")
    os.symlink("../cat/cat0.wav", root / "dog" / "also_cat0.wav")
    with pytest.raises(DataError, match=r"cat/cat0.wav and .*dog/also_cat0.wav reach the same file"):
        _read("folder", tmp_path, root=str(root))
