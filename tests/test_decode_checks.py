"""Issue 10 case 11: a truncated file is never a shorter clip without a word, and NaN/Inf samples are
caught by `validate` and by the header pass before any model loads (which decodes float files only)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from calm.data.__main__ import main
from calm.data.audio import load_audio, probe_audio
from calm.data.folder import load_folder
from calm.errors import DataError
from calm.extraction.plan import preflight
from calm.testing.smoke_layouts import tone


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "FLOAT"])
def test_a_truncated_wav_is_an_error_naming_the_file(tmp_path: Path, subtype: str) -> None:
    path = tmp_path / f"half_{subtype}.wav"
    sf.write(path, tone(16000, 0.5, channels=2), 16000, subtype=subtype)
    _truncate(path)
    for read in (probe_audio, lambda p: load_audio(p, 16000)):
        with pytest.raises(
            DataError,
            match=rf"{path.name} is truncated: its header declares 8000 frames, "
            r"the file holds \d+",
        ) as err:
            read(path)
        assert "on_bad_clip=skip" in str(err.value)


def _dataset(root: Path) -> Path:
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(2):
            sf.write(root / name / f"{name}{i}.wav", tone(16000, 0.1), 16000)
    sf.write(root / "cat" / "cat_float.wav", tone(16000, 0.1), 16000, subtype="FLOAT")
    sf.write(root / "dog" / "dog.flac", tone(16000, 0.1), 16000)
    return root


def _cut_flac(path: Path, cut: int = 100) -> Path:
    """A FLAC written by soundfile, its last `cut` bytes gone (a partial copy): the header still
    declares every frame, and libsndfile fails only when decoding reaches the end."""
    sf.write(path, tone(16000, 0.5), 16000)
    path.write_bytes(path.read_bytes()[:-cut])
    return path


def _bad_files(root: Path) -> dict[str, str]:
    """A truncated PCM wav, a truncated FLAC, a float wav with a NaN and one with an infinity, by file name."""
    sf.write(root / "cat" / "short.wav", tone(16000, 0.2), 16000)
    _truncate(root / "cat" / "short.wav")
    _cut_flac(root / "dog" / "cut.flac")
    for name, value in (("nan.wav", np.nan), ("inf.wav", -np.inf)):
        wave = tone(16000, 0.1)
        wave[100] = value
        sf.write(root / "dog" / name, wave, 16000, subtype="FLOAT")
    return {
        "short.wav": "truncated",
        "cut.flac": "truncated",
        "nan.wav": "NaN or infinite",
        "inf.wav": "NaN or infinite",
    }


def test_the_header_pass_lists_truncated_and_non_finite_clips_or_stops(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "data")
    expected = _bad_files(root)
    table, _ = load_folder(root, test_fraction=0.5)
    durations, bad, _ = preflight(table, table.ids, "skip")
    assert {Path(cid).name: why for cid, why in bad.items()}.keys() == expected.keys()
    for cid, why in bad.items():
        assert expected[Path(cid).name] in why and Path(cid).name in why
    assert len(durations) == len(table) - 4
    with pytest.raises(DataError, match="truncated|NaN or infinite"):
        preflight(table, table.ids, "error")


def test_validate_reports_truncated_and_non_finite_clips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _dataset(tmp_path / "data")
    expected = _bad_files(root)
    assert main(["validate", "folder", str(root), "--json", "--strict"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert sorted(Path(p).name for p in report["undecodable"]) == sorted(expected)
    for path, why in report["undecodable_reasons"].items():
        assert expected[Path(path).name] in why


@pytest.mark.parametrize("cut", [1, 100, 2400])
def test_a_truncated_flac_fails_the_header_pass_and_validate_strict(
    tmp_path: Path, cut: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 16 item 7: it used to pass both and fail only after the model loaded ("psf_fseek() failed")."""
    root = _dataset(tmp_path / "data")
    _cut_flac(root / "cat" / "cut.flac", cut)
    with pytest.raises(DataError, match=r"cut.flac is truncated") as err:
        probe_audio(root / "cat" / "cut.flac", samples=True)
    assert "on_bad_clip=skip" in str(err.value)
    table, _ = load_folder(root, test_fraction=0.5)
    _, bad, _ = preflight(table, table.ids, "skip")
    assert [Path(cid).name for cid in bad] == ["cut.flac"]
    assert main(["validate", "folder", str(root), "--json", "--strict"]) == 1
    assert [Path(p).name for p in json.loads(capsys.readouterr().out)["undecodable"]] == ["cut.flac"]


def test_the_header_pass_decodes_float_files_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PCM wavs and FLAC cannot hold NaN: their header pass reads headers and at most their last frames
    (a truncation check), never the whole file; float files (1600 frames here) are decoded whole."""
    root = _dataset(tmp_path / "data")
    table, _ = load_folder(root, test_fraction=0.5)
    frames_read: dict[str, int] = {}
    real_read = sf.SoundFile.read

    def counting_read(self, *args, **kwargs):
        block = real_read(self, *args, **kwargs)
        frames_read[Path(self.name).name] = frames_read.get(Path(self.name).name, 0) + len(block)
        return block

    monkeypatch.setattr(sf.SoundFile, "read", counting_read)
    durations, bad, _ = preflight(table, table.ids, "error")
    assert not bad and len(durations) == len(table)
    assert frames_read.pop("cat_float.wav") == 1600
    assert frames_read and all(n < 1600 for n in frames_read.values()), frames_read


def test_validate_strict_decodes_every_clip_whole(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Bytes zeroed mid-file leave a FLAC's header and end intact: only decoding all of it finds them."""
    root = _dataset(tmp_path / "data")
    path = root / "cat" / "holed.flac"
    sf.write(path, tone(16000, 2.0), 16000)
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 200] = bytes(200)
    path.write_bytes(bytes(data))
    assert main(["validate", "folder", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["undecodable"] == []
    assert main(["validate", "folder", str(root), "--json", "--strict"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["undecodable"] == [str(path)] and "lost sync" in report["undecodable_reasons"][str(path)]
    assert report["decoded"] is True


def test_a_flac_passed_by_the_older_header_pass_is_checked_again(tmp_path: Path) -> None:
    """The duration store remembers clips that passed; one the older checks passed (no tail read) must
    not be served from it, or the cut FLAC would still fail only after the model loaded."""
    import sqlite3

    from calm.cache.durations import DurationStore, file_key

    root = _dataset(tmp_path / "data")
    cut = _cut_flac(root / "cat" / "cut.flac")
    store = DurationStore(tmp_path / "cache")
    store.path.parent.mkdir()
    with sqlite3.connect(store.path) as db:  # what the older pass stored: its table, this clip as good
        db.execute(
            "CREATE TABLE durations (path TEXT, size INTEGER, mtime_ns INTEGER, seconds REAL, "
            "PRIMARY KEY (path, size, mtime_ns))"
        )
        db.execute("INSERT INTO durations VALUES (?, ?, ?, ?)", (*file_key(cut), 0.5))
    db.close()
    table, _ = load_folder(root, test_fraction=0.5)
    _, bad, read = preflight(table, table.ids, "skip", store)
    assert [Path(cid).name for cid in bad] == ["cut.flac"] and read == len(table)
    _, bad, read = preflight(table, table.ids, "skip", store)
    assert list(bad) == [str(cut)] and read == 1, "the clips that passed are remembered; the bad one is not"
