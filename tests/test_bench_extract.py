"""Smoke test of scripts/bench_extract.py on the tiny model (CPU): every path captures the same heads."""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen2AudioConfig

from tests.cli import load_script


def test_tiny_benchmark_paths_agree_and_print_the_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_script("bench_extract")
    results = bench.main(
        ["--tiny", "--clips", "5", "--batch-size", "2", "--clip-seconds", "3", "--jitter", "0.6", "--repeats", "1"]
    )
    out = capsys.readouterr().out
    assert set(results["paths"]) == {"reference", "batched", "batched+cut"}
    reference = results["paths"]["reference"]["rows"]
    assert reference.shape == (5, 8, 16) and reference.abs().max() > 0.1
    for name in ("batched", "batched+cut"):
        row = results["paths"][name]
        assert row["rows"].dtype == torch.float16  # what the cache stores
        torch.testing.assert_close(row["rows"].float(), reference, atol=2e-3, rtol=2e-3, msg=name)
        assert row["clips_per_s"] > 0 and row["ratio"] > 0 and row["mfu"] is None  # no bf16 peak on a CPU
    # fp32 model, fp16 rows: the cut may flip the last fp16 bit of a row, never more
    torch.testing.assert_close(
        results["paths"]["batched+cut"]["rows"], results["paths"]["batched"]["rows"], atol=2e-3, rtol=2e-3
    )
    assert "ratio batched+cut / reference: " in out and "x (targets" in out
    assert "clips: 5 of 3 s" in out and "batch size 2, 3 batches" in out


def test_needed_flops_formula_on_the_7b_dimensions() -> None:
    bench = load_script("bench_extract")
    config = Qwen2AudioConfig(audio_config=bench.QWEN2_AUDIO_7B_AUDIO, text_config=bench.QWEN2_AUDIO_7B_TEXT)
    encoder, lm = bench.needed_flops(config, mel_frames=500, tokens=160)
    n, d, f = 250, 1280, 5120
    layers = 32 * (2 * n * (4 * d * d + 2 * d * f) + 4 * n * n * d)
    assert encoder == 2 * 500 * 3 * 128 * d + 2 * n * 3 * d * d + layers + 2 * 125 * d * 4096
    h, i = 4096, 11008
    assert lm == 32 * (2 * 160 * (4 * h * h + 3 * h * i) + 2 * 160 * 161 * h)
    # about 2 x parameters x tokens: the matmul weights of the LM (6.5 B) over 160 tokens dominate
    assert 2e12 < lm < 2.3e12 and 0.3e12 < encoder < 0.4e12
