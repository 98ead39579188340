"""Smoke test of scripts/bench_methods.py: it runs, and its per-head loops agree with the estimators."""

from __future__ import annotations

import pytest

from tests.cli import load_script


def load_bench():
    return load_script("bench_methods")


def test_quick_benchmark_reports_agreeing_predictions(capsys: pytest.CaptureFixture[str]) -> None:
    results = load_bench().main(["--quick"])
    out = capsys.readouterr().out
    assert set(results) == {"CALM", "SAV"}
    for name, row in results.items():
        assert row["loop_agrees"] is True, name
        assert row["seconds"] > 0 and row["loop_ratio"] > 0 and row["floor_ratio"] > 0
        assert 0.0 <= row["accuracy"] <= 1.0
    assert out.count(" yes (50/50)") == 2
    assert "64 heads x 32 dims" in out


def test_per_head_loops_match_the_estimators_on_another_episode() -> None:
    bench = load_bench()
    from calm.methods import CALM, SAV

    ep = bench.synthetic_episode(heads=40, dim=16, classes=6, shots=3, queries=30, seed=5)
    assert (bench.calm_loop(ep) == CALM().fit(ep.support, ep.labels).predict(ep.query)).all()
    assert (bench.sav_loop(ep, 7) == SAV(top_k=7).fit(ep.support, ep.labels).predict(ep.query)).all()
