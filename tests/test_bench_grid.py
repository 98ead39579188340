"""Smoke test of scripts/bench_grid.py: it runs, and the sampled from-scratch settings agree with the grid."""

from __future__ import annotations

import pytest

from tests.cli import load_script


def load_bench():
    return load_script("bench_grid")


def test_quick_benchmark_times_the_whole_paper_grid(capsys: pytest.CaptureFixture[str]) -> None:
    results = load_bench().main(["--quick", "--cv"])
    out = capsys.readouterr().out
    assert results["settings"] == 20736
    assert results["agree"] == results["sampled"] == 5
    assert results["grid_seconds"] > 0 and results["scratch_seconds_extrapolated"] > 0
    assert results["ratio"] == pytest.approx(results["scratch_seconds_extrapolated"] / results["grid_seconds"])
    assert results["cv_seconds"] > 0 and 0 <= results["cv_test_accuracy"] <= results["best_accuracy"]
    assert "20736 settings" in out and "ratio:" in out and "agree with the grid: yes (5/5)" in out
    assert "32 heads x 16 dims, 10 classes, 40 support and 40 test clips" in out
