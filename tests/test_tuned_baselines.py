"""protocol=paper sweeps of every tuned method: hand-worked CV and oracle choices of a baseline, the
generic sweep equal to fitting each point from scratch, top_k beyond the heads, CALM's tie and masking
rules in its grid, per-label question scores, and the grid config's home."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import calm.methods.metrics
from calm.config.schema import paper_grids
from calm.errors import ConfigError
from calm.methods import GRW, SAV, Estimator, TopKSoft
from calm.methods.metrics import accuracy, macro_f1
from calm.selection import (
    CalmGrid,
    MethodGrid,
    SweepPoint,
    evaluate_grid,
    paper_sweep_report,
    sweep_split,
)
from tests.cli import compose_config
from tests.grids import config_grids


def sav_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """3 heads x 2 dims, 2 classes, 2 support clips per class, 4 queries.

    Head 0 separates the classes on the support set ([1,0] vs [0,1]); heads 1 and 2 put every clip at
    [1,0], so their two prototypes coincide and they vote class 0 (class ties go to the lower class).
    SAV's head scores on the support (and on every fold's fit): head 0 gets 4 of 4 (2 of 2) clips
    right, heads 1 and 2 half, so head 0 ranks first.
    - top_k=1: head 0 alone decides. top_k=all: heads 1 and 2 outvote it, always class 0.
    - Test queries have head 0 REVERSED (class 0 at [0,1], class 1 at [1,0]): top_k=1 gets 0 %,
      top_k=all 50 % (the two class-0 queries).
    - Cross-validation (2 folds, one clip per class held out each): top_k=1 gets 100 %, all 50 %.
    """
    e0, e1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])

    def clips(head0: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack([torch.stack([h, e0, e0]) for h in head0])

    support = clips([e0, e0, e1, e1])
    labels = torch.tensor([0, 0, 1, 1])
    query = clips([e1, e1, e0, e0])
    query_labels = torch.tensor([0, 0, 1, 1])
    return support, labels, query, query_labels


def test_sav_cv_and_oracle_choices_are_the_hand_worked_ones() -> None:
    support, labels, query, query_labels = sav_split()
    # [1024, 1, 3] on a 3-head model: 1024 and 3 both mean all heads -> points (all, 1), 1024 and 3 clamped
    grid, clamped = MethodGrid.from_config(
        "sav", {"top_k": [1024, 1, 3]}, {"top_k", "tie_break", "tie_seed"}, "configs/grids/x.yaml"
    ).for_heads(3)
    assert clamped == (1024, 3)
    points = grid.points()
    assert [p.as_dict() for p in points] == [{"top_k": None}, {"top_k": 1}]
    report = paper_sweep_report(
        lambda values: SAV(**values), points, support, labels, query, query_labels, n_classes=2, folds=5, seed=0
    )
    assert report.cv_choice["setting"] == {"top_k": 1} and report.cv_choice["folds"] == 2
    assert report.cv_choice["cv_score"] == 100.0 and report.cv_choice["test"]["accuracy"] == 0.0
    assert report.oracle["setting"] == {"top_k": None} and report.oracle["test"]["accuracy"] == 50.0
    assert report.oracle["label"].startswith("oracle") and "support set" in report.cv_choice["label"]
    # EER, positive class 1, oracle top_k=all: class-0 queries get 1 vote for class 1 (head 0, reversed),
    # class-1 queries 0 votes: every positive scores below every negative -> EER 100
    eer_report = paper_sweep_report(
        lambda values: SAV(**values), points, support, labels, query, query_labels, n_classes=2, positive_class=1
    )
    assert eer_report.oracle["test"]["eer"] == 100.0


class Lazy:
    """Query rows read a slice at a time; records the largest read (the sweep must stream) and how many
    rows were read in all (the sweep must not reread them per point)."""

    def __init__(self, rows: torch.Tensor) -> None:
        self.rows, self.largest, self.read = rows.half(), 0, 0

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, part: slice) -> torch.Tensor:
        self.largest = max(self.largest, part.stop - part.start)
        self.read += part.stop - part.start
        return self.rows[part]


@pytest.mark.parametrize(
    "make, axes",
    [
        (lambda v: GRW(**v), {"tau": [0.01, 1.0], "tau_w": [0.5, 7.0], "top_k": [2, 100]}),
        (lambda v: TopKSoft(**v), {"tau": [0.001, 0.03], "top_k": [1, 3, 784]}),
    ],
)
def test_generic_sweep_equals_fitting_each_point_from_scratch(make, axes) -> None:
    g = torch.Generator().manual_seed(3)
    centers = torch.randn(3, 6, 4, generator=g)
    labels, query_labels = torch.arange(3).repeat_interleave(3), torch.randint(0, 3, (17,), generator=g)
    support = (centers[labels] + 0.8 * torch.randn(9, 6, 4, generator=g)).half()
    query = centers[query_labels] + 0.8 * torch.randn(17, 6, 4, generator=g)
    points = MethodGrid.from_config("m", axes, set(axes), "x").for_heads(6)[0].points()
    lazy = Lazy(query)
    result = sweep_split(make, points, support, labels, lazy, query_labels, n_classes=3, query_chunk=5)
    assert lazy.largest == 5, "queries are read query_chunk rows at a time"
    assert lazy.read == 17, "every point fits in the default budget: the 17 test rows are read once"
    one_by_one = Lazy(query)
    alone = sweep_split(
        make, points, support, labels, one_by_one, query_labels, n_classes=3, query_chunk=5, fitted_budget=0
    )
    assert one_by_one.read == 17 * len(points), "a budget of 0 bytes fits one point per read of the test rows"
    assert np.array_equal(alone.accuracy, result.accuracy) and np.array_equal(alone.macro_f1, result.macro_f1)
    for i, point in enumerate(points):
        pred = make(point.as_dict()).fit(support.float(), labels, n_classes=3).predict(query.half().float())
        assert result.accuracy[i] == accuracy(pred, query_labels)
        assert result.macro_f1[i] == pytest.approx(macro_f1(pred, query_labels, 3))


def test_calm_grid_carries_the_estimators_tie_rule_and_top_k_mode() -> None:
    """At a tiny tau the clamped margins saturate at 1 and most heads tie, so the random tie order and
    the authors' epsilon masking change which heads count: the grid must agree with CALM from scratch."""
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 12, 3, generator=g)
    labels, query_labels = torch.arange(4).repeat_interleave(2), torch.randint(0, 4, (40,), generator=g)
    support = centers[labels] + 0.3 * torch.randn(8, 12, 3, generator=g)
    query = centers[query_labels] + 1.5 * torch.randn(40, 12, 3, generator=g)
    grid = CalmGrid(
        ("margin_clamped", "prob"),
        (1e-4, 0.5),
        (0.5, 10.0),
        (2, None),
        (0.0,),
        top_k_mode="epsilon_leak",
        tie_break="random",
        tie_seed=7,
    )
    result = evaluate_grid(support, labels, query, query_labels, grid)
    for i, setting in enumerate(result.settings):
        assert (setting.top_k_mode, setting.tie_break, setting.tie_seed) == ("epsilon_leak", "random", 7)
        pred = setting.estimator().fit(support, labels).predict(query)
        assert result.accuracy[i] == accuracy(pred, query_labels), setting


