"""Metrics: hand-computed values, so a wrong formula fails here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from calm.errors import ConfigError
from calm.metrics import accuracy, macro_f1, mean_ci95, paired_difference, summarize

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
