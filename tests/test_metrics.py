"""Metrics: hand-computed values, so a wrong formula fails here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from calm.errors import ConfigError
from calm.methods.metrics import (
    accuracy,
    batched_question_exact_match,
    batched_set_exact_match,
    detector_scores,
    eer,
    exact_match,
    macro_f1,
    mean_ci95,
    paired_difference,
    question_exact_match,
    set_exact_match,
    summarize,
    top_label_sets,
)

T_975_4 = 2.7764451051977987  # Student-t 97.5 % quantile, 4 degrees of freedom
T_975_2 = 4.302652729749464  # Student-t 97.5 % quantile, 2 degrees of freedom


def test_accuracy_numpy_and_torch() -> None:
    assert accuracy(np.array([1, 2, 3, 4]), np.array([1, 2, 0, 4])) == pytest.approx(75.0)
    assert accuracy(torch.tensor([1, 2, 3, 4]), torch.tensor([1, 2, 0, 4])) == pytest.approx(75.0)
    assert accuracy(torch.tensor([0, 1]), np.array([1, 0])) == pytest.approx(0.0)
    assert isinstance(accuracy([1], [1]), float)


def test_accuracy_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError):
        accuracy([1, 2], [1])


def test_macro_f1_hand_example_excludes_absent_class() -> None:
    true = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 0])
    # class 0: TP 1, FP 1, FN 1 -> 2/4; class 1: TP 2, FP 1, FN 0 -> 4/5;
    # class 2: TP 1, FP 0, FN 1 -> 2/3; class 3 absent from both -> excluded.
    expected = (0.5 + 0.8 + 2 / 3) / 3 * 100
    assert macro_f1(pred, true, n_classes=4) == pytest.approx(expected)
    assert macro_f1(torch.tensor(pred), torch.tensor(true), 4) == pytest.approx(expected)


def test_macro_f1_counts_predicted_only_class_as_zero() -> None:
    # class 2 is never true but is predicted: F1 0, and it stays in the mean.
    assert macro_f1([0, 2], [0, 1], n_classes=3) == pytest.approx(100 / 3)


def test_macro_f1_rejects_out_of_range_labels() -> None:
    with pytest.raises(ValueError):
        macro_f1([0, 3], [0, 1], n_classes=3)


def test_mean_ci95_hand_computed() -> None:
    mean, half = mean_ci95([1.0, 2.0, 3.0, 4.0, 5.0])
    # sd(ddof=1) = sqrt(10 / 4)
    assert mean == pytest.approx(3.0)
    assert half == pytest.approx(T_975_4 * math.sqrt(10 / 4) / math.sqrt(5))


def test_mean_ci95_three_values_uses_n_minus_one_dof() -> None:
    mean, half = mean_ci95(np.array([90.0, 92.0, 97.0]))
    sd = math.sqrt(((90 - 93) ** 2 + (92 - 93) ** 2 + (97 - 93) ** 2) / 2)
    assert mean == pytest.approx(93.0)
    assert half == pytest.approx(T_975_2 * sd / math.sqrt(3))


def test_mean_ci95_single_value_has_nan_half_width() -> None:
    mean, half = mean_ci95([42.0])
    assert mean == 42.0
    assert math.isnan(half)


def test_mean_ci95_rejects_empty() -> None:
    with pytest.raises(ValueError):
        mean_ci95([])


def test_paired_difference_hand_computed_and_narrower_than_unpaired() -> None:
    a = [80.0, 82.0, 85.0, 90.0, 78.0]
    b = [78.0, 81.0, 82.0, 89.0, 75.0]
    # differences 2, 1, 3, 1, 3: mean 2, squared deviations 0+1+1+1+1 = 4, sd = 1
    diff, half = paired_difference(a, b)
    assert diff == pytest.approx(2.0)
    assert half == pytest.approx(T_975_4 * 1.0 / math.sqrt(5))

    # the unpaired (Welch-style) half-width from the two separate CIs is much wider
    _, half_a = mean_ci95(a)
    _, half_b = mean_ci95(b)
    unpaired = math.sqrt(half_a**2 + half_b**2)
    assert unpaired > 3 * half
    assert paired_difference(b, a)[0] == pytest.approx(-2.0)


def test_paired_difference_rejects_unequal_lengths() -> None:
    with pytest.raises(ValueError):
        paired_difference([1.0, 2.0], [1.0])


def test_summarize_reports_paired_difference_against_baseline() -> None:
    per_episode = {
        "sav": [78.0, 81.0, 82.0, 89.0, 75.0],
        "calm": [80.0, 82.0, 85.0, 90.0, 78.0],
    }
    out = summarize(per_episode, baseline="sav")
    assert out["calm"]["mean"] == pytest.approx(83.0)
    assert out["calm"]["ci95"] == pytest.approx(mean_ci95(per_episode["calm"])[1])
    assert out["calm"]["diff_mean"] == pytest.approx(2.0)
    assert out["calm"]["diff_ci95"] == pytest.approx(T_975_4 / math.sqrt(5))
    assert out["calm"]["episodes"] == 5
    assert "diff_mean" not in out["sav"]
    assert "diff_mean" not in summarize(per_episode)["calm"]


def test_summarize_unknown_baseline_is_config_error() -> None:
    with pytest.raises(ConfigError, match="How to fix"):
        summarize({"calm": [1.0, 2.0]}, baseline="sav")


# --- equal error rate ------------------------------------------------------------------


def test_eer_at_a_roc_point() -> None:
    # thresholds 0.8, 0.4, 0.35, 0.1 give (FPR, FNR) = (0, .5), (.5, .5), (.5, 0), (1, 0):
    # FPR = FNR = 0.5 exactly at threshold 0.4
    assert eer([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(50.0)


def test_eer_alternating_ranks() -> None:
    # ranks +-+-+-: (FPR, FNR) walks (0,1) (0,2/3) (1/3,2/3) (1/3,1/3): equal at 1/3
    assert eer([0.9, 0.8, 0.7, 0.6, 0.5, 0.4], [1, 0, 1, 0, 1, 0]) == pytest.approx(100 / 3)


def test_eer_interpolates_along_a_tied_segment() -> None:
    # 2 positives, 3 negatives; score 2 ties a positive with a negative, so the ROC moves from
    # (FPR, FNR) = (0, 1/2) to (1/3, 0) in one diagonal step. On it FPR = t/3, FNR = (1-t)/2,
    # equal at t = 3/5: EER = 1/5.
    assert eer([3, 2, 2, 1, 0], [1, 1, 0, 0, 0]) == pytest.approx(20.0)
    # a symmetric tie: (0, 1/2) -> (1/2, 0), crossing at 1/4
    assert eer(np.array([0.9, 0.5, 0.5, 0.1]), np.array([1, 1, 0, 0])) == pytest.approx(25.0)


def test_eer_extremes_symmetry_and_inputs() -> None:
    assert eer([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0]) == 0.0
    assert eer([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0]) == pytest.approx(100.0)
    assert eer([0.5, 0.5, 0.5], [1, 0, 1]) == pytest.approx(50.0)  # an uninformative detector
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = rng.normal(size=200) + labels
    value = eer(scores, labels)
    assert 0 < value < 50
    assert eer(-scores, 1 - labels) == pytest.approx(value)  # the other class as positive
    assert eer(np.exp(scores), labels.astype(bool)) == pytest.approx(value)  # monotone transform
    assert eer(torch.tensor(scores), torch.tensor(labels)) == pytest.approx(value)


@pytest.mark.parametrize(
    ("scores", "labels", "match"),
    [
        ([0.1, 0.2], [1, 1], "both classes"),
        ([0.1, 0.2], [0, 2], "binary"),
        ([0.1, float("nan")], [0, 1], "finite"),
        ([0.1], [0, 1], "entries"),
    ],
)
def test_eer_rejects_bad_input(scores, labels, match) -> None:
    with pytest.raises(ValueError, match=match):
        eer(scores, labels)


def test_detector_scores_from_two_class_scores() -> None:
    class_scores = torch.tensor([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8]])
    np.testing.assert_allclose(detector_scores(class_scores, 0), [0.8, -0.2, -0.6], atol=1e-6)
    np.testing.assert_allclose(detector_scores(class_scores, 1), [-0.8, 0.2, 0.6], atol=1e-6)
    # class 0 is the positive: clips 0 and 1 are positive, ranked above clip 2
    assert eer(detector_scores(class_scores, 0), [1, 1, 0]) == 0.0
    with pytest.raises(ValueError):
        detector_scores(torch.zeros(3, 3), 0)


# --- multi-label -------------------------------------------------------------------------


def test_exact_match_hand_computed() -> None:
    pred = [{1, 2}, [3], (0, 4), [5, 5]]
    true = [[2, 1], {3, 5}, [4, 0], [5]]
    # clip 1 misses label 5; order and repeats do not matter
    assert exact_match(pred, true) == pytest.approx(75.0)
    assert exact_match([[1, 2, 7]], [[1, 2]]) == 0.0  # an extra label is wrong too


def test_exact_match_indicator_matrices() -> None:
    pred = np.array([[1, 1, 0], [0, 0, 1], [1, 0, 0]], dtype=bool)
    true = torch.tensor([[1, 1, 0], [0, 1, 1], [1, 0, 0]])
    assert exact_match(pred, true) == pytest.approx(200 / 3)
    assert exact_match(pred, [[0, 1], [2], [0]]) == pytest.approx(100.0)


def test_exact_match_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="clips"):
        exact_match([[1]], [[1], [2]])
    with pytest.raises(ValueError, match="empty"):
        exact_match([], [])


def test_top_label_sets_takes_the_true_set_size_ties_to_lower_ids() -> None:
    scores = np.array([[0.1, 0.5, 0.5, 0.3], [0.9, 0.1, 0.2, 0.8]])
    assert top_label_sets(scores, [1, 2]) == [{1}, {0, 3}]
    assert top_label_sets(torch.tensor(scores), [3, 4]) == [{1, 2, 3}, {0, 1, 2, 3}]
    with pytest.raises(ValueError):
        top_label_sets(scores, [0, 1])


# Per-label questions: rows 0-1 ask clip 0 (true {0, 1}), row 2 clip 1 (true {2}), rows 3-4 clip 2 (true {1, 3}).
QUESTION_TRUE = [0, 1, 2, 1, 3]
QUESTION_GROUPS = [0, 0, 1, 2, 2]
# Three settings' answers and, per clip, (all questions right?, predicted set == true set?):
#   A: clip 0 (1, 0) no/yes; clip 1 (2) yes/yes; clip 2 (1, 1) no/no ({1} != {1, 3}) -> 1/3, 2/3
#   B: clip 0 (0, 1) yes/yes; clip 1 (3) no/no; clip 2 (1, 3) yes/yes                -> 2/3, 2/3
#   C: clip 0 (0, 0) no/no; clip 1 (2) yes/yes; clip 2 (3, 1) no/yes                  -> 1/3, 2/3
QUESTION_PRED = [[1, 0, 2, 1, 1], [0, 1, 3, 1, 3], [0, 0, 2, 3, 1]]
QUESTION_EXPECTED = [100 / 3, 200 / 3, 100 / 3]
SET_EXPECTED = [200 / 3, 200 / 3, 200 / 3]


def test_question_and_set_exact_match_hand_computed() -> None:
    for pred, questions, sets in zip(QUESTION_PRED, QUESTION_EXPECTED, SET_EXPECTED, strict=True):
        assert question_exact_match(pred, QUESTION_TRUE, QUESTION_GROUPS) == pytest.approx(questions)
        assert set_exact_match(pred, QUESTION_TRUE, QUESTION_GROUPS) == pytest.approx(sets)
    # a two-label clip answered (b, a): its set is right, its questions are not
    assert set_exact_match([1, 0], [0, 1], [5, 5]) == 100.0
    assert question_exact_match([1, 0], [0, 1], [5, 5]) == 0.0


@pytest.mark.parametrize("groups", [QUESTION_GROUPS, [7, 7, 3, 9, 9]])
def test_batched_question_and_set_exact_match_equal_the_scalar_ones(groups: list[int]) -> None:
    pred, true, ids = torch.tensor(QUESTION_PRED), torch.tensor(QUESTION_TRUE), torch.tensor(groups)
    questions, sets = batched_question_exact_match(pred, true, ids), batched_set_exact_match(pred, true, ids)
    assert isinstance(questions, torch.Tensor) and questions.shape == (3,)
    torch.testing.assert_close(questions, torch.tensor(QUESTION_EXPECTED, dtype=torch.float64))
    torch.testing.assert_close(sets, torch.tensor(SET_EXPECTED, dtype=torch.float64))
    rng = np.random.default_rng(0)
    true = rng.integers(0, 5, 40)
    groups_ = np.sort(rng.integers(0, 12, 40))
    pred = np.where(rng.random((6, 40)) < 0.7, true, rng.integers(0, 5, (6, 40)))
    pred[0] = true[::-1]  # every clip's answers reversed: often set-right but question-wrong
    got_q = batched_question_exact_match(torch.tensor(pred), torch.tensor(true), torch.tensor(groups_))
    got_s = batched_set_exact_match(torch.tensor(pred), torch.tensor(true), torch.tensor(groups_))
    assert got_q.tolist() == pytest.approx([question_exact_match(p, true, groups_) for p in pred])
    assert got_s.tolist() == pytest.approx([set_exact_match(p, true, groups_) for p in pred])


def test_question_exact_match_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="groups has 2 entries"):
        question_exact_match([0, 1, 2], [0, 1, 2], [0, 1])
    with pytest.raises(ValueError, match=r"need pred \(S, N\)"):
        batched_set_exact_match(torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="class ids >= 0"):
        batched_question_exact_match(torch.tensor([[-1, 1]]), torch.tensor([0, 1]), torch.tensor([0, 0]))
