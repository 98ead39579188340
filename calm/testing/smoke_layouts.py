"""Writers of each dataset's official on-disk layout with real audio (and mp4 video) files: the one home of
the generated datasets the paper table's smoke run (`reproduce_tables.py --smoke --tables paper`) and the
loader and CLI tests read."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path

import av
import numpy as np
import soundfile as sf

ESC50_CATEGORIES = (
    "dog",
    "rooster",
    "pig",
    "cow",
    "frog",
    "cat",
    "hen",
    "insects",
    "sheep",
    "crow",
    "rain",
    "sea_waves",
    "crackling_fire",
    "crickets",
    "chirping_birds",
    "water_drops",
    "wind",
    "pouring_water",
    "toilet_flush",
    "thunderstorm",
    "crying_baby",
    "sneezing",
    "clapping",
    "breathing",
    "coughing",
    "footsteps",
    "laughing",
    "brushing_teeth",
    "snoring",
    "drinking_sipping",
    "door_wood_knock",
    "mouse_click",
    "keyboard_typing",
    "door_wood_creaks",
    "can_opening",
    "washing_machine",
    "vacuum_cleaner",
    "clock_alarm",
    "clock_tick",
    "glass_breaking",
    "helicopter",
    "chainsaw",
    "siren",
    "car_horn",
    "engine",
    "train",
    "church_bells",
    "airplane",
    "fireworks",
    "hand_saw",
)
ESC10 = {
    "dog",
    "rooster",
    "rain",
    "sea_waves",
    "crackling_fire",
    "crying_baby",
    "sneezing",
    "clock_tick",
    "helicopter",
    "chainsaw",
}
ESC50_HEADER = "filename,fold,target,category,esc10,src_file,take"


def tone(rate: int, seconds: float, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    """A sine (samples, channels) with each channel an octave apart, so a down-mix is checkable."""
    t = np.arange(int(round(rate * seconds))) / rate
    return np.stack([0.3 * np.sin(2 * np.pi * freq * (c + 1) * t) for c in range(channels)], axis=1).astype(np.float32)


def audio_bytes(rate: int, seconds: float, fmt: str = "WAV", freq: float = 440.0, channels: int = 1) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, tone(rate, seconds, freq, channels), rate, format=fmt)
    return buffer.getvalue()


def write_mp4(
    path: Path, rate: int, seconds: float, freq: float = 440.0, channels: int = 2, video_frames: int = 3
) -> np.ndarray:
    """An mp4 with an mpeg4 video stream and an AAC audio stream; returns the audio written (samples, channels)."""
    wave = tone(rate, seconds, freq, channels)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=10)
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        audio = container.add_stream("aac", rate=rate, layout="stereo" if channels == 2 else "mono")
        for i in range(video_frames):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 40 * i, np.uint8), format="rgb24")
            container.mux(video.encode(frame))
        container.mux(video.encode())
        for start in range(0, len(wave), 1024):
            chunk = np.ascontiguousarray(wave[start : start + 1024].T)
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo" if channels == 2 else "mono")
            frame.sample_rate, frame.pts = rate, start
            container.mux(audio.encode(frame))
        container.mux(audio.encode())
    return wave


def esc50_rows(classes: int = 50, per_class: int = 40) -> list[tuple[str, int, int, str, bool, int, str]]:
    """Official-shaped rows: per class, clips spread evenly over 5 folds, `{fold}-{src}-{take}-{target}.wav`."""
    rows = []
    for target in range(classes):
        category = ESC50_CATEGORIES[target]
        for i in range(per_class):
            fold, src, take = i % 5 + 1, 100000 + 1000 * target + i, "ABC"[i % 3]
            rows.append((f"{fold}-{src}-{take}-{target}.wav", fold, target, category, category in ESC10, src, take))
    return sorted(rows)


def make_esc50(
    parent: Path,
    rows: Sequence[tuple] | None = None,
    skip: Iterable[str] = (),
    header: str = ESC50_HEADER,
    seconds: float = 0.01,
) -> Path:
    """`parent/ESC-50-master` with meta/esc50.csv and one 44.1 kHz mono wav per row (except `skip`)."""
    base = parent / "ESC-50-master"
    (base / "meta").mkdir(parents=True, exist_ok=True)
    (base / "audio").mkdir(exist_ok=True)
    rows = esc50_rows() if rows is None else rows
    lines = [header] + [f"{f},{fold},{t},{c},{e},{s},{k}" for f, fold, t, c, e, s, k in rows]
    (base / "meta" / "esc50.csv").write_text("\n".join(lines) + "\n")
    wav = audio_bytes(44100, seconds)
    skip = set(skip)
    for row in rows:
        if row[0] not in skip:
            (base / "audio" / row[0]).write_bytes(wav)
    return base


def make_vggsound(
    root: Path, rows: Sequence[tuple[str, int, str, str]], present: dict[str, str], clips_dir: str = "video"
) -> Path:
    """vggsound.csv (no header) and, for each `present` stem, a clip of that kind ("mp4", "wav" or "flac")."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "vggsound.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    folder = root / clips_dir
    folder.mkdir(exist_ok=True)
    for stem, kind in present.items():
        if kind == "mp4":
            write_mp4(folder / f"{stem}.mp4", 44100, 0.2)
        else:
            sf.write(folder / f"{stem}.{kind}", tone(22050, 0.1, channels=2), 22050)
    return root


