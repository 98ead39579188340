"""ESC-50: the official metadata and folder layout, its folds, bad input, and scripts/prepare_esc50.py."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from omegaconf import DictConfig, OmegaConf

from calm.data.audio import load_audio, probe_audio
from calm.data.esc50 import load_esc50, resolve_root
from calm.data.registry import read_dataset
from calm.data.table import QUERY_SPLIT, SUPPORT_SPLIT
from calm.errors import ConfigError, DataError
from calm.testing.smoke_layouts import ESC10, ESC50_CATEGORIES, ESC50_HEADER, esc50_rows, make_esc50
from tests.cli import dataset_config
from tests.test_fsdd import _serve

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "prepare_esc50.py"


@pytest.fixture(scope="module")
def esc50_parent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    parent = tmp_path_factory.mktemp("esc50")
    make_esc50(parent)
    return parent


def _cfg(root: Path | None, **options) -> DictConfig:
    return dataset_config("esc50", root=None if root is None else str(root), **options)


def test_official_metadata_gives_50_classes_of_40_in_folds_of_400(esc50_parent: Path, tmp_path: Path) -> None:
    loaded = read_dataset(_cfg(esc50_parent), tmp_path)
    table = loaded.table
    assert loaded.missing == ()
    assert len(table) == 2000 and table.class_names == ESC50_CATEGORIES
    assert np.bincount(table.labels).tolist() == [40] * 50
    folds = [c.meta["fold"] for c in table.clips]
    assert {f: folds.count(f) for f in set(folds)} == {str(f): 400 for f in range(1, 6)}
    assert table.split_mask(QUERY_SPLIT).sum() == 400 and table.split_mask(SUPPORT_SPLIT).sum() == 1600
    assert all((c.split == QUERY_SPLIT) == (c.meta["fold"] == "1") for c in table.clips)
    dog = next(c for c in table.clips if c.id == "1-100000-A-0")
    assert dog.label == 0 and dog.audio_path.name == "1-100000-A-0.wav"
    assert dog.meta["src_file"] == "100000" and dog.meta["take"] == "A" and dog.meta["esc10"] == "True"


def test_the_test_fold_is_configurable_and_support_never_comes_from_it(esc50_parent: Path, tmp_path: Path) -> None:
    table = read_dataset(_cfg(esc50_parent / "ESC-50-master", test_fold=3), tmp_path).table
    assert {c.meta["fold"] for c in table.clips if c.split == QUERY_SPLIT} == {"3"}
    assert "3" not in {c.meta["fold"] for c in table.clips if c.split == SUPPORT_SPLIT}
    with pytest.raises(ConfigError, match=r"test_fold=6.*\n.*\[1, 2, 3, 4, 5\]"):
        read_dataset(_cfg(esc50_parent, test_fold=6), tmp_path)


def test_esc10_subset(esc50_parent: Path, tmp_path: Path) -> None:
    table = read_dataset(_cfg(esc50_parent, esc10=True), tmp_path).table
    assert len(table) == 400 and len(table.class_names) == 10
    assert set(table.class_names) == ESC10


def test_clips_are_real_44k_wavs_resampled_on_load(esc50_parent: Path) -> None:
    path = esc50_parent / "ESC-50-master" / "audio" / "2-100001-B-0.wav"
    info = probe_audio(path)
    assert (info.sample_rate, info.channels, info.frames) == (44100, 1, 441)
    assert load_audio(path, 16000).shape == (160,)


def test_missing_wavs_are_left_out_and_reported(tmp_path: Path) -> None:
    rows = esc50_rows(classes=3, per_class=10)
    base = make_esc50(tmp_path, rows, skip=[rows[0][0], rows[5][0]])
    table, missing = load_esc50(base)
    assert len(table) == 28
    assert missing == [str(base / "audio" / rows[0][0]), str(base / "audio" / rows[5][0])]


ROWS = esc50_rows(2, 5)


@pytest.mark.parametrize(
    ("extra_rows", "header", "appended", "message"),
    [
        pytest.param(
            [],
            "filename,fold,label,category,esc10,src_file,take",
            "",
            r"esc50.csv line 1: header is 'filename,fold,label,",
            id="wrong-header",
        ),
        pytest.param(
            [ROWS[2]],
            ESC50_HEADER,
            "",
            rf"duplicate clip id '{ROWS[2][0][:-4]}' in .*esc50.csv line 12 \(first listed in .*esc50.csv line 4\)",
            id="duplicate-clip-names-both-lines",
        ),
        pytest.param(
            [], ESC50_HEADER, "1-5-A-0.wav,1,0\n", r"esc50.csv line 12: expected 7 fields", id="missing-fields"
        ),
    ],
)
def test_a_bad_metadata_line_names_the_file_and_line(
    tmp_path: Path, extra_rows: list[tuple], header: str, appended: str, message: str
) -> None:
    base = make_esc50(tmp_path, [*ROWS, *extra_rows], header=header)
    meta = base / "meta" / "esc50.csv"
    meta.write_text(meta.read_text() + appended)
    with pytest.raises(DataError, match=message):
        load_esc50(base)


def test_missing_root_or_metadata_says_how_to_get_the_data(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="ESC-50 root .*nowhere does not exist") as err:
        read_dataset(_cfg(tmp_path / "nowhere"), tmp_path)
    message = str(err.value)
    assert "python scripts/prepare_esc50.py" in message and "dataset.root=" in message
    assert "https://github.com/karoldvl/ESC-50/archive/master.zip" in message
    with pytest.raises(DataError, match="dataset.root is not set") as err:
        read_dataset(_cfg(None), tmp_path / "empty-data")
    assert "prepare_esc50.py" in str(err.value)
    (tmp_path / "ESC-50-master" / "audio").mkdir(parents=True)
    with pytest.raises(DataError, match="ESC-50 metadata not found: .*meta/esc50.csv"):
        read_dataset(_cfg(tmp_path), tmp_path)


def test_unset_root_finds_the_copy_prepare_esc50_unpacks_into_data_dir(tmp_path: Path) -> None:
    make_esc50(tmp_path / "data", esc50_rows(2, 5))
    assert resolve_root(None, tmp_path / "data") == tmp_path / "data" / "ESC-50-master"
    assert len(read_dataset(_cfg(None), tmp_path / "data").table) == 10


def _prepare_script():
    spec = importlib.util.spec_from_file_location("prepare_esc50", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _zip(folder: Path, archive: Path, drop: int = 0) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*"))[drop:]:
            zf.write(path, path.relative_to(folder.parent).as_posix())
    return archive


def test_prepare_esc50_downloads_verifies_and_unpacks(
    esc50_parent: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    served = tmp_path / "served"
    served.mkdir()
    archive = _zip(esc50_parent / "ESC-50-master", served / "master.zip")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    server = _serve(served)
    url = f"http://127.0.0.1:{server.server_address[1]}/master.zip"
    script = _prepare_script()
    try:
        assert script.main(["--url", url, "--dest", str(tmp_path / "bad"), "--sha256", "0" * 64]) == 1
        assert "checksum mismatch" in capsys.readouterr().err
        assert script.main(["--url", url, "--dest", str(tmp_path / "data"), "--sha256", digest]) == 0
    finally:
        server.shutdown()
    out = capsys.readouterr().out
    target = tmp_path / "data" / "ESC-50-master"
    assert f"dataset.root={target}" in out
    assert not (tmp_path / "data" / "ESC-50-master.zip").exists()
    table = read_dataset(_cfg(tmp_path / "data"), tmp_path).table
    assert len(table) == 2000 and len(table.class_names) == 50
    assert script.main(["--dest", str(tmp_path / "data"), "--url", "http://127.0.0.1:9/x.zip"]) == 0
    assert "already" in capsys.readouterr().out


def test_prepare_esc50_rejects_incomplete_or_corrupt_archives(
    esc50_parent: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = _prepare_script()
    short = _zip(esc50_parent / "ESC-50-master", tmp_path / "short.zip", drop=3)
    assert script.main(["--archive", str(short), "--dest", str(tmp_path / "a")]) == 1
    assert "holds 1998 wav files under ESC-50-master/audio/, expected 2000" in capsys.readouterr().err
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04 not a zip")
    assert script.main(["--archive", str(broken), "--dest", str(tmp_path / "b")]) == 1
    assert "not a valid zip archive" in capsys.readouterr().err
    assert not (tmp_path / "a" / "ESC-50-master").exists()


def test_prepare_esc50_offline_says_where_to_put_the_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = _prepare_script()
    assert script.main(["--url", "http://127.0.0.1:9/master.zip", "--dest", str(tmp_path / "data")]) == 1
    err = capsys.readouterr().err
    assert "could not download http://127.0.0.1:9/master.zip" in err
    assert "--archive PATH" in err and str(tmp_path / "data" / "ESC-50-master" / "meta" / "esc50.csv") in err


def test_no_episode_of_a_run_has_a_test_fold_clip_in_its_support(esc50_parent: Path, tmp_path: Path) -> None:
    """Every episode the pipeline draws (episodic, 100 episodes; and the paper's fixed split)."""
    from calm.protocols import Pools
    from calm.run.job import build_protocol
    from tests.cli import REPO

    table = read_dataset(_cfg(esc50_parent), tmp_path).table
    for protocol in ("episodic", "paper"):
        cfg = OmegaConf.create(
            {
                "shots": 5,
                "queries": 5,
                "episodes": 100,
                "seed": 0,
                "ways": None,
                "dataset": {"name": "esc50"},
                "protocol": OmegaConf.load(REPO / "configs" / "protocol" / f"{protocol}.yaml"),
            }
        )
        episodes = build_protocol(cfg).episodes(Pools.from_table(table))
        assert len(episodes) == (100 if protocol == "episodic" else 1)
        for episode in episodes:
            assert {table.clips[i].meta["fold"] for i in episode.support} <= {"2", "3", "4", "5"}
            assert {table.clips[i].meta["fold"] for i in episode.query} == {"1"}
        if protocol == "paper":
            assert len(episodes[0].query) == 400
