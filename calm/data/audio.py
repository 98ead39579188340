"""Audio decoding and resampling (torchaudio) to the backbone's rate, mono.

Plain audio files (wav, flac, ogg, mp3) are decoded with soundfile; the audio track of a video
container (VGGSound's mp4 clips) with PyAV, which bundles FFmpeg.

Decoding never hands back less or worse than the file claims. libsndfile reads a half-truncated wav
as a shorter clip without a word, so the header pass (`probe_audio`) compares a wav's `data` chunk
size with the bytes the file holds (header and file size only), and decoding compares the frames it
got with the header's count (every format but mp3, whose count libsndfile may estimate). NaN or
infinite samples only fit in float formats (a PCM wav or a FLAC cannot hold one): `probe_audio(...,
samples=True)`, which `validate` and the pre-model header pass use, decodes float files (subtype
FLOAT or DOUBLE) to look for them and reads the header and last frames of every other file but mp3
(a FLAC cut short keeps its header's frame count and fails only where decoding reaches its end);
decoding checks every clip's samples again, and `validate --strict` decodes every clip whole.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import av
import numpy as np
import soundfile as sf
import torch
import torchaudio

from calm.errors import DataError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
CONTAINER_EXTENSIONS = (".mp4", ".m4a", ".mkv", ".webm", ".mov")
RESAMPLER = {"method": "sinc_interp_hann", "lowpass_filter_width": 6, "rolloff": 0.99}
FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")  # the only sample formats that can hold NaN or infinity
UNKNOWN_SIZES = (0, 0xFFFFFFFF)  # what streaming writers put in a wav header whose length they do not know
SCAN_FRAMES = 1 << 16  # frames per block when scanning a float file for non-finite samples
TAIL_FRAMES = 1024  # the last frames the header pass reads, to find a compressed file cut short
SKIP_FIX = "replace the file, or run with on_bad_clip=skip to leave it out (it is listed in skipped_clips.tsv)"


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of a clip, read without decoding the samples."""

    path: Path
    sample_rate: int
    frames: int
    channels: int
    format: str = ""  # soundfile's format (WAV, FLAC, ...); empty for containers
    subtype: str = ""  # soundfile's sample format (PCM_16, FLOAT, ...); empty for containers

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


def preprocessing_key(sample_rate: int) -> dict:
    """Everything about audio preprocessing that changes the numbers (goes into the cache key)."""
    return {"sample_rate": sample_rate, "downmix": "mean", "decoder": "soundfile, PyAV for mp4", "resampler": RESAMPLER}


def is_container(path: Path) -> bool:
    """Whether the clip is a video container whose audio track PyAV decodes."""
    return Path(path).suffix.lower() in CONTAINER_EXTENSIONS


def probe_audio(path: Path, samples: bool = False) -> AudioInfo:
    """Read a clip's header; a missing, unreadable, empty or truncated file is a DataError naming it.

    With `samples`, a float file's samples are also scanned for NaN and infinity (it is decoded; no
    other file is).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"audio file not found: {path}", "check dataset.root, or re-download the dataset")
    if is_container(path):
        return _probe_container(path)
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as err:
        raise DataError(
            f"cannot decode audio file {path}: {err}",
            "replace the file, or run with on_bad_clip=skip to leave it out (it is listed in skipped_clips.tsv)",
        ) from err
    if info.frames <= 0:
        raise DataError(f"audio file {path} is empty (0 samples)", SKIP_FIX)
    _check_wav_length(path)
    if samples and info.subtype in FLOAT_SUBTYPES:
        _check_finite_samples(path, int(info.frames))
    elif samples and info.format != "MP3":
        _check_tail(path, int(info.frames))
    return AudioInfo(
        path, int(info.samplerate), int(info.frames), int(info.channels), str(info.format), str(info.subtype)
    )


def _wav_data_chunk(path: Path) -> tuple[int, int, int] | None:
    """(declared size, start offset, bytes per frame) of a RIFF/WAVE file's `data` chunk, read from
    its chunk headers alone; None for any other file or an unreadable header (soundfile judges those)."""
    with open(path, "rb") as handle:
        head = handle.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
            return None
        order = "<" if head[:4] == b"RIFF" else ">"
        block_align = 0
        while len(chunk := handle.read(8)) == 8:
            name, size = chunk[:4], struct.unpack(f"{order}I", chunk[4:])[0]
            if name == b"data":
                return (size, handle.tell(), block_align) if block_align else None
            body = handle.read(16) if name == b"fmt " else b""
            if len(body) == 16:
                block_align = struct.unpack(f"{order}H", body[12:14])[0]
            handle.seek(size + (size & 1) - len(body), os.SEEK_CUR)
    return None


def _check_wav_length(path: Path) -> None:
    """A wav whose `data` chunk declares more bytes than the file holds was cut short (a partial
    copy or download); libsndfile would read it as a shorter clip without a word."""
    chunk = _wav_data_chunk(path)
    if chunk is None or chunk[0] in UNKNOWN_SIZES:
        return
    declared, start, block_align = chunk
    held = os.path.getsize(path) - start
    if declared > held:
        raise DataError(
            f"audio file {path} is truncated: its header declares {declared // block_align} frames, "
            f"the file holds {max(held, 0) // block_align}",
            SKIP_FIX,
        )


def _check_finite_samples(path: Path, frames: int) -> None:
    """Decode a float file block by block and refuse NaN or infinite samples (they would poison every
    head's features and fail the run after the model has loaded), or fewer frames than its header says."""
    decoded = 0
    try:
        with sf.SoundFile(str(path)) as handle:
            buffer = np.empty((SCAN_FRAMES, handle.channels), np.float32)
            while len(block := handle.read(out=buffer)):
                if not np.isfinite(block).all():
                    raise DataError(f"audio file {path} contains NaN or infinite samples", SKIP_FIX)
                decoded += len(block)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise DataError(f"cannot decode audio file {path}: {err}", SKIP_FIX) from err
    if decoded < frames:
        raise _truncated(path, frames, f"decoding gave {decoded}")


def _check_tail(path: Path, frames: int) -> None:
    """Read a file's last TAIL_FRAMES frames: a FLAC or other compressed file cut short keeps the frame
    count of its header, and only decoding its end (after the model loaded) used to fail."""
    count = min(frames, TAIL_FRAMES)
    try:
        with sf.SoundFile(str(path)) as handle:
            handle.seek(frames - count)
            got = len(handle.read(count, dtype="float32"))
    except (sf.LibsndfileError, RuntimeError) as err:
        raise _truncated(path, frames, f"its last {count} cannot be read ({str(err).strip()})") from err
    if got < count:
        raise _truncated(path, frames, f"its last {count - got} are missing")


def _truncated(path: Path, frames: int, what: str) -> DataError:
    return DataError(f"audio file {path} is truncated: its header declares {frames} frames, {what}", SKIP_FIX)


@lru_cache(maxsize=16)
def _resampler(orig: int, new: int) -> torchaudio.transforms.Resample:
    return torchaudio.transforms.Resample(
        orig,
        new,
        resampling_method=RESAMPLER["method"],
        lowpass_filter_width=RESAMPLER["lowpass_filter_width"],
        rolloff=RESAMPLER["rolloff"],
    )


def resample(wave: np.ndarray, orig: int, new: int) -> np.ndarray:
    """Resample a mono float32 signal with torchaudio's windowed-sinc resampler."""
    if orig == new:
        return wave.astype(np.float32, copy=False)
    with torch.no_grad():
        out = _resampler(orig, new)(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)))
    return out.numpy()