def make_asvspoof(
    parent: Path,
    partitions: dict[str, Sequence[str]],
    absent: Iterable[str] = (),
    rate: int = 16000,
    seconds: float = 0.05,
) -> Path:
    """`parent/LA` with the CM protocol files (the given lines) and one flac per utterance not in `absent`."""
    la = parent / "LA"
    protocols = la / "ASVspoof2019_LA_cm_protocols"
    protocols.mkdir(parents=True, exist_ok=True)
    suffix = {"train": "train.trn", "dev": "dev.trl", "eval": "eval.trl"}
    absent = set(absent)
    flac_bytes = audio_bytes(rate, seconds, "FLAC")
    for partition, lines in partitions.items():
        (protocols / f"ASVspoof2019.LA.cm.{suffix[partition]}.txt").write_text("\n".join(lines) + "\n")
        flac = la / f"ASVspoof2019_LA_{partition}" / "flac"
        flac.mkdir(parents=True, exist_ok=True)
        for line in lines:
            fields = line.split()
            if len(fields) >= 2 and fields[1] not in absent:
                (flac / f"{fields[1]}.flac").write_bytes(flac_bytes)
    return la


def audioset_segments(rows: Sequence[tuple[str, float, float, str]]) -> str:
    """A segments CSV as Google ships it: three '#' lines, then `YTID, start, end, "mid,mid"`."""
    head = [
        "# Segments csv created Sun Mar  5 10:54:31 2017",
        f"# num_ytids={len(rows)}, num_segs={len(rows)}, num_unique_labels=3, num_positive_labels=4",
        "# YTID, start_seconds, end_seconds, positive_labels",
    ]
    return "\n".join(head + [f'{y}, {s:.3f}, {e:.3f}, "{m}"' for y, s, e, m in rows]) + "\n"


def make_audioset(
    root: Path,
    labels: Sequence[tuple[str, str]],
    train: Sequence[tuple[str, float, float, str]],
    evaluation: Sequence[tuple[str, float, float, str]],
    clips: dict[str, str],
    seconds: float = 0.05,
) -> Path:
    """class_labels_indices.csv, the two segment CSVs and `audio/<sub>/<name>` flac clips (`clips`: name -> sub)."""
    root.mkdir(parents=True, exist_ok=True)
    index = ["index,mid,display_name"] + [f'{i},{mid},"{name}"' for i, (mid, name) in enumerate(labels)]
    (root / "class_labels_indices.csv").write_text("\n".join(index) + "\n")
    (root / "balanced_train_segments.csv").write_text(audioset_segments(train))
    (root / "eval_segments.csv").write_text(audioset_segments(evaluation))
    for name, sub in clips.items():
        folder = root / "audio" / sub
        folder.mkdir(parents=True, exist_ok=True)
        sf.write(folder / name, tone(32000, seconds), 32000)
    return root
