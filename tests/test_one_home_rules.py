"""Rules with one home, checked by hand-worked numbers: each test fails on a one-point change that
used to pass the suite (a weight fallback threshold, fold pooling, macro-F1's classes, fold seeds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import calm.selection.cross_validation as cv_module
from calm.methods import CALM
from calm.methods.calm_core import calm_weights
from calm.methods.metrics import (
    accuracy,
    batched_accuracy,
    batched_exact_match,
    batched_macro_f1,
    exact_match,
    macro_f1,
    top_label_sets,
)
from calm.protocols import Episode
from calm.run.search import search_record, search_settings
from calm.selection import CalmSetting, evaluate_grid, select_by_cross_validation, support_cv_scores
from calm.selection.cross_validation import stratified_folds
from calm.testing.synthetic import synthetic_split
from tests.cli import compose_config


def test_tiny_but_nonzero_reliabilities_get_proportional_power_weights() -> None:
    """(1e-4+ε)², (2e-4+ε)², ε² sum to 5e-8 > 1e-12: proportional weights, not the uniform fallback
    (which a fallback threshold of 1e-6 would give)."""
    r = torch.tensor([[1e-4], [2e-4], [0.0]])
    w = calm_weights(r, tau_w=0.5, weight_norm="power")
    torch.testing.assert_close(w[:, 0], torch.tensor([0.2, 0.8, 0.0]), rtol=1e-5, atol=1e-12)


def _unequal_fold_split():
    """Class sizes 3/3/4 dealt into 3 folds: fold sizes 4/3/3, and fold accuracies that differ."""
    split = synthetic_split(heads=6, dim=4, classes=3, support_per_class=4, queries=1, signal=0.15, seed=3)
    keep = torch.tensor([0, 1, 2, 4, 5, 6, 8, 9, 10, 11])  # 3, 3 and 4 clips
    return split.support[keep], split.labels[keep]


def _pooled_and_mean_by_hand(features, labels, seed):
    fold = stratified_folds(labels.numpy(), 3, seed)
    correct, per_fold = 0, []
    for f in range(3):
        held = torch.from_numpy(fold == f)
        pred = CALM().fit(features[~held], labels[~held], n_classes=3).predict(features[held])
        hits = int((pred == labels[held]).sum())
        correct += hits
        per_fold.append(100.0 * hits / int(held.sum()))
    return 100.0 * correct / len(labels), float(np.mean(per_fold)), np.bincount(fold)


def test_support_cross_validation_pools_unequal_folds() -> None:
    features, labels = _unequal_fold_split()
    pooled, mean_of_folds, sizes = _pooled_and_mean_by_hand(features, labels, seed=5)
    assert sorted(sizes.tolist()) == [3, 3, 4]
    assert pooled != pytest.approx(mean_of_folds), "the split must tell pooling from a mean of folds"
    by_estimator = support_cv_scores(CALM(), features, labels.numpy(), 3, folds=3, seed=5)
    assert by_estimator["support_cv_accuracy"] == pytest.approx(pooled)
    by_grid = select_by_cross_validation(features, labels, [CalmSetting()], folds=3, seed=5)
    assert by_grid["cv_score"] == pytest.approx(pooled)


def test_grid_macro_f1_counts_a_class_predicted_but_absent_from_the_queries() -> None:
    split = synthetic_split(heads=8, dim=4, classes=3, support_per_class=3, queries=4, signal=0.4, seed=0)
    query = split.query[split.query_labels != 2]
    truth = torch.zeros(len(query), dtype=torch.long)  # every query claims class 0; none is class 2
    pred = CALM().fit(split.support, split.labels).predict(query)
    assert 2 in pred.tolist() and 2 not in truth.tolist()
    result = evaluate_grid(split.support, split.labels, query, truth, [CalmSetting()])
    assert result.macro_f1[0] == pytest.approx(macro_f1(pred, truth, 3))
    assert result.accuracy[0] == pytest.approx(accuracy(pred, truth))


def test_batched_metrics_equal_the_scalar_ones() -> None:
    g = torch.Generator().manual_seed(0)
    truth = torch.randint(0, 4, (30,), generator=g)
    truth[truth == 3] = 0  # class 3 is never true but gets predicted
    pred = torch.randint(0, 5, (7, 30), generator=g)  # class 4: neither in the truth nor always predicted
    np.testing.assert_allclose(batched_accuracy(pred, truth, 5), [accuracy(p, truth) for p in pred])
    np.testing.assert_allclose(batched_macro_f1(pred, truth, 5), [macro_f1(p, truth, 5) for p in pred])
    scores = torch.randint(0, 3, (5, 7, 30), generator=g).float()  # many ties
    targets = torch.rand(30, 5, generator=g) < 0.3
    targets[torch.arange(30), truth] = True
    sizes = targets.sum(dim=1).numpy()
    true_sets = [frozenset(np.flatnonzero(row).tolist()) for row in targets.numpy()]
    expected = [exact_match(top_label_sets(scores[:, s].t(), sizes), true_sets) for s in range(7)]
    np.testing.assert_allclose(batched_exact_match(scores, targets), expected)


def test_fold_seeds_differ_between_episodes_of_one_search(tmp_path: Path, monkeypatch) -> None:
    cfg = compose_config(["hparams_search=calm_optuna", "method=calm", "shots=3"], tmp_path)
    split = synthetic_split(heads=8, dim=4, classes=3, support_per_class=3, queries=1, seed=1)
    episodes = [
        Episode(
            index=i,
            seed=100 + i,
            classes=np.arange(3),
            support=np.arange(9),
            support_labels=split.labels.numpy(),
            query=np.arange(9, 12),
            query_labels=split.query_labels.numpy(),
        )
        for i in range(3)
    ]
    seen: list[int] = []
    real = cv_module.stratified_folds

    def spy(labels, folds, seed, groups=None):
        seen.append(int(seed))
        return real(labels, folds, seed, groups)

    monkeypatch.setattr(cv_module, "stratified_folds", spy)
    search_record(search_settings(cfg), episodes, torch.cat([split.support, split.query]))
    assert len(seen) == 3 and len(set(seen)) == 3
