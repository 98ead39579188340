"""CALM grids: every setting equals the estimator, selection without the test set, labelled oracle."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

import calm.selection.paper as paper_module
from calm.errors import ConfigError
from calm.methods.calm_core import head_ranks, shrink, weight_sets
from calm.methods.metrics import (
    accuracy,
    detector_scores,
    eer,
    exact_match,
    macro_f1,
    top_label_sets,
)
from calm.selection import (
    DEFAULT_SETTING,
    CalmGrid,
    CalmSetting,
    evaluate_grid,
    paper_grid_report,
    select_by_cross_validation,
    stratified_folds,
)
from calm.selection.grid import SplitScorer
from tests.grids import PAPER_GRID

SMALL_GRID = CalmGrid(
    reliability=("margin_clamped", "prob"), tau=(0.05, 1.0), tau_w=(0.5, 1.0), top_k=(3, None), shrinkage=(0.0, 1.0)
)


def split(
    heads: int = 24,
    dim: int = 8,
    classes: int = 5,
    shots: int = 4,
    queries: int = 30,
    seed: int = 0,
    signal: float = 0.3,
):
    """Class-structured features: shared offset per head, class signal of varying strength, noise."""
    g = torch.Generator().manual_seed(seed)
    offset = 3.0 * torch.randn(heads, dim, generator=g)
    centers = torch.randn(classes, heads, dim, generator=g)
    strength = signal * torch.rand(heads, 1, generator=g) ** 2
    labels = torch.arange(classes).repeat_interleave(shots)
    query_labels = torch.randint(0, classes, (queries,), generator=g)

    def clips(y: torch.Tensor) -> torch.Tensor:
        return offset + strength * centers[y] + 0.6 * torch.randn(len(y), heads, dim, generator=g)

    return clips(labels), labels, clips(query_labels), query_labels


@pytest.fixture(scope="module")
def data():
    return split()


@pytest.fixture(scope="module")
def paper_result(data):
    support, labels, query, query_labels = data
    return evaluate_grid(support, labels, query, query_labels, PAPER_GRID)


def test_paper_grid_shape() -> None:
    assert len(PAPER_GRID) == 4 * 12 * 9 * 8 * 6 == 20736
    settings = PAPER_GRID.settings()
    assert len(set(settings)) == len(settings) == 20736
    assert {s.top_k for s in settings} == {5, 10, 20, 40, 100, 300, 500, None}


def test_random_paper_settings_equal_the_estimator_exactly(data, paper_result) -> None:
    support, labels, query, query_labels = data
    assert paper_result.accuracy.min() < paper_result.accuracy.max(), "the grid does not discriminate"
    picks = random.Random(0).sample(range(len(PAPER_GRID)), 40)
    picks += [i for i, s in enumerate(paper_result.settings) if s.tau == 1e-4][:4]  # saturated posteriors
    for i in picks:
        setting = paper_result.settings[i]
        pred = setting.estimator().fit(support, labels).predict(query)
        assert paper_result.accuracy[i] == accuracy(pred, query_labels), setting
        assert paper_result.macro_f1[i] == pytest.approx(macro_f1(pred, query_labels, 5)), setting


def test_reliabilities_and_weights_are_the_estimators_bit_for_bit(data) -> None:
    """What makes the grid agree with CALM even on ties: r (which orders heads for top_k) and the
    weights are computed with the estimator's arithmetic; only the final sum over heads differs."""
    support, labels, query, _ = data
    scorer = SplitScorer(support, labels, query, None)
    for tau in (1e-4, 0.07, 1.0):
        reliabilities = scorer.reliabilities(tau, ("margin_clamped", "margin", "prob", "brier"))
        for scheme, r0 in reliabilities.items():
            for alpha in (0.0, 0.7):
                r = shrink(r0, scorer.counts, alpha)
                norm = "power" if scheme == "margin_clamped" else "softmax"
                weights = weight_sets(r, head_ranks(r), norm, (0.5, 1.0), (3, None))
                for t, (tau_w, top_k) in enumerate(((0.5, 3), (0.5, None), (1.0, 3), (1.0, None))):
                    fitted = CalmSetting(scheme, tau, tau_w, top_k, alpha).estimator().fit(support, labels)
                    assert torch.equal(r, fitted.reliability_), (scheme, tau, alpha)
                    assert torch.equal(weights[t], fitted.weights_), (scheme, tau, alpha, tau_w, top_k)


