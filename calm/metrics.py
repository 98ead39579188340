"""Scores for one episode and summaries over episodes.

Per-episode scores are in percent. Over episodes we report the mean with the
half-width of its 95 % Student-t confidence interval, and, because every method
sees the same episodes, the *paired* difference between two methods: the
episode-to-episode variation they share cancels, so its interval is much
narrower than one built from the two separate intervals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

from calm.errors import ConfigError

__all__ = ["accuracy", "macro_f1", "mean_ci95", "paired_difference", "summarize"]


def _as_numpy(x: Any) -> np.ndarray:
    """Torch tensors (any device) or array-likes to a numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _check_pair(pred: Any, true: Any) -> tuple[np.ndarray, np.ndarray]:
    pred, true = _as_numpy(pred).ravel(), _as_numpy(true).ravel()
    if pred.shape != true.shape:
        raise ValueError(f"pred has {pred.size} entries but true has {true.size}")
    if pred.size == 0:
        raise ValueError("cannot score an empty set of predictions")
    return pred, true


def accuracy(pred: Any, true: Any) -> float:
    """Percent of predictions equal to the true label (numpy or torch inputs)."""
    pred, true = _check_pair(pred, true)
    return float(np.mean(pred == true) * 100.0)


def macro_f1(pred: Any, true: Any, n_classes: int) -> float:
    """Unweighted mean of per-class F1, in percent.

    Classes absent from both ``pred`` and ``true`` (e.g. not in this episode)
    are left out of the mean: their F1 is undefined, and counting them as 0
    or 1 would make the score depend on classes the episode never saw.
    """
    pred, true = _check_pair(pred, true)
    pred, true = pred.astype(np.int64), true.astype(np.int64)
    for name, arr in (("pred", pred), ("true", true)):
        if arr.min() < 0 or arr.max() >= n_classes:
            raise ValueError(f"{name} has labels outside 0..{n_classes - 1}")
    tp = np.bincount(true[pred == true], minlength=n_classes)
    n_pred = np.bincount(pred, minlength=n_classes)
    n_true = np.bincount(true, minlength=n_classes)
    present = (n_pred + n_true) > 0
    # F1 = 2TP / (2TP + FP + FN) = 2TP / (n_pred + n_true)
    f1 = 2.0 * tp[present] / (n_pred[present] + n_true[present])
    return float(f1.mean() * 100.0)


def mean_ci95(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and half-width of the 95 % Student-t confidence interval of the mean.

    Half-width = t_{0.975, n-1} * sd(ddof=1) / sqrt(n). With one value the
    sample standard deviation is undefined, so the half-width is ``nan``
    rather than 0 (which would claim a certainty one episode cannot give).
    """
    x = _as_numpy(values).astype(np.float64).ravel()
    n = x.size
    if n == 0:
        raise ValueError("mean_ci95 needs at least one value")
    mean = float(x.mean())
    if n == 1:
        return mean, math.nan
    half = float(stats.t.ppf(0.975, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return mean, half


def paired_difference(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray
) -> tuple[float, float]:
    """Mean and 95 % CI half-width of the per-episode differences ``a - b`` (paired t).

    ``a[i]`` and ``b[i]`` must be scores on the same episode ``i``.
    """
    a, b = _as_numpy(a).astype(np.float64).ravel(), _as_numpy(b).astype(np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired scores need equal lengths, got {a.size} and {b.size}")
    return mean_ci95(a - b)


def summarize(
    per_episode: dict[str, Sequence[float]], baseline: str | None = None
) -> dict[str, dict[str, float]]:
    """Mean, CI and (vs ``baseline``) paired difference for each method.

    Returns ``{method: {"mean", "ci95", "episodes"}}``; when ``baseline`` is
    given, every other method also gets ``"diff_mean"`` and ``"diff_ci95"``
    for (method - baseline) on the same episodes.
    """
    if baseline is not None and baseline not in per_episode:
        raise ConfigError(
            f"Baseline method {baseline!r} has no results; methods run: {sorted(per_episode)}.",
            "Set the baseline to one of the methods being run, or add it to the run.",
        )
    out: dict[str, dict[str, float]] = {}
    for method, scores in per_episode.items():
        mean, ci = mean_ci95(scores)
        row = {"mean": mean, "ci95": ci, "episodes": len(scores)}
        if baseline is not None and method != baseline:
            row["diff_mean"], row["diff_ci95"] = paired_difference(scores, per_episode[baseline])
        out[method] = row
    return out