def decode_audio(path: Path) -> tuple[np.ndarray, int]:
    """Decode a whole clip as (samples, channels) float32 and its rate; an empty, truncated or
    undecodable file, or NaN/Inf samples, is a DataError naming the file (`validate --strict` runs this)."""
    path = Path(path)
    info = probe_audio(path)
    if is_container(path):
        data, rate = _decode_container(path)
    else:
        try:
            data, rate = sf.read(str(path), dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as err:
            raise DataError(f"cannot decode audio file {path}: {err}", SKIP_FIX) from err
    if data.shape[0] == 0:
        raise DataError(f"audio file {path} is empty (0 samples)", SKIP_FIX)
    if info.format and info.format != "MP3" and data.shape[0] < info.frames:
        raise _truncated(path, info.frames, f"decoding gave {data.shape[0]}")
    if not np.isfinite(data).all():
        raise DataError(f"audio file {path} contains NaN or infinite samples", SKIP_FIX)
    return data, int(rate)


def load_audio(path: Path, sample_rate: int) -> np.ndarray:
    """Decode a clip to mono float32 at `sample_rate`; bad files raise a DataError naming the file."""
    data, rate = decode_audio(path)
    return resample(data.mean(axis=1), rate, sample_rate)


def _bad_container(path: Path, why: str) -> DataError:
    return DataError(
        f"cannot decode audio file {path}: {why}",
        "replace the file, or run with on_bad_clip=skip to leave it out (it is listed in skipped_clips.tsv)",
    )


def _audio_stream(container: av.container.InputContainer, path: Path) -> av.audio.stream.AudioStream:
    if not container.streams.audio:
        raise _bad_container(path, "the container has no audio stream")
    return container.streams.audio[0]


def _stream_frames(stream: av.audio.stream.AudioStream) -> int | None:
    """Samples in the audio track by the container's own accounting (None when it does not say)."""
    if stream.duration is None or stream.time_base is None:
        return None
    return round(float(stream.duration * stream.time_base) * stream.codec_context.sample_rate)


def _probe_container(path: Path) -> AudioInfo:
    try:
        with av.open(str(path)) as container:
            stream = _audio_stream(container, path)
            rate = int(stream.codec_context.sample_rate)
            channels = int(stream.codec_context.layout.nb_channels)
            frames = _stream_frames(stream)
            if frames is None and container.duration is not None:
                frames = round(container.duration / av.time_base * rate)
    except av.error.FFmpegError as err:
        raise _bad_container(path, str(err)) from err
    if frames is None:
        frames = _decode_container(path)[0].shape[0]
    if not frames or frames <= 0:
        raise DataError(
            f"audio file {path} is empty (0 samples)", "replace the file, or run with on_bad_clip=skip to leave it out"
        )
    return AudioInfo(path, rate, int(frames), channels)


def _decode_container(path: Path) -> tuple[np.ndarray, int]:
    """The first audio track as (samples, channels) float32, trimmed to the track's declared length.

    AAC pads its last frame; the declared duration says where the real signal ends.
    """
    try:
        with av.open(str(path)) as container:
            stream = _audio_stream(container, path)
            rate = int(stream.codec_context.sample_rate)
            declared = _stream_frames(stream)
            to_planar_float = av.AudioResampler(format="fltp")
            chunks = []
            for frame in container.decode(stream):
                chunks.extend(f.to_ndarray() for f in to_planar_float.resample(frame))
            chunks.extend(f.to_ndarray() for f in to_planar_float.resample(None))
    except av.error.FFmpegError as err:
        raise _bad_container(path, str(err)) from err
    if not chunks:
        return np.zeros((0, 1), np.float32), rate
    data = np.concatenate(chunks, axis=1).T
    if declared:
        data = data[:declared]
    return np.ascontiguousarray(data, dtype=np.float32), rate
