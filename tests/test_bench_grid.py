"""Smoke test of scripts/bench_grid.py: it runs, and the sampled from-scratch settings agree with the grid."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_grid.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_grid", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


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


def test_synthetic_split_has_the_requested_shape() -> None:
    split = load_bench().synthetic_split(heads=12, dim=4, classes=3, support_per_class=5, query_per_class=2)
    assert tuple(split.support.shape) == (15, 12, 4) and tuple(split.query.shape) == (6, 12, 4)
    assert split.labels.tolist() == [0] * 5 + [1] * 5 + [2] * 5 and split.n_classes == 3