def test_any_list_of_settings_in_any_order_and_chunk_size(data, paper_result) -> None:
    support, labels, query, query_labels = data
    picks = random.Random(1).sample(range(len(PAPER_GRID)), 25)
    chosen = [paper_result.settings[i] for i in picks] + [DEFAULT_SETTING, CalmSetting(top_k=1000)]
    result = evaluate_grid(support, labels, query, query_labels, chosen, chunk=4)
    np.testing.assert_array_equal(result.accuracy[:25], paper_result.accuracy[picks])
    for i in (25, 26):
        pred = chosen[i].estimator().fit(support, labels).predict(query)
        assert result.accuracy[i] == accuracy(pred, query_labels)
    assert result.settings == tuple(chosen)


def test_multilabel_exact_match_per_setting() -> None:
    support, labels, query, query_labels = split(seed=2)
    rng = np.random.default_rng(0)
    targets = np.zeros((len(query_labels), 5), dtype=bool)
    targets[np.arange(len(query_labels)), query_labels.numpy()] = True
    targets |= rng.random(targets.shape) < 0.2
    result = evaluate_grid(support, labels, query, query_labels, SMALL_GRID, query_targets=targets)
    assert result.metric == "exact_match"
    true_sets = [set(np.flatnonzero(row)) for row in targets]
    sizes = targets.sum(1)
    for i, setting in enumerate(result.settings):
        scores = setting.estimator().fit(support, labels).predict_scores(query)
        assert result.exact_match[i] == pytest.approx(exact_match(top_label_sets(scores, sizes), true_sets))
    tied = evaluate_grid(support, labels, query, query_labels, [CalmSetting(tau=1e-4, top_k=1)], query_targets=targets)
    scores = CalmSetting(tau=1e-4, top_k=1).estimator().fit(support, labels).predict_scores(query)
    assert tied.exact_match[0] == pytest.approx(exact_match(top_label_sets(scores, sizes), true_sets))


def test_result_rows_and_best_ties_to_the_first_setting(data) -> None:
    support, labels, query, query_labels = data
    result = evaluate_grid(support, labels, query, query_labels, [DEFAULT_SETTING, DEFAULT_SETTING])
    assert result.best() == 0
    rows = result.rows()
    assert rows[0] == {**DEFAULT_SETTING.as_dict(), "accuracy": result.accuracy[0], "macro_f1": result.macro_f1[0]}


def test_grid_config_and_bad_values() -> None:
    cfg = {"reliability": ["prob"], "tau": [1], "tau_w": [0.5], "top_k": [5, "all", None], "shrinkage": [0]}
    grid = CalmGrid.from_config(cfg)
    assert [s.top_k for s in grid.settings()] == [5, None, None] and len(grid) == 3
    for bad in (
        {**cfg, "tau": [0]},
        {**cfg, "reliability": ["best"]},
        {**cfg, "top_k": ["some"]},
        {**cfg, "shrinkage": []},
        {k: v for k, v in cfg.items() if k != "tau_w"},
    ):
        with pytest.raises(ConfigError):
            CalmGrid.from_config(bad)
    with pytest.raises(ConfigError, match="query labels"):
        evaluate_grid(*split()[:3], torch.zeros(3, dtype=torch.long), SMALL_GRID)


# --- selection without the test set -------------------------------------------------------


def test_stratified_folds_keep_every_class_in_every_training_part() -> None:
    labels = np.repeat(np.arange(4), [3, 5, 6, 9])
    fold = stratified_folds(labels, 3, seed=0)
    for f in range(3):
        assert set(labels[fold != f]) == {0, 1, 2, 3}
        assert set(labels[fold == f]) == {0, 1, 2, 3}
    assert np.ptp(np.bincount(fold)) <= 1
    np.testing.assert_array_equal(fold, stratified_folds(labels, 3, seed=0))


def test_cross_validation_pools_held_out_accuracy_like_refitting_the_estimator() -> None:
    support, labels, _, _ = split(shots=6, seed=3)
    settings = SMALL_GRID.settings()
    choice = select_by_cross_validation(support, labels, settings, folds=3, seed=5)
    fold = stratified_folds(labels.numpy(), 3, seed=5)
    correct = np.zeros(len(settings))
    for f in range(3):
        held = torch.from_numpy(fold == f)
        for i, s in enumerate(settings):
            pred = s.estimator().fit(support[~held], labels[~held], n_classes=5).predict(support[held])
            correct[i] += int((pred == labels[held]).sum())
    expected = int(np.argmax(correct))
    assert choice["selected_by"] == "cross_validation" and choice["folds"] == 3
    assert choice["setting_index"] == expected and choice["setting"] == settings[expected].as_dict()
    assert choice["cv_score"] == pytest.approx(correct[expected] / len(labels) * 100)


