"""Scores for one episode and summaries over episodes.

Per-episode scores are in percent: accuracy and macro-F1 for classification, the equal error rate
for a binary detector (spoofing), exact match for multi-label clips (scored from the top-|Y| classes of
one row per clip, or from one single-label question row per positive label). Over episodes we report the mean with the
half-width of its 95 % Student-t confidence interval, and, because every method
sees the same episodes, the *paired* difference between two methods: the
episode-to-episode variation they share cancels, so its interval is much
narrower than one built from the two separate intervals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import stats

from calm.errors import ConfigError

__all__ = [
    "accuracy",
    "batched_accuracy",
    "batched_exact_match",
    "batched_macro_f1",
    "batched_question_exact_match",
    "batched_set_exact_match",
    "detector_scores",
    "eer",
    "exact_match",
    "macro_f1",
    "mean_ci95",
    "paired_difference",
    "question_exact_match",
    "set_exact_match",
    "summarize",
    "top_label_sets",
]


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


def eer(scores: Any, labels: Any) -> float:
    """Equal error rate in percent of a binary detector: where false-positive rate = miss rate.

    ``scores`` rank clips (higher = more likely the positive class); ``labels`` are 1/True for
    positive clips, 0/False for negative ones. The ROC is built exactly, one point per distinct
    score (tied clips enter together, so ties give a diagonal segment), from (0, 0) to (1, 1); the
    EER is the point on that piecewise-linear curve where FPR = FNR = 1 - TPR, found by linear
    interpolation between the two ROC points around the crossing. Symmetric: negating the scores and
    swapping the classes gives the same value.
    """
    scores, labels = _check_pair(scores, labels)
    scores = scores.astype(np.float64)
    if not np.isfinite(scores).all():
        raise ValueError("eer needs finite scores")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("eer needs binary labels (1 or True for the positive class, 0 or False otherwise)")
    positive = labels.astype(bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"eer needs both classes, got {n_pos} positive and {n_neg} negative clips")
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_pos = scores[order], positive[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(sorted_scores)), sorted_scores.size - 1]
    tp = np.r_[0, np.cumsum(sorted_pos)[last_of_tie]]
    fp = np.r_[0, np.cumsum(~sorted_pos)[last_of_tie]]
    fpr, fnr = fp / n_neg, 1.0 - tp / n_pos
    gap = fpr - fnr  # -1 at the first point, +1 at the last, non-decreasing in between
    i = int(np.flatnonzero(gap >= 0)[0])
    if gap[i] == 0:
        return float(fpr[i] * 100.0)
    t = -gap[i - 1] / (gap[i] - gap[i - 1])
    return float((fpr[i - 1] + t * (fpr[i] - fpr[i - 1])) * 100.0)


def detector_scores(class_scores: Any, positive: int) -> np.ndarray:
    """One detection score per clip from (m, 2) class scores: score[positive] - score[other].

    Turns a two-class estimator (e.g. CALM on bonafide/spoof) into the ranking `eer` needs.
    """
    s = _as_numpy(class_scores).astype(np.float64)
    if s.ndim != 2 or s.shape[1] != 2 or positive not in (0, 1):
        raise ValueError(f"need (m, 2) class scores and positive in {{0, 1}}, got shape {s.shape}, positive {positive}")
    return s[:, positive] - s[:, 1 - positive]


def _label_sets(x: Any) -> list[frozenset[int]]:
    """Label sets from a sequence of iterables of class ids, or from an (m, C) 0/1 indicator matrix."""
    if hasattr(x, "detach") or (isinstance(x, np.ndarray) and x.ndim == 2):
        matrix = _as_numpy(x)
        if matrix.ndim != 2 or not np.isin(matrix, (0, 1)).all():
            raise ValueError("a label-set matrix must be (m, C) with 0/1 or boolean entries")
        return [frozenset(np.flatnonzero(row).tolist()) for row in matrix]
    return [frozenset(int(c) for c in labels) for labels in x]


def exact_match(pred_sets: Any, true_sets: Any) -> float:
    """Percent of clips whose predicted label set equals the true set exactly (multi-label).

    Each argument is a sequence of per-clip label collections (order and repeats ignored) or an
    (m, C) indicator matrix. A clip with one label wrong, missing or extra counts as wrong.
    """
    pred, true = _label_sets(pred_sets), _label_sets(true_sets)
    if len(pred) != len(true):
        raise ValueError(f"pred has {len(pred)} clips but true has {len(true)}")
    if not true:
        raise ValueError("cannot score an empty set of predictions")
    return float(np.mean([p == t for p, t in zip(pred, true, strict=True)]) * 100.0)


def top_label_sets(scores: Any, sizes: Sequence[int] | np.ndarray) -> list[frozenset[int]]:
    """Predicted label set per clip: its ``sizes[i]`` highest-scoring classes, ties to the lower id.

    How a single-label estimator answers a multi-label clip here: it is told how many labels the
    clip has (the size of its true set) and names that many classes; `exact_match` then scores them.
    """
    s = _as_numpy(scores)
    sizes = np.asarray(sizes, dtype=np.int64).ravel()
    if s.ndim != 2 or sizes.shape[0] != s.shape[0]:
        raise ValueError(f"need (m, C) scores and m set sizes, got shapes {s.shape} and {sizes.shape}")
    if (sizes < 1).any() or (sizes > s.shape[1]).any():
        raise ValueError(f"set sizes must lie in 1..{s.shape[1]}")
    order = np.argsort(-s, axis=1, kind="stable")
    return [frozenset(row[:k].tolist()) for row, k in zip(order, sizes, strict=True)]


def batched_accuracy(pred: torch.Tensor, true: torch.Tensor, n_classes: int) -> np.ndarray:
    """`accuracy` of many settings at once: percent (S,) from predictions (S, m) and labels (m,)."""
    return prediction_counts(pred, true, n_classes).accuracy()


def prediction_counts(pred: torch.Tensor, true: torch.Tensor, n_classes: int) -> PredictionCounts:
    """What accuracy and macro-F1 of many settings need, counted on one chunk of queries: add the
    counts of every chunk, then read the metrics off the total (a test set never held at once)."""
    correct = (pred == true).double()
    n_pred = torch.zeros(pred.shape[0], n_classes, dtype=torch.float64, device=pred.device)
    n_pred.scatter_add_(1, pred, torch.ones_like(correct))
    tp = torch.zeros_like(n_pred).scatter_add_(1, pred, correct)
    return PredictionCounts(
        correct.sum(dim=1), n_pred, tp, torch.bincount(true, minlength=n_classes).double(), int(true.shape[0])
    )


@dataclass
class PredictionCounts:
    """Per setting: correct predictions (S,), predictions per class (S, C), true positives per class
    (S, C); per class: true clips (C,); and the number of queries."""

    correct: torch.Tensor
    n_pred: torch.Tensor
    tp: torch.Tensor
    n_true: torch.Tensor
    n: int

    def __add__(self, other: PredictionCounts) -> PredictionCounts:
        return PredictionCounts(
            self.correct + other.correct,
            self.n_pred + other.n_pred,
            self.tp + other.tp,
            self.n_true + other.n_true,
            self.n + other.n,
        )

    def accuracy(self) -> np.ndarray:
        """Percent correct per setting, as `accuracy`."""
        return self.correct.div(self.n).mul(100.0).cpu().numpy()

    def macro_f1(self) -> np.ndarray:
        """Macro-F1 per setting, as `macro_f1`: classes absent from both a setting's predictions and
        the truth are left out of its mean; a class predicted but never true counts with F1 = 0."""
        denominator = self.n_pred + self.n_true
        present = denominator > 0
        f1 = torch.where(present, 2 * self.tp / denominator.clamp_min(1.0), 0.0)
        return (f1.sum(dim=1) / present.sum(dim=1) * 100.0).cpu().numpy()


def batched_macro_f1(pred: torch.Tensor, true: torch.Tensor, n_classes: int) -> np.ndarray:
    """`macro_f1` of many settings at once: percent (S,) from predictions (S, m) and labels (m,)."""
    return prediction_counts(pred, true, n_classes).macro_f1()


def exact_hits(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per setting, how many clips (of one chunk) `top_label_sets` gets exactly right: (S,) float64.

    scores (C, S, m), class axis first as the grid computes them; targets (m, C) bool true sets.
    A clip is exact when its top-|true set| classes (ties to the lower class id) are its true set:
    every true class ranks above every other, i.e. min over true > max over the rest, or equal with
    all tied true classes at lower ids than all tied others.
    """
    true = targets.t().unsqueeze(1)  # (C, 1, m)
    n_classes = scores.shape[0]
    ids = torch.arange(n_classes, device=scores.device)[:, None, None]
    low = torch.where(true, scores, math.inf).amin(dim=0)
    high = torch.where(true, -math.inf, scores).amax(dim=0)
    exact = low > high
    tied = low == high
    if bool(tied.any()):
        last_true = torch.where(true & (scores == low), ids, -1).amax(dim=0)
        first_other = torch.where(~true & (scores == high), ids, n_classes).amin(dim=0)
        exact |= tied & (last_true < first_other)
    return exact.double().sum(dim=1)


