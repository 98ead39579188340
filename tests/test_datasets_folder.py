"""`folder`: class sub-folders or a path,label[,split] CSV, any soundfile format, a seeded stable split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from calm.cache import ActivationCache
from calm.data.audio import load_audio, probe_audio
from calm.data.folder import holdout_split, load_folder
from calm.data.registry import read_dataset
from calm.data.table import QUERY_SPLIT, SUPPORT_SPLIT, Clip, ClipTable
from calm.errors import ConfigError, DataError
from calm.testing.smoke_layouts import tone
from tests.cli import dataset_config

FORMATS = [("wav", 16000, 1), ("flac", 22050, 2), ("ogg", 8000, 1), ("mp3", 48000, 2)]


def _class_folders(root: Path, per_class: int = 4) -> Path:
    for name in ("cat", "dog"):
        for i in range(per_class):
            ext, rate, channels = FORMATS[i % len(FORMATS)]
            (root / name).mkdir(parents=True, exist_ok=True)
            sf.write(root / name / f"{name}{i}.{ext}", tone(rate, 0.25, channels=channels), rate)
    (root / "dog" / "notes.txt").write_text("not audio")
    return root


def test_class_folders_in_every_format_decode_to_16k_mono(tmp_path: Path) -> None:
    root = _class_folders(tmp_path / "data")
    loaded = read_dataset(dataset_config("folder", root=str(root), test_fraction=0.25), tmp_path)
    table = loaded.table
    assert table.class_names == ("cat", "dog") and len(table) == 8 and loaded.missing == ()
    assert sorted(c.id for c in table.clips if c.label == 0) == [
        str(root / name) for name in ("cat/cat0.wav", "cat/cat1.flac", "cat/cat2.ogg", "cat/cat3.mp3")
    ]
    assert all(c.id == str(c.audio_path) for c in table.clips)
    assert [sum(c.split == QUERY_SPLIT and c.label == k for c in table.clips) for k in (0, 1)] == [1, 1]
    for clip in table.clips:
        info = probe_audio(clip.audio_path)
        wave = load_audio(clip.audio_path, 16000)
        assert wave.ndim == 1 and abs(len(wave) / 16000 - info.seconds) < 0.06, clip.id
    assert probe_audio(root / "cat" / "cat1.flac").channels == 2


def test_holdout_split_is_seeded_stratified_and_stable_when_files_are_added() -> None:
    ids = {"a": [f"a/{i}" for i in range(10)], "b": [f"b/{i}" for i in range(3)], "c": ["c/0"]}
    test = holdout_split(ids, 0.2, seed=0)
    assert test == holdout_split(ids, 0.2, seed=0)
    assert sum(i.startswith("a/") for i in test) == 2 and sum(i.startswith("b/") for i in test) == 1
    assert "c/0" not in test
    assert any(holdout_split(ids, 0.2, seed=s) != test for s in range(1, 5))
    grown = holdout_split({**ids, "a": [*ids["a"], *(f"a/{i}" for i in range(10, 15))]}, 0.2, seed=0)
    assert {i for i in test if i.startswith("a/")} <= grown
    with pytest.raises(ConfigError, match="test_fraction=1.0"):
        holdout_split(ids, 1.0, seed=0)


def test_two_folders_sharing_a_cache_never_read_each_others_rows(tmp_path: Path) -> None:
    """The same class/file names in two roots are other clips: other ids, and no row read across them."""
    first = load_folder(_class_folders(tmp_path / "first"), test_fraction=0.25)[0]
    second = load_folder(_class_folders(tmp_path / "second"), test_fraction=0.25)[0]
    assert not set(first.ids) & set(second.ids)
    assert [c.split for c in first.clips] == [c.split for c in second.clips], "the split follows the relative paths"
    cache = ActivationCache.open_path(tmp_path / "cache", {"backbone": "any"}, n_heads=1, head_dim=1)
    cache.write(first.ids, np.ones((len(first), 1, 1), dtype=np.float32))
    assert cache.missing(second.ids) == second.ids


def test_csv_with_a_split_column_and_missing_files(tmp_path: Path) -> None:
    _class_folders(tmp_path)
    (tmp_path / "list.csv").write_text(
        "path,label,split\ncat/cat0.wav,cat,train\ndog/dog1.flac,dog,test\ncat/gone.wav,cat,train\n"
        f"{tmp_path / 'dog' / 'dog0.wav'},dog,train\n"
    )
    loaded = read_dataset(dataset_config("folder", root=str(tmp_path), csv="list.csv"), tmp_path)
    assert [(c.id, c.label, c.split) for c in loaded.table.clips] == [
        (str(tmp_path / "cat" / "cat0.wav"), 0, SUPPORT_SPLIT),
        (str(tmp_path / "dog" / "dog1.flac"), 1, QUERY_SPLIT),
        (str(tmp_path / "dog" / "dog0.wav"), 1, SUPPORT_SPLIT),
    ]
    assert loaded.table.clips[0].meta == {"listed_as": "cat/cat0.wav"}
    assert loaded.missing == (str(tmp_path / "cat" / "gone.wav"),)


def test_csv_without_split_column_uses_the_seeded_fraction(tmp_path: Path) -> None:
    _class_folders(tmp_path)
    rows = [f"{n}/{n}{i}.{FORMATS[i][0]},{n}" for n in ("cat", "dog") for i in range(4)]
    (tmp_path / "list.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    table, _ = load_folder(tmp_path, "list.csv", test_fraction=0.5, seed=3)
    assert table.split_mask(QUERY_SPLIT).sum() == 4


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "file,class\ncat/cat0.wav,cat\n",
            r"list.csv line 1: header is 'file,class', expected 'path,label' or "
            r"'path,label,split'",
        ),
        (
            "path,label,split\ncat/cat0.wav,cat,valid\n",
            r"list.csv line 2: split is 'valid', expected train, test or val",
        ),
        (
            "path,label\ncat/cat0.wav,cat\ncat/cat1.flac,cat\ncat/cat0.wav,dog\n",
            r"duplicate clip id 'cat/cat0.wav' in .*list.csv line 4 \(first listed in .*list.csv line 2\)",
        ),
        ("path,label\ncat/cat0.wav\n", r"list.csv line 2: expected 2 fields"),
    ],
)
def test_bad_csv_is_named(tmp_path: Path, body: str, message: str) -> None:
    _class_folders(tmp_path)
    (tmp_path / "list.csv").write_text(body)
    with pytest.raises(DataError, match=message):
        load_folder(tmp_path, "list.csv")


def test_missing_or_empty_root_says_what_layout_is_expected(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"folder root .*nowhere does not exist") as err:
        read_dataset(dataset_config("folder", root=str(tmp_path / "nowhere")), tmp_path)
    assert "root/<class>/*.wav" in str(err.value)
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match="no class folders with"):
        load_folder(tmp_path / "empty")
    with pytest.raises(DataError, match=r"clip list CSV not found: .*missing.csv"):
        load_folder(tmp_path / "empty", "missing.csv")


def test_csv_labels_differing_only_in_case_are_refused_naming_both(tmp_path: Path) -> None:
    """Issue 16 item 3: `D0` and `d0` used to run as two classes."""
    _class_folders(tmp_path)
    (tmp_path / "list.csv").write_text("path,label\ncat/cat0.wav,Cat\ndog/dog0.wav,dog\ncat/cat1.flac,cat\n")
    with pytest.raises(
        DataError,
        match=r"list.csv: class names 'Cat' \(line 2\) and 'cat' \(line 4\) differ only "
        r"in case",
    ) as err:
        load_folder(tmp_path, "list.csv")
    assert "How to fix" in str(err.value)


def test_an_empty_csv_label_is_refused_with_its_line(tmp_path: Path) -> None:
    _class_folders(tmp_path)
    (tmp_path / "list.csv").write_text("path,label\ncat/cat0.wav,cat\ndog/dog0.wav, \ncat/cat1.flac,cat\n")
    with pytest.raises(DataError, match=r"list.csv: the label is empty \(line 3\)"):
        load_folder(tmp_path, "list.csv")


def test_class_folders_differing_only_in_case_are_refused_naming_both(tmp_path: Path) -> None:
    root = _class_folders(tmp_path / "data")
    (root / "Dog").mkdir()
    sf.write(root / "Dog" / "x.wav", tone(16000, 0.05), 16000)
    with pytest.raises(DataError, match=r"'Dog' \(.*data/Dog\) and 'dog' \(.*data/dog\) differ only in case"):
        load_folder(root)


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (("D0", "d0", "d1"), r"class names 'D0' and 'd0' differ only in case"),
        (("", "d1"), r"a class name is empty"),
    ],
)
def test_every_clip_table_refuses_case_only_or_empty_class_names(names: tuple[str, ...], message: str) -> None:
    """The rule's one home is the clip table, so every dataset (esc50, hf, ...) gets it."""
    clips = tuple(
        Clip(id=f"c{i}", audio_path=Path(f"c{i}.wav"), label=i, split=SUPPORT_SPLIT) for i in range(len(names))
    )
    with pytest.raises(DataError, match=message):
        ClipTable("mine", clips, names, source="somewhere")
