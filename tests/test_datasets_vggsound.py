"""VGGSound: the headerless CSV, clips as mp4 (audio + video) or wav/flac, missing clips reported."""

from __future__ import annotations

import logging
from pathlib import Path

import av
import numpy as np
import pytest

from calm.data.audio import load_audio, probe_audio
from calm.data.registry import load_dataset, read_dataset
from calm.data.table import QUERY_SPLIT, SUPPORT_SPLIT
from calm.data.vggsound import load_vggsound
from calm.errors import DataError
from calm.testing.smoke_layouts import make_vggsound, write_mp4
from tests.cli import dataset_config

ROWS = [
    ("-abc_DEF123", 30, "dog barking", "train"),
    ("xyz0000000A", 0, "dog barking", "test"),
    ("q1q1q1q1q1q", 120, "people marching, shouting", "train"),
    ("r2r2r2r2r2r", 7, "people marching, shouting", "test"),
    ("gone0000001", 10, "dog barking", "train"),
    ("gone0000002", 20, "airplane", "test"),
]
PRESENT = {
    "-abc_DEF123_000030": "mp4",
    "xyz0000000A_000000": "wav",
    "q1q1q1q1q1q_000120": "flac",
    "r2r2r2r2r2r_000007": "mp4",
}


def _dominant_hz(wave: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave))
    return float(np.fft.rfftfreq(len(wave), 1 / rate)[spectrum.argmax()])


@pytest.fixture(scope="module")
def vgg_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_vggsound(tmp_path_factory.mktemp("vggsound"), ROWS, PRESENT)


def test_table_from_the_official_layout_with_missing_clips_reported(vgg_root: Path, tmp_path: Path) -> None:
    loaded = read_dataset(dataset_config("vggsound", root=str(vgg_root), clips_dir="video"), tmp_path)
    table = loaded.table
    assert table.class_names == ("airplane", "dog barking", "people marching, shouting")
    assert sorted(table.ids) == sorted(PRESENT)
    assert loaded.missing == (
        str(vgg_root / "video" / "gone0000001_000010.mp4"),
        str(vgg_root / "video" / "gone0000002_000020.mp4"),
    )
    by_id = {c.id: c for c in table.clips}
    first = by_id["-abc_DEF123_000030"]
    assert (first.label, first.split, first.meta["youtube_id"]) == (1, SUPPORT_SPLIT, "-abc_DEF123")
    assert first.video_path == first.audio_path == vgg_root / "video" / "-abc_DEF123_000030.mp4"
    assert by_id["xyz0000000A_000000"].video_path is None and by_id["xyz0000000A_000000"].split == QUERY_SPLIT
    assert by_id["q1q1q1q1q1q_000120"].audio_path.suffix == ".flac"


def test_pipeline_builder_warns_with_the_missing_count(
    vgg_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="calm.data.registry"):
        table = load_dataset(dataset_config("vggsound", root=str(vgg_root)), tmp_path)
    assert len(table) == 4
    assert "vggsound: 2 clips listed in the metadata are missing on disk" in caplog.text
    assert "gone0000001_000010.mp4" in caplog.text


def test_first_listed_extension_wins_when_a_clip_exists_twice(tmp_path: Path) -> None:
    root = make_vggsound(tmp_path, ROWS[:1], {"-abc_DEF123_000030": "wav"})
    write_mp4(root / "video" / "-abc_DEF123_000030.mp4", 16000, 0.1)
    assert load_vggsound(root)[0].clips[0].audio_path.suffix == ".mp4"
    assert load_vggsound(root, extensions=[".wav", ".mp4"])[0].clips[0].audio_path.suffix == ".wav"


def test_mp4_audio_track_is_decoded_at_its_rate_and_length(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    wave = write_mp4(path, 44100, 0.5, freq=440.0, channels=2)
    with av.open(str(path)) as container:
        assert {s.type for s in container.streams} == {"video", "audio"}
    info = probe_audio(path)
    assert (info.sample_rate, info.channels, info.frames) == (44100, 2, 22050)
    native = load_audio(path, 44100)
    assert native.shape == (22050,)
    expected = wave.mean(axis=1)
    assert np.corrcoef(native[1000:21000], expected[1000:21000])[0, 1] > 0.99  # aligned: no encoder delay left
    assert np.abs(native - expected).mean() < 0.01
    resampled = load_audio(path, 16000)
    assert resampled.shape == (8000,)
    assert abs(_dominant_hz(resampled, 16000) - 440.0) < 4.0 or abs(_dominant_hz(resampled, 16000) - 880.0) < 4.0


def test_mono_mp4_at_an_odd_rate(tmp_path: Path) -> None:
    path = tmp_path / "odd.mp4"
    write_mp4(path, 22050, 0.3, freq=500.0, channels=1)
    info = probe_audio(path)
    assert (info.sample_rate, info.channels, info.frames) == (22050, 1, 6615)
    wave = load_audio(path, 16000)
    assert wave.shape == (4800,) and abs(_dominant_hz(wave, 16000) - 500.0) < 4.0


def test_broken_or_silent_mp4_is_a_data_error_naming_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 definitely not a movie")
    with pytest.raises(DataError, match=r"cannot decode audio file .*broken.mp4") as err:
        load_audio(broken, 16000)
    assert "on_bad_clip=skip" in str(err.value)
    video_only = tmp_path / "video_only.mp4"
    with av.open(str(video_only), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        container.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")))
        container.mux(stream.encode())
    with pytest.raises(DataError, match=r"video_only.mp4: the container has no audio stream"):
        probe_audio(video_only)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("youtube_id,start_seconds,label,split", r"line 1: looks like a header"),
        ("abc,12,dog,validation", r"line 2: split is 'validation', expected train or test"),
        ("abc,12,dog", r"line 2: expected 4 fields \(youtube_id,start_seconds,label,split\), found 3"),
        (
            "-abc_DEF123,30,dog,test",
            r"duplicate clip id '-abc_DEF123_000030' in .*vggsound.csv line 2 "
            r"\(first listed in .*vggsound.csv line 1\)",
        ),
        ("abc,later,dog,test", r"line 2: start_seconds must be an integer, found 'later'"),
    ],
)
def test_bad_csv_lines_are_named(tmp_path: Path, line: str, message: str) -> None:
    make_vggsound(tmp_path, [], {})
    body = f"{line}\n" if "header" in message else f"-abc_DEF123,30,dog,train\n{line}\n"
    (tmp_path / "vggsound.csv").write_text(body)
    with pytest.raises(DataError, match=message):
        load_vggsound(tmp_path)


def test_missing_root_csv_or_clips_folder_says_how_to_get_the_data(tmp_path: Path) -> None:
    for cfg, message in [
        ({"root": None}, "VGGSound: dataset.root is not set"),
        ({"root": str(tmp_path / "nowhere")}, "VGGSound root .*nowhere does not exist"),
        ({"root": str(tmp_path)}, "VGGSound metadata not found: .*vggsound.csv"),
    ]:
        with pytest.raises(DataError, match=message) as err:
            read_dataset(dataset_config("vggsound", **cfg), tmp_path)
        assert "https://www.robots.ox.ac.uk/~vgg/data/vggsound/" in str(err.value)
        assert "dataset.root=" in str(err.value)
    (tmp_path / "vggsound.csv").write_text("abc,1,dog,train\n")
    with pytest.raises(DataError, match=r"clips folder .*clips does not exist") as err:
        read_dataset(dataset_config("vggsound", root=str(tmp_path), clips_dir="clips"), tmp_path)
    assert "dataset.clips_dir" in str(err.value)
