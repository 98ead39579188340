"""AudioSet: official segment CSVs (comment header, quoted MID lists), multi-label clips, missing clips."""

from __future__ import annotations

from pathlib import Path

import pytest

from calm.data.audioset import load_audioset
from calm.data.registry import read_dataset
from calm.data.table import QUERY_SPLIT, SUPPORT_SPLIT
from calm.errors import DataError
from calm.testing.smoke_layouts import audioset_segments, make_audioset
from tests.cli import dataset_config

LABELS = [("/m/09x0r", "Speech"), ("/m/0jbk", "Animal"), ("/m/04rlf", "Music")]
TRAIN = [
    ("--PJHxphWEs", 30.0, 40.0, "/m/09x0r,/m/04rlf"),
    ("-0RWZT-miFs", 420.0, 430.0, "/m/0jbk"),
    ("0aQpIWZsXxA", 0.0, 10.0, "/m/04rlf"),
]
EVAL = [("--4gqARaEJE", 0.0, 10.0, "/m/0jbk,/m/09x0r,/m/04rlf"), ("gone1234567", 10.0, 20.0, "/m/09x0r")]
CLIPS = {
    "--PJHxphWEs_000030.flac": "balanced_train",
    "-0RWZT-miFs.flac": "balanced_train",
    "0aQpIWZsXxA_000000.flac": "balanced_train",
    "--4gqARaEJE_000000.flac": "eval",
}


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    return make_audioset(tmp_path / "audioset", LABELS, TRAIN, EVAL, CLIPS)


def test_multi_label_table_from_the_official_files(root: Path, tmp_path: Path) -> None:
    loaded = read_dataset(dataset_config("audioset", root=str(root)), tmp_path)
    table = loaded.table
    assert table.class_names == ("Speech", "Animal", "Music") and table.multi_label
    by_id = {c.id: c for c in table.clips}
    assert set(by_id) == {"--PJHxphWEs_000030", "-0RWZT-miFs_000420", "0aQpIWZsXxA_000000", "--4gqARaEJE_000000"}
    first = by_id["--PJHxphWEs_000030"]
    assert (first.labels, first.label, first.split) == ((0, 2), 0, SUPPORT_SPLIT)
    assert first.meta["mids"] == "/m/09x0r,/m/04rlf" and first.meta["end_seconds"] == "40.000"
    assert by_id["-0RWZT-miFs_000420"].audio_path == root / "audio" / "balanced_train" / "-0RWZT-miFs.flac"
    query = by_id["--4gqARaEJE_000000"]
    assert (query.labels, query.split) == ((1, 0, 2), QUERY_SPLIT)
    assert loaded.missing == (str(root / "audio" / "gone1234567_000010.wav"),)


def test_segment_files_and_clips_folder_are_configurable(root: Path) -> None:
    (root / "eval_only.csv").write_text(audioset_segments(EVAL[:1]))
    table, missing = load_audioset(
        root, train_csv="eval_only.csv", eval_csv="balanced_train_segments.csv", clips_dir=root / "audio" / "eval"
    )
    assert [c.id for c in table.clips if c.split == SUPPORT_SPLIT] == ["--4gqARaEJE_000000"]
    assert len(missing) == 3


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda text: text.replace("# YTID, start_seconds, end_seconds, positive_labels\n", ""),
            r"eval_segments.csv line 3: segment before the header line '# YTID, start_seconds",
        ),
        (
            lambda text: text.replace("/m/0jbk,/m/09x0r", "/m/0jbk,/m/nope"),
            r"eval_segments.csv line 4: label '/m/nope' is not in class_labels_indices.csv",
        ),
        (
            lambda text: text.replace('gone1234567, 10.000, 20.000, "/m/09x0r"', "gone1234567, 10.000"),
            r"eval_segments.csv line 5: expected 4 fields",
        ),
        (
            lambda text: text + '--4gqARaEJE, 0.000, 10.000, "/m/0jbk"\n',
            r"duplicate clip id '--4gqARaEJE_000000' in .*eval_segments.csv line 6 \(first listed in .*line 4\)",
        ),
    ],
)
def test_bad_segment_lines_are_named(root: Path, edit, message: str) -> None:
    segments = root / "eval_segments.csv"
    segments.write_text(edit(segments.read_text()))
    with pytest.raises(DataError, match=message):
        load_audioset(root)


def test_bad_class_list_header_is_named(root: Path) -> None:
    (root / "class_labels_indices.csv").write_text("idx,mid,name\n0,/m/09x0r,Speech\n")
    with pytest.raises(
        DataError,
        match=r"class_labels_indices.csv line 1: header is 'idx,mid,name', "
        r"expected 'index,mid,display_name'",
    ):
        load_audioset(root)


def test_missing_root_or_files_say_how_to_get_the_data(root: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="AudioSet: dataset.root is not set") as err:
        read_dataset(dataset_config("audioset", root=None), tmp_path)
    assert "https://research.google.com/audioset/download.html" in str(err.value)
    (root / "eval_segments.csv").unlink()
    with pytest.raises(DataError, match=r"AudioSet segments file not found: .*eval_segments.csv"):
        load_audioset(root)
