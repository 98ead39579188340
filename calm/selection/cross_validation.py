"""Support-set cross-validation, the one home of its rule: folds, fold seeds and the pooled score.

Both choices made without the test set use it: the paper grid's `[cv]` row
(`calm.selection.paper`) and the Optuna search objective (`calm.run.search`). Per support set the
clips are dealt into stratified folds; each fold refits on the other folds and predicts its own
clips; the score is pooled over all held-out clips (so unequal folds weigh by their size).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from calm.methods.metrics import accuracy, macro_f1
from calm.selection.grid import target_tensor
from calm.selection.settings import first_best
from calm.storage.digests import mixed_seed


def fold_seed(cv_seed: int, episode_seed: int) -> int:
    """One fold assignment per (cross-validation seed, episode), so episodes do not share a split pattern."""
    return mixed_seed(cv_seed, episode_seed)


def stratified_folds(labels: np.ndarray, folds: int, seed: int, groups: np.ndarray | None = None) -> np.ndarray:
    """Fold id (n,) per clip: each class's clips shuffled and dealt round-robin, continuing from where
    the previous class stopped so folds stay balanced in size; with folds ≤ every class's count, every
    fold leaves at least one clip of every class for fitting.

    `groups` (n,): rows that must stay in one fold (the questions of one AudioSet clip, a clip drawn
    twice into the support set), so a held-out clip is never also fitted on. Groups are dealt as the
    clips are, by the label of their first row; without groups every row is its own group, which is
    the plain per-clip deal."""
    labels = np.asarray(labels)
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
    _, first_rows, inverse = np.unique(groups, return_index=True, return_inverse=True)
    order = np.argsort(first_rows)  # groups in order of first appearance: singleton groups deal as rows do
    position = np.empty_like(order)
    position[order] = np.arange(len(order))
    group_labels = labels[first_rows[order]]
    rng = np.random.default_rng(seed)
    group_fold = np.empty(len(order), dtype=np.int64)
    start = 0
    for c in np.unique(group_labels):
        members = rng.permutation(np.flatnonzero(group_labels == c))
        group_fold[members] = (start + np.arange(len(members))) % folds
        start += len(members)
    return group_fold[position[inverse.ravel()]]


def every_class_kept(labels: np.ndarray, fold: np.ndarray, n_folds: int, n_classes: int) -> bool:
    """Whether every fold leaves at least one row of every class to fit on."""
    return all(np.bincount(labels[fold != f], minlength=n_classes).min() > 0 for f in range(n_folds))


def support_folds(
    labels: np.ndarray, n_classes: int, folds: int, seed: int, groups: np.ndarray | None = None
) -> tuple[np.ndarray | None, int, int]:
    """(fold id per clip, folds used, smallest class count) for cross-validation on a support set.

    Uses min(folds, smallest class count) folds (counting distinct `groups`: rows of one group stay in
    one fold, `stratified_folds`), so with few shots each fold holds out one clip of every class and
    every class keeps a prototype; fewer folds when grouping would leave a class out of some fold's
    fit; None when no two folds can keep every class.
    """
    labels = np.asarray(labels)
    keys = np.arange(len(labels)) if groups is None else np.asarray(groups)
    distinct = np.zeros(n_classes, dtype=np.int64)
    for c in range(n_classes):
        distinct[c] = len(np.unique(keys[labels == c]))
    smallest = int(distinct.min())
    for n_folds in range(min(int(folds), smallest), 1, -1):
        fold = stratified_folds(labels, n_folds, seed, groups)
        if every_class_kept(labels, fold, n_folds, n_classes):
            return fold, n_folds, smallest
    return None, min(int(folds), smallest), smallest


def too_few_clips(smallest: int) -> str:
    """Why a support set cannot be cross-validated."""
    if smallest >= 2:
        return (
            "no split into 2 or more folds keeps a clip of every class in each fold's fit (the rows of "
            "one clip stay in one fold)"
        )
    return f"a class has {smallest} support clip(s): none can be held out without leaving its class without a prototype"


def pooled_fold_scores(fold: np.ndarray, n_folds: int, score_fold: Any) -> np.ndarray:
    """Held-out scores pooled over folds: Σ_f score_f · |f| / n, where `score_fold(held)` returns the
    percent scores (any shape) of the clips in the boolean mask `held`."""
    pooled = None
    for f in range(n_folds):
        held = fold == f
        part = np.asarray(score_fold(torch.from_numpy(held))) * int(held.sum())
        pooled = part if pooled is None else pooled + part
    return pooled / len(fold)


def support_cv_scores(
    estimator: Any, features: torch.Tensor, labels: np.ndarray | Sequence[int], n_classes: int, folds: int, seed: int
) -> dict[str, Any] | None:
    """Held-out accuracy and macro-F1 (percent) of `estimator` by stratified k-fold on one support set.

    Every held-out clip is predicted by the fit on the other folds; accuracy and macro-F1 are then
    computed over all held-out predictions at once. None when some class has a single clip.
    """
    labels = np.asarray(labels, dtype=np.int64)
    fold, n_folds, smallest = support_folds(labels, n_classes, folds, seed)
    if fold is None:
        return None
    labels_t = torch.tensor(labels)
    pred = np.empty_like(labels)
    for f in range(n_folds):
        held = torch.from_numpy(fold == f)
        fitted = estimator.fit(features[~held], labels_t[~held], n_classes=n_classes)
        pred[held.numpy()] = torch.as_tensor(fitted.predict(features[held])).cpu().numpy()
    return {
        "support_cv_accuracy": accuracy(pred, labels),
        "support_cv_macro_f1": macro_f1(pred, labels, n_classes),
        "folds": n_folds,
    }


def default_choice(setting: dict[str, Any], smallest: int, used: str) -> dict[str, Any]:
    """The record of a choice when the support set cannot be cross-validated (`too_few_clips`): `setting`,
    described as `used` in the note, is taken instead."""
    return {
        "selected_by": "default",
        "setting": setting,
        "setting_index": None,
        "cv_score": None,
        "folds": 0,
        "metric": None,
        "note": f"{too_few_clips(smallest)}, so {used} is used",
    }


def cross_validation_choice(
    fold: np.ndarray,
    n_folds: int,
    score_fold: Any,
    settings: Sequence[dict[str, Any]],
    multi_label: bool,
    selection_metric: str = "accuracy",
) -> dict[str, Any]:
    """The record of a choice by support-set cross-validation: the first setting with the best held-out
    score pooled over the folds (`pooled_fold_scores`, `first_best`), its score, and how it was measured."""
    pooled = pooled_fold_scores(fold, n_folds, score_fold)
    n_clips = len(fold)
    best = first_best(pooled)
    metric = "exact_match" if multi_label else selection_metric
    return {
        "selected_by": "cross_validation",
        "setting": settings[best],
        "setting_index": best,
        "cv_score": float(pooled[best]),
        "folds": n_folds,
        "metric": metric,
        "note": f"stratified {n_folds}-fold cross-validation on the {n_clips} support clips",
    }


def choose_by_cross_validation(
    labels: np.ndarray,
    n_classes: int,
    folds: int,
    seed: int,
    groups: np.ndarray | None,
    targets: np.ndarray | torch.Tensor | None,
    candidates: Sequence[dict[str, Any]],
    score_fold: Callable[[torch.Tensor, torch.Tensor | None], np.ndarray],
    default: tuple[dict[str, Any], str],
    selection_metric: str = "accuracy",
) -> dict[str, Any]:
    """The one support-set cross-validation of both grid engines (CALM's and any estimator's): folds that
    keep every class (`support_folds`, rows of one `groups` id together), or the `default` (setting, how
    the note names it) when no two folds can; else `score_fold(held, held_targets)` scores every candidate
    on a fold's held-out rows (`held_targets`: their multi-label `targets`, exact match ranks) and the first
    best pooled score is chosen (`cross_validation_choice`)."""
    fold, n_folds, smallest = support_folds(labels, n_classes, folds, seed, groups)
    if fold is None:
        return default_choice(default[0], smallest, default[1])
    multi = None if targets is None else target_tensor(targets, len(labels), n_classes)

    def held_out(held: torch.Tensor) -> np.ndarray:
        return score_fold(held, None if multi is None else multi[held])

    return cross_validation_choice(fold, n_folds, held_out, candidates, multi is not None, selection_metric)