def test_calm_grid_top_k_above_the_heads_means_all_heads() -> None:
    grid, clamped = CalmGrid.from_config(
        {"reliability": ["prob"], "tau": [1], "tau_w": [1], "shrinkage": [0], "top_k": [2, 12, "all", 784]}
    ).for_heads(12)
    assert grid.top_k == (2, None) and clamped == (12, 784)


class ByFeature(Estimator):
    """A user's estimator: predicts the class written in head 0, dim 0 of each query, plus `shift` (mod C)."""

    fitted_attribute = "n_classes_"

    def __init__(self, shift: int = 0) -> None:
        self.shift = shift

    def fit(self, features, labels, *, n_classes=None, tie_seed=None) -> ByFeature:
        self._support(features, labels, n_classes)
        return self

    def predict_scores(self, features) -> torch.Tensor:
        pred = (self._query(features)[:, 0, 0].round().long() + self.shift) % self.n_classes_
        return torch.nn.functional.one_hot(pred, self.n_classes_).float()


@pytest.mark.skipif(
    not hasattr(calm.methods.metrics, "batched_question_exact_match"),
    reason="the clip-level exact-match metrics (calm.methods.metrics) have not landed yet",
)
def test_question_groups_give_both_exact_matches() -> None:
    """Clip A has labels {0, 1} (questions 0 and 1), clip B label {2} (question 2); true = [0, 1, 2].
    shift 0 predicts [1, 0, 2]: A's questions both wrong, yet its predicted set {0, 1} is its true set;
    B right -> questions 50 %, sets 100 %, accuracy 1/3. shift 2 predicts [0, 2, 1]: A has one question
    right, set {0, 2} wrong; B wrong -> 0 %, 0 %."""
    support = torch.tensor([0.0, 1.0, 2.0]).reshape(3, 1, 1)
    query = torch.tensor([1.0, 0.0, 2.0]).reshape(3, 1, 1)
    true, groups = torch.tensor([0, 1, 2]), torch.tensor([0, 0, 1])
    result = sweep_split(
        lambda v: ByFeature(**v),
        [SweepPoint((("shift", 0),)), SweepPoint((("shift", 2),))],
        support,
        torch.tensor([0, 1, 2]),
        query,
        true,
        n_classes=3,
        query_groups=groups,
    )
    assert result.metric == "exact_match_questions"
    assert result.by_clip["exact_match_questions"].tolist() == [50.0, 0.0]
    assert result.by_clip["exact_match_sets"].tolist() == [100.0, 0.0]
    assert result.accuracy[0] == pytest.approx(100 / 3) and result.best() == 0