def test_cross_validation_folds_capped_by_shots_and_one_shot_falls_back() -> None:
    support, labels, _, _ = split(shots=2)
    assert select_by_cross_validation(support, labels, SMALL_GRID, folds=5)["folds"] == 2
    support, labels, _, _ = split(shots=1)
    choice = select_by_cross_validation(support, labels, SMALL_GRID)
    assert choice["selected_by"] == "default" and choice["setting"] == DEFAULT_SETTING.as_dict()
    assert choice["setting_index"] is None and "1 support clip" in choice["note"]


def test_report_choice_ignores_the_test_set_and_oracle_is_labelled(data, monkeypatch) -> None:
    support, labels, query, query_labels = data
    seen = []
    real = paper_module.select_by_cross_validation

    def spy(*args, **kwargs):
        seen.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(paper_module, "select_by_cross_validation", spy)
    report = paper_grid_report(support, labels, query, query_labels, SMALL_GRID, folds=2)
    ((args, kwargs),) = seen
    passed = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
    assert not any(t.shape == query.shape or t.shape == query_labels.shape for t in passed)

    garbage = paper_grid_report(
        support, labels, torch.full_like(query, float("nan")), 4 - query_labels, SMALL_GRID, folds=2
    )
    for key in ("setting", "setting_index", "cv_score", "folds", "label"):
        assert garbage.cv_choice[key] == report.cv_choice[key]

    i = report.cv_choice["setting_index"]
    assert report.cv_choice["test"]["accuracy"] == report.test.accuracy[i]
    assert "cross-validation" in report.cv_choice["label"] and "oracle" not in report.cv_choice["label"]
    assert report.oracle["label"].startswith("oracle")
    assert report.oracle["test"]["accuracy"] == report.test.accuracy.max()
    summary = json.loads(json.dumps(report.summary()))
    assert set(summary) == {"grid_size", "metric", "cv_choice", "oracle"} and summary["grid_size"] == 32


def test_report_one_shot_uses_the_default_setting_on_test() -> None:
    support, labels, query, query_labels = split(shots=1)
    report = paper_grid_report(support, labels, query, query_labels, SMALL_GRID)
    pred = DEFAULT_SETTING.estimator().fit(support, labels).predict(query)
    assert report.cv_choice["selected_by"] == "default"
    assert report.cv_choice["test"]["accuracy"] == accuracy(pred, query_labels)


def test_report_eer_for_two_class_detection() -> None:
    support, labels, query, query_labels = split(classes=2, shots=6, queries=40, seed=4)
    report = paper_grid_report(support, labels, query, query_labels, SMALL_GRID, folds=3, positive_class=0)
    oracle = CalmSetting(**report.oracle["setting"])
    scores = oracle.estimator().fit(support, labels).predict_scores(query)
    assert report.oracle["test"]["eer"] == pytest.approx(eer(detector_scores(scores, 0), query_labels == 0))
    assert 0.0 <= report.cv_choice["test"]["eer"] <= 100.0


def test_streaming_the_test_set_in_chunks_changes_no_number(data, paper_result) -> None:
    """Queries read a few at a time (from a lazy view, as from the cache on disk) give the grid's
    scores: counts are summed over chunks, the metrics read off the totals."""
    support, labels, query, query_labels = data
    picks = random.Random(2).sample(range(len(PAPER_GRID)), 60)
    settings = [paper_result.settings[i] for i in picks]

    class LazyRows:
        def __init__(self) -> None:
            self.reads: list[int] = []

        def __len__(self) -> int:
            return len(query)

        def __getitem__(self, part: slice) -> np.ndarray:
            self.reads.append(part.stop - part.start)
            return query[part].numpy()

    rows = LazyRows()
    streamed = evaluate_grid(support, labels, rows, query_labels, settings, query_chunk=7, chunk=16)
    assert max(rows.reads) == 7 and sum(rows.reads) == len(query)
    np.testing.assert_array_equal(streamed.accuracy, paper_result.accuracy[picks])
    np.testing.assert_allclose(streamed.macro_f1, paper_result.macro_f1[picks], rtol=0, atol=1e-9)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (evaluate.device=cuda)")
def test_the_grid_on_the_gpu_predicts_as_on_the_cpu(data) -> None:
    support, labels, query, query_labels = data
    settings = random.Random(3).sample(PAPER_GRID.settings(), 200)
    on_cpu = evaluate_grid(support, labels, query, query_labels, settings)
    on_gpu = evaluate_grid(support, labels, query, query_labels, settings, device="cuda", query_chunk=11)
    np.testing.assert_array_equal(on_gpu.accuracy, on_cpu.accuracy)
