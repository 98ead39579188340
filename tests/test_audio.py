from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from calm.data.audio import load_audio, probe_audio
from calm.errors import DataError


def _tone(rate: int, seconds: float, freq: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _dominant_hz(wave: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave))
    return float(np.fft.rfftfreq(len(wave), 1 / rate)[spectrum.argmax()])


def test_resamples_8k_to_16k_keeping_pitch_and_duration(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    sf.write(path, _tone(8000, 1.0, 440.0), 8000)
    wave = load_audio(path, 16000)
    assert wave.dtype == np.float32
    assert len(wave) == 16000
    assert abs(_dominant_hz(wave, 16000) - 440.0) < 2.0


def test_stereo_odd_rate_is_downmixed_by_mean(tmp_path: Path) -> None:
    left, right = _tone(22050, 0.5, 300.0), _tone(22050, 0.5, 1000.0)
    path = tmp_path / "stereo.flac"
    sf.write(path, np.stack([left, right], axis=1), 22050)
    wave = load_audio(path, 22050)
    np.testing.assert_allclose(wave, (left + right) / 2, atol=1e-4)


def test_real_speech_clip_is_downmixed_and_resampled(assets: Path) -> None:
    info = sf.info(str(assets / "speech" / "jfk.flac"))
    wave = load_audio(assets / "speech" / "jfk.flac", 16000)
    assert wave.ndim == 1
    assert abs(len(wave) / 16000 - info.frames / info.samplerate) < 1e-3


def test_empty_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros((0,), dtype=np.float32), 16000)
    with pytest.raises(DataError, match="empty.wav.*empty") as err:
        load_audio(path, 16000)
    assert "on_bad_clip=skip" in str(err.value)


def test_undecodable_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.wav"
    path.write_bytes(b"RIFF not really a wave file")
    with pytest.raises(DataError, match="cannot decode audio file .*broken.wav"):
        probe_audio(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_audio(tmp_path / "nope.wav", 16000)
