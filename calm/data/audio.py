"""Audio decoding (soundfile) and resampling (torchaudio) to the backbone's rate, mono."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from calm.errors import DataError

RESAMPLER = {"method": "sinc_interp_hann", "lowpass_filter_width": 6, "rolloff": 0.99}


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of a clip, read without decoding the samples."""

    path: Path
    sample_rate: int
    frames: int
    channels: int

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


def preprocessing_key(sample_rate: int) -> dict:
    """Everything about audio preprocessing that changes the numbers (goes into the cache key)."""
    return {"sample_rate": sample_rate, "downmix": "mean", "decoder": "soundfile", "resampler": RESAMPLER}


def probe_audio(path: Path) -> AudioInfo:
    """Read a clip's header; a missing, unreadable or empty file is a DataError naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"audio file not found: {path}", "check dataset.root, or re-download the dataset")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as err:
        raise DataError(
            f"cannot decode audio file {path}: {err}",
            "replace the file, or run with on_bad_clip=skip to leave it out (it is listed in skipped_clips.tsv)",
        ) from err
    if info.frames <= 0:
        raise DataError(
            f"audio file {path} is empty (0 samples)",
            "replace the file, or run with on_bad_clip=skip to leave it out (it is listed in skipped_clips.tsv)",
        )
    return AudioInfo(path, int(info.samplerate), int(info.frames), int(info.channels))


@lru_cache(maxsize=16)
def _resampler(orig: int, new: int) -> torchaudio.transforms.Resample:
    return torchaudio.transforms.Resample(
        orig, new, resampling_method=RESAMPLER["method"],
        lowpass_filter_width=RESAMPLER["lowpass_filter_width"], rolloff=RESAMPLER["rolloff"],
    )


def resample(wave: np.ndarray, orig: int, new: int) -> np.ndarray:
    """Resample a mono float32 signal with torchaudio's windowed-sinc resampler."""
    if orig == new:
        return wave.astype(np.float32, copy=False)
    with torch.no_grad():
        out = _resampler(orig, new)(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)))
    return out.numpy()


def load_audio(path: Path, sample_rate: int) -> np.ndarray:
    """Decode a clip to mono float32 at `sample_rate`; bad files raise a DataError naming the file."""
    path = Path(path)
    probe_audio(path)
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise DataError(
            f"cannot decode audio file {path}: {err}",
            "replace the file, or run with on_bad_clip=skip to leave it out",
        ) from err
    if data.shape[0] == 0:
        raise DataError(f"audio file {path} is empty (0 samples)", "replace the file, or run with on_bad_clip=skip")
    mono = data.mean(axis=1)
    if not np.isfinite(mono).all():
        raise DataError(f"audio file {path} contains NaN or infinite samples", "replace the file, or on_bad_clip=skip")
    return resample(mono, int(rate), sample_rate)