def test_paper_protocol_without_a_grid_file_names_the_file_to_write() -> None:
    cfg = {"protocol": {"_target_": "calm.protocols.PaperProtocol"}, "dataset": {"name": "mine"}}
    with pytest.raises(ConfigError) as err:
        paper_grids(cfg)
    assert "configs/grids/mine.yaml" in err.value.fix
    assert paper_grids({"protocol": {"_target_": "calm.protocols.EpisodicProtocol"}, "dataset": {}}) is None


def test_grid_files_are_selected_by_dataset(tmp_path: Path) -> None:
    esc50 = paper_grids(compose_config(["dataset=esc50", "protocol=paper"], tmp_path))
    assert esc50["calm"]["tau"] == [0.03] and esc50["sav"] == config_grids("generic")["sav"]
    spoof = paper_grids(compose_config(["dataset=asvspoof2019_la", "protocol=paper"], tmp_path))
    assert spoof["sav"]["top_k"] == [20, 40, 100] and len(spoof["grw"]["tau"]) == 6
    fsdd = paper_grids(compose_config(["dataset=fsdd", "protocol=paper"], tmp_path))
    assert fsdd == config_grids("generic")
    vggsound = paper_grids(compose_config(["dataset=vggsound", "protocol=paper"], tmp_path))["calm"]
    assert vggsound == config_grids("vggsound")["calm"] != config_grids("vggsound_av")["calm"], (
        "VGGSound audio has its own grid (the authors' slurm/vggsound/mcq_sav_prwe.sh), not the AV one"
    )


def test_calm_grid_scores_question_groups_as_the_estimators_predictions() -> None:
    """The grid engine keeps each settings chunk's predictions for the clip-level scores: they must be
    those of CALM's own predictions, grouped the same way (clips of 1 to 3 questions)."""
    g = torch.Generator().manual_seed(1)
    centers = torch.randn(3, 8, 4, generator=g)
    labels, query_labels = torch.arange(3).repeat_interleave(3), torch.randint(0, 3, (21,), generator=g)
    support = centers[labels] + 0.5 * torch.randn(9, 8, 4, generator=g)
    query = centers[query_labels] + 1.2 * torch.randn(21, 8, 4, generator=g)
    groups = torch.tensor([0, 0, 1, 2, 2, 2, 3, 4, 4, 5, 6, 6, 6, 7, 8, 8, 9, 10, 10, 11, 11])
    grid = CalmGrid(("margin_clamped",), (0.05, 1.0), (0.5,), (2, None), (0.0,))
    result = evaluate_grid(support, labels, query, query_labels, grid, query_groups=groups.numpy(), query_chunk=4)
    assert result.metric == "exact_match_questions"
    for i, setting in enumerate(result.settings):
        pred = setting.estimator().fit(support, labels).predict(query)[None]
        assert result.by_clip["exact_match_questions"][i] == float(
            calm.methods.metrics.batched_question_exact_match(pred, query_labels, groups)[0]
        )
        assert result.by_clip["exact_match_sets"][i] == float(
            calm.methods.metrics.batched_set_exact_match(pred, query_labels, groups)[0]
        )


def test_cross_validation_holds_out_each_source_clip_whole() -> None:
    """Rows of one group (one AudioSet clip's questions, a clip drawn twice) share a fold, so a held-out
    clip is never also fitted on; singleton groups deal exactly as rows did; when grouping leaves a class
    out of some fold's fit, fewer folds are used, and none when two cannot keep every class."""
    from calm.selection.cross_validation import (
        every_class_kept,
        stratified_folds,
        support_folds,
        too_few_clips,
    )

    labels = np.array([0, 0, 1, 1, 0, 1, 0, 1])
    duplicated = np.array([7, 7, 3, 3, 9, 4, 5, 8])  # rows 0-1 and 2-3 are one clip each, drawn twice
    for seed in range(20):
        fold, n_folds, smallest = support_folds(labels, 2, 5, seed, duplicated)
        assert (smallest, n_folds) == (3, 3), "3 distinct clips per class, so at most 3 folds"
        assert fold[0] == fold[1] and fold[2] == fold[3]
        assert every_class_kept(labels, fold, n_folds, 2)
        rows = np.array([11, 5, 2, 8, 0, 13, 4, 6])  # unique support rows, in support order
        assert np.array_equal(stratified_folds(labels, 3, seed, rows), stratified_folds(labels, 3, seed))
    # clip A asks about classes 0 and 1 (rows 0, 1), clip B is class 0, clip C class 1: two folds hold
    # out A and {B, C}; whenever the deal puts A with C, class 1 has nothing left to fit on
    questions, groups = np.array([0, 1, 0, 1]), np.array([0, 0, 1, 2])
    outcomes = {support_folds(questions, 2, 5, seed, groups)[0] is None for seed in range(40)}
    assert outcomes == {True, False}, "some deals keep every class, some cannot: those are refused"
    for seed in range(40):
        fold, n_folds, _ = support_folds(questions, 2, 5, seed, groups)
        assert fold is None or (fold[0] == fold[1] and every_class_kept(questions, fold, n_folds, 2))
    assert "rows of one clip stay in one fold" in too_few_clips(2)
