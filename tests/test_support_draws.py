"""protocol=paper's support draws (support_draw, at_most), ESC-50's clean pool
with its row marks, repeated support rows downstream, and the estimators' authors' defaults (calm.authors)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from calm.cache.rows import STORED_DTYPE, RowView
from calm.data.esc50 import load_esc50
from calm.errors import ConfigError, ProtocolError
from calm.methods.prototypes import class_counts, class_sums
from calm.protocols import MultiLabelPools, PaperProtocol, Pools, derive_seed, support_marks
from calm.testing.smoke_layouts import esc50_rows, make_esc50

# rows:       0  1  2  3  4  5  6  7  8  9  10
LABELS = [0, 1, 0, 0, 1, 2, 0, 1, 2, 2, 1]
SUPPORT = [1, 1, 0, 1, 1, 1, 1, 0, 0, 1, 1]
QUERY = [0, 0, 1, 0, 0, 0, 0, 1, 1, 0, 1]
# candidates (support pool minus query pool, table order): class 0 [0, 3, 6], class 1 [1, 4] (row 10 is in
# both pools, so never support), class 2 [5, 9]; queries: every query-pool row [2, 7, 8, 10]


def pools() -> Pools:
    return Pools.build(np.array(LABELS), np.array(SUPPORT, bool), np.array(QUERY, bool))


def paper(**kw) -> PaperProtocol:
    return PaperProtocol(**{"shots": 2, "dataset": "toy", **kw})


def test_file_order_takes_the_first_shots_candidates_of_each_class_in_table_order() -> None:
    ep = paper(support_draw="file_order").episode(pools())
    assert ep.support.tolist() == [0, 3, 1, 4, 5, 9]
    assert ep.support_labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert ep.query.tolist() == [2, 7, 8, 10]
    with pytest.raises(ProtocolError, match="shots=3"):  # classes 1 and 2 have 2 candidates
        paper(shots=3, support_draw="file_order").episode(pools())


def test_at_most_gives_a_short_class_all_it_has_and_records_the_counts() -> None:
    ep = paper(shots=3, support_draw="file_order", at_most=True).episode(pools())
    assert ep.support.tolist() == [0, 3, 6, 1, 4, 5, 9]
    assert ep.support_labels.tolist() == [0, 0, 0, 1, 1, 2, 2]
    assert ep.support_counts.tolist() == [3, 2, 2]
    drawn = paper(shots=3, at_most=True).episode(pools())  # random: each class's set is all it has, any order
    assert [sorted(drawn.support[drawn.support_labels == k].tolist()) for k in range(3)] == [[0, 3, 6], [1, 4], [5, 9]]


def test_at_most_still_refuses_a_class_with_no_candidate() -> None:
    only_query = Pools.build(np.array([0, 0, 1, 1]), np.array([1, 0, 0, 0], bool), np.array([0, 1, 1, 1], bool))
    with pytest.raises(ProtocolError, match="no support-pool"):
        paper(shots=3, at_most=True).validate(only_query)
    with pytest.raises(ProtocolError, match="no support-pool"):
        paper(support_draw="all").validate(only_query)


def test_all_takes_every_candidate_and_ignores_shots() -> None:
    ep = paper(shots=1, support_draw="all").episode(pools())
    assert ep.support.tolist() == [0, 3, 6, 1, 4, 5, 9]
    assert ep.support_counts.tolist() == [3, 2, 2]


def test_random_draw_is_the_seeded_choice_it_always_was() -> None:
    # the clean draw: one generator seeded by (seed, dataset, shots, 0), `shots` per class, classes in order
    rng = np.random.default_rng(derive_seed(42, "toy", 2, 0))
    expected = np.concatenate([rng.choice(np.array(c), size=2, replace=False) for c in ([0, 3, 6], [1, 4], [5, 9])])
    ep = paper().episode(pools())
    assert ep.support.tolist() == expected.tolist()
    assert ep.support_labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_multi_label_all_draw_serves_the_rarest_class_first_without_reusing_a_clip() -> None:
    # rows 0-3 support; row 1 holds classes 0 and 1; queries rows 4, 5. Class 1 (candidates [1, 2]) is
    # rarer than class 0 ([0, 1, 3]) and takes both; class 0 then has [0, 3] left.
    ml = Pools.build(
        np.array([0, 0, 1, 0, 0, 1]),
        np.array([1, 1, 1, 1, 0, 0], bool),
        np.array([0, 0, 0, 0, 1, 1], bool),
        label_sets=[[0], [0, 1], [1], [0], [0], [1]],
    )
    assert isinstance(ml, MultiLabelPools)
    ep = paper(support_draw="all").episode(ml)
    assert ep.support.tolist() == [0, 3, 1, 2]
    assert ep.support_labels.tolist() == [0, 0, 1, 1]


def test_unknown_draw_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="support_draw"):
        paper(support_draw="first")
    with pytest.raises(ConfigError, match="at_most"):
        paper(at_most="yes")


# --- ESC-50's clean pool ----------------------------------------------------------------------------


@pytest.fixture
def esc50_pools(tmp_path) -> Pools:
    # 2 classes x 5 clips, one per fold, sorted by file name as the official csv: rows 0, 1 are fold 1
    # (class 0, class 1), rows 2, 3 fold 2, ... rows 8, 9 fold 5. Test fold 1: rows 0 and 1 are the queries.
    table, missing = load_esc50(make_esc50(tmp_path, esc50_rows(classes=2, per_class=5)), test_fold=1)
    assert not missing and [c.meta["fold"] for c in table.clips] == ["1", "1", "2", "2", "3", "3", "4", "4", "5", "5"]
    return Pools.from_table(table)


def test_clean_esc50_pool_never_holds_the_test_fold(esc50_pools) -> None:
    clean = paper(shots=4, dataset="esc50", support_draw="file_order")
    ep = clean.episode(esc50_pools)
    assert ep.support.tolist() == [2, 4, 6, 8, 3, 5, 7, 9]
    assert support_marks([ep], 4) == ({}, [])
    with pytest.raises(ProtocolError, match="shots=5"):
        paper(shots=5, dataset="esc50").validate(esc50_pools)


def test_unequal_counts_are_marked_on_the_rows() -> None:
    ep = paper(shots=3, support_draw="file_order", at_most=True).episode(pools())
    fields, notes = support_marks([ep], 3, ["protocol.at_most=true"])
    assert fields == {"support_per_class_min": 2, "support_per_class_max": 3}
    assert notes == ["support sets hold 2 to 3 clips per class (protocol.at_most=true), not shots=3"]


# --- repeated support rows downstream ---------------------------------------------------------------


def test_repeated_support_rows_are_read_twice_and_count_twice_in_a_prototype(tmp_path) -> None:
    # 3 stored rows of one head, d=2: r0 = [1, 0], r1 = [0, 1], r2 = [2, 2]; gather [1, 0, 1]
    stored = np.array([[[1, 0]], [[0, 1]], [[2, 2]]], dtype=STORED_DTYPE)
    path = tmp_path / "rows.bin"
    path.write_bytes(stored.tobytes())
    view = RowView(path, np.arange(3), ["a", "b", "c"], 3, 1, 2)
    support = view.gather(np.array([1, 0, 1]))
    assert support[:, 0].tolist() == [[0, 1], [1, 0], [0, 1]]
    # one class holding r1 twice and r0 once: sum [1, 2], count 3, mean [1/3, 2/3] (the duplicate counts twice)
    labels = torch.zeros(3, dtype=torch.long)
    mean = class_sums(support, labels, 1) / class_counts(labels, 1)[None, :, None]
    assert mean[0, 0].tolist() == pytest.approx([1 / 3, 2 / 3])


# --- the estimators' authors' defaults ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("protocol", "tie", "top_k_mode", "normalization"),
    [("paper", "random", "epsilon_leak", "authors"), ("episodic", "index", "exclude", "cosine")],
)
def test_estimator_defaults_follow_the_protocol_switch(tmp_path, protocol, tie, top_k_mode, normalization) -> None:
    from calm.run.job import build_methods
    from tests.cli import compose_config

    cfg = compose_config([f"protocol={protocol}", "method=ablations"], tmp_path)
    methods = build_methods(cfg.method)
    for name in ("calm", "sav", "grw", "hard_vote", "topk_soft", "linear_probe"):
        assert methods[name].tie_break == tie, name
    assert methods["calm"].top_k_mode == top_k_mode
    assert methods["concat"].normalization == normalization
    # a key set directly wins over the switch
    cfg = compose_config(
        [f"protocol={protocol}", "method=ablations", "method.estimators.sav.tie_break=index"], tmp_path
    )
    assert build_methods(cfg.method)["sav"].tie_break == "index"


def test_the_unequal_counts_note_names_the_settings_that_cause_them() -> None:
    """The note names what this job set (the draw, at_most, the pseudo-label drop), never a setting it lacks."""
    from calm.reports import PseudoLabels
    from calm.run.pipeline import count_causes

    def job(pseudo_support: str | None, **protocol: object) -> SimpleNamespace:
        reports = [] if pseudo_support is None else [PseudoLabels(SimpleNamespace(support=pseudo_support))]
        return SimpleNamespace(protocol=paper(**protocol), reports=reports)

    assert count_causes(job(None)) == []
    assert count_causes(job(None, support_draw="all")) == ["protocol.support_draw=all"]
    assert count_causes(job("union", at_most=True)) == ["protocol.at_most=true"]
    assert count_causes(job("replace")) == [
        "support clips without an agreed pseudo label dropped (pseudo_label.support=replace)"
    ]