def batched_exact_match(scores: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    """`exact_match` of `top_label_sets` for many settings at once: percent (S,); see `exact_hits`."""
    return exact_hits(scores, targets).div(targets.shape[0]).mul(100.0).cpu().numpy()


def _check_groups(pred: Any, true: Any, groups: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pred, true = _check_pair(pred, true)
    groups = _as_numpy(groups).ravel()
    if groups.shape != true.shape:
        raise ValueError(f"groups has {groups.size} entries but true has {true.size}")
    return pred, true, groups


def question_exact_match(pred: Any, true: Any, groups: Any) -> float:
    """Percent of clips whose every question is answered right (the authors' CALM runner's
    "exact_match_questions"). One row per question: `pred` and `true` its predicted and asked-about
    label, `groups` which clip it belongs to (`calm.data.questions.question_groups`)."""
    pred, true, groups = _check_groups(pred, true, groups)
    clips = np.unique(groups)
    return float(np.mean([np.all(pred[groups == g] == true[groups == g]) for g in clips]) * 100.0)


def set_exact_match(pred: Any, true: Any, groups: Any) -> float:
    """Percent of clips whose set of predicted labels equals their set of true labels (the authors' SAV
    runner's "exact_match_sets"). A clip's true set is the `true` of its rows (one question per positive
    label), its predicted set the `pred` of its rows, so a clip {a, b} answered (b, a) counts as right
    here but not in `question_exact_match`, and one answered (a, a) counts as wrong in both."""
    pred, true, groups = _check_groups(pred, true, groups)
    clips = np.unique(groups)
    return float(np.mean([set(pred[groups == g].tolist()) == set(true[groups == g].tolist()) for g in clips]) * 100.0)


def _per_group(flags: torch.Tensor, groups: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Sum of `flags` (S, N) over the rows of each group: (S, G) float64."""
    out = torch.zeros(flags.shape[0], n_groups, dtype=torch.float64, device=flags.device)
    return out.scatter_add_(1, groups.expand(flags.shape[0], -1), flags.double())


def _distinct_per_group(keys: torch.Tensor, n_classes: int, n_groups: int) -> torch.Tensor:
    """Distinct (group, label) keys = group * n_classes + label of (S, N) rows, counted per group: (S, G)."""
    ordered = keys.sort(dim=1).values
    first = torch.ones_like(ordered, dtype=torch.bool)
    first[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    return _per_group(first, ordered // n_classes, n_groups)


def _dense_groups(pred: torch.Tensor, true: torch.Tensor, groups: torch.Tensor) -> tuple[torch.Tensor, int]:
    if pred.dim() != 2 or true.shape != (pred.shape[1],) or groups.shape != true.shape:
        raise ValueError(
            f"need pred (S, N), true (N,) and groups (N,), got {tuple(pred.shape)}, "
            f"{tuple(true.shape)} and {tuple(groups.shape)}"
        )
    if true.numel() == 0:
        raise ValueError("cannot score an empty set of predictions")
    if bool((pred < 0).any()) or bool((true < 0).any()):
        raise ValueError("labels must be class ids >= 0")
    dense = torch.unique(groups, return_inverse=True)[1].to(device=pred.device, dtype=torch.int64)
    return dense, int(dense.max()) + 1


def batched_question_exact_match(pred: torch.Tensor, true: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """`question_exact_match` of many settings at once: percent (S,) float64 from per-question
    predictions (S, N), labels (N,) and clip groups (N,)."""
    dense, n_groups = _dense_groups(pred, true, groups)
    wrong = _per_group(pred != true.to(pred.device), dense, n_groups)
    return (wrong == 0).double().mean(dim=1) * 100.0


def batched_set_exact_match(pred: torch.Tensor, true: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """`set_exact_match` of many settings at once: percent (S,) float64. A clip's predicted set P equals
    its true set T when every prediction is in T and P has as many distinct labels as T (P ⊆ T and
    |P| = |T|); labels are compared as keys group * C + label, so no (G, C) table is built."""
    dense, n_groups = _dense_groups(pred, true, groups)
    true = true.to(pred.device).long()
    pred = pred.long()
    n_classes = int(max(int(pred.max()), int(true.max()))) + 1
    true_keys = dense * n_classes + true
    pred_keys = dense * n_classes + pred
    outside = _per_group(~torch.isin(pred_keys, true_keys), dense, n_groups)
    n_pred = _distinct_per_group(pred_keys, n_classes, n_groups)
    n_true = _distinct_per_group(true_keys.unsqueeze(0), n_classes, n_groups)
    return ((outside == 0) & (n_pred == n_true)).double().mean(dim=1) * 100.0


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


def paired_difference(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and 95 % CI half-width of the per-episode differences ``a - b`` (paired t).

    ``a[i]`` and ``b[i]`` must be scores on the same episode ``i``.
    """
    a, b = _as_numpy(a).astype(np.float64).ravel(), _as_numpy(b).astype(np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired scores need equal lengths, got {a.size} and {b.size}")
    return mean_ci95(a - b)


def summarize(per_episode: dict[str, Sequence[float]], baseline: str | None = None) -> dict[str, dict[str, float]]:
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
