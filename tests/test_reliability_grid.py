"""The paper grid and the estimator sweep with a named reliability set V, the head choice, the
arithmetic dtype and the selection metric: every setting equals the estimator fitted the same way, and
`[val]` is the setting best on V."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from calm.errors import ConfigError, ProtocolError
from calm.methods import CALM, GRW
from calm.methods.metrics import accuracy, macro_f1
from calm.methods.prototypes import ReliabilitySet
from calm.protocols import PaperProtocol, Pools
from calm.selection import CalmGrid, evaluate_grid, paper_grid_report, paper_sweep_report
from calm.selection.settings import first_best
from calm.selection.sweep import MethodGrid
from tests.test_grid import split

GRID = CalmGrid(
    reliability=("margin_clamped", "prob"), tau=(0.05, 0.5), tau_w=(0.5, 2.0), top_k=(3, None), shrinkage=(0.0, 1.0)
)


@pytest.fixture(scope="module")
def data():
    support, labels, query, query_labels = split(classes=4, shots=3, queries=24, seed=1)
    val, val_labels, _, _ = split(classes=4, shots=5, queries=1, seed=1)  # same heads and classes, other clips
    return support, labels, query, query_labels, val, val_labels


def estimator_scores(setting_estimator, support, labels, rows, row_labels, val=None, **fit):
    model = setting_estimator.fit(support, labels, reliability_set=val, **fit)
    pred = model.predict(rows)
    return accuracy(pred, row_labels), macro_f1(pred, row_labels, 4)


def test_grid_with_val_equals_the_estimator_and_val_picks_the_best_on_v(data):
    support, labels, query, query_labels, val, val_labels = data
    named = ReliabilitySet(val, val_labels)
    result = evaluate_grid(support, labels, query, query_labels, GRID, reliability=(val, val_labels))
    on_support = evaluate_grid(support, labels, query, query_labels, GRID)
    expected_val = []
    for i, setting in enumerate(GRID.settings()):
        acc, f1 = estimator_scores(setting.estimator(), support, labels, query, query_labels, named)
        assert result.accuracy[i] == pytest.approx(acc) and result.macro_f1[i] == pytest.approx(f1)
        expected_val.append(estimator_scores(setting.estimator(), support, labels, val, val_labels, named))
    assert not np.array_equal(result.accuracy, on_support.accuracy)  # V moved some setting
    report = paper_grid_report(support, labels, query, query_labels, GRID, reliability=(val, val_labels), folds=3)
    best = first_best([a for a, _ in expected_val])
    assert report.val_choice["setting_index"] == best and report.val_choice["selected_by"] == "val"
    assert report.val_choice["val_score"] == pytest.approx(expected_val[best][0])
    assert report.val_choice["test"]["accuracy"] == pytest.approx(result.accuracy[best])
    assert [r["label"][:4] for r in report.records()] == ["chos", "best", "orac"]
    assert paper_grid_report(support, labels, query, query_labels, GRID, folds=3).val_choice is None


def test_macro_f1_selection_picks_the_best_macro_f1(data):
    support, labels, query, query_labels, val, val_labels = data
    report = paper_grid_report(
        support, labels, query, query_labels, GRID, reliability=(val, val_labels), folds=3, selection_metric="macro_f1"
    )
    assert report.oracle["setting_index"] == first_best(report.test.macro_f1)
    assert report.oracle["metric"] == "macro_f1" and report.cv_choice["metric"] == "macro_f1"
    with pytest.raises(ConfigError, match="selection_metric"):
        paper_grid_report(support, labels, query, query_labels, GRID, folds=3, selection_metric="recall")


def test_grid_head_choice_and_bf16_equal_the_estimator(data):
    support, labels, query, query_labels, val, val_labels = data
    for head_choice, dtype, name in (
        ("random", torch.float32, "float32"),
        ("random_heads", torch.float32, "float32"),
        ("reliable", torch.bfloat16, "bfloat16"),
    ):
        grid = CalmGrid(
            reliability=("margin_clamped",),
            tau=(0.05,),
            tau_w=(0.5,),
            top_k=(3,),
            shrinkage=(0.0,),
            head_choice=head_choice,
            head_seed=5,
        )
        result = evaluate_grid(support, labels, query, query_labels, grid, reliability=(val, val_labels), dtype=dtype)
        setting = grid.settings()[0]
        model = CALM(tau=0.05, top_k=3, head_choice=head_choice, head_seed=5, arithmetic_dtype=name)
        acc, _ = estimator_scores(model, support, labels, query, query_labels, ReliabilitySet(val, val_labels))
        assert result.accuracy[0] == pytest.approx(acc), (head_choice, name)
        assert (
            setting.as_dict()["head_choice"] == head_choice
            if head_choice != "reliable"
            else ("head_choice" not in setting.as_dict())
        )


def test_sweep_passes_v_to_grw_and_adds_a_val_choice(data):
    support, labels, query, query_labels, val, val_labels = data
    grid = MethodGrid.from_config("grw", {"top_k": [2, 5, None]}, {"top_k", "tau", "tau_w"}, "test")

    def build(values):
        return GRW(**values)

    report = paper_sweep_report(
        build, grid.points(), support, labels, query, query_labels, n_classes=4, folds=3, reliability=(val, val_labels)
    )
    named = ReliabilitySet(val, val_labels)
    on_val = [estimator_scores(GRW(**p.as_dict()), support, labels, val, val_labels, named)[0] for p in grid.points()]
    on_test = [
        estimator_scores(GRW(**p.as_dict()), support, labels, query, query_labels, named)[0] for p in grid.points()
    ]
    assert report.test.accuracy.tolist() == pytest.approx(on_test)
    assert report.val_choice["setting_index"] == first_best(on_val)


def pools_with_val(val_labels):
    labels = np.array([0, 0, 1, 1, 0, 1] + list(val_labels))
    n = len(labels)
    support = np.zeros(n, bool)
    support[:4] = True
    query = np.zeros(n, bool)
    query[4:6] = True
    val = np.zeros(n, bool)
    val[6:] = True
    return Pools.build(labels, support, query, ("dog", "cat"), is_val_pool=val)


def test_paper_protocol_names_the_val_clips_as_v():
    episode = PaperProtocol(shots=1, reliability="val").episode(pools_with_val([1, 0, 1]))
    assert episode.reliability.tolist() == [6, 7, 8] and episode.reliability_labels.tolist() == [1, 0, 1]
    assert PaperProtocol(shots=1).episode(pools_with_val([1, 0, 1])).reliability is None
    with pytest.raises(ProtocolError, match="no val clip: 'cat'"):
        PaperProtocol(shots=1, reliability="val").episode(pools_with_val([0, 0]))
    with pytest.raises(ProtocolError, match="have no train or test clip: 'bird'"):
        Pools.build(
            np.array([0, 1, 0, 1, 2]),
            np.array([1, 1, 0, 0, 0], bool),
            np.array([0, 0, 1, 1, 0], bool),
            ("dog", "cat", "bird"),
            is_val_pool=np.array([0, 0, 0, 0, 1], bool),
        )
    with pytest.raises(ProtocolError, match="reliability"):
        PaperProtocol(shots=1, reliability="holdout")
