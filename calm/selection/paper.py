"""protocol=paper's two choices of a setting: one made without the test set (support-set
cross-validation), and the best of grid on test, labelled as an oracle (how the reference scripts
chose). Both are reported, side by side, for every tuned method: CALM through its grid engine
(`paper_grid_report`), any other estimator through the estimator API (`paper_sweep_report`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from calm.methods.prototypes import FeaturesLike, LabelsLike
from calm.methods.prototypes import support_labels as checked_labels
from calm.metrics import detector_scores, eer
from calm.selection.cross_validation import (
    cross_validation_choice,
    pooled_fold_scores,
    support_folds,
    too_few_clips,
)
from calm.selection.grid import (
    QueryRows,
    RowSubset,
    SplitScorer,
    evaluate_grid,
    query_label_tensor,
    score_settings,
    target_tensor,
)
from calm.selection.settings import (
    DEFAULT_SETTING,
    CalmGrid,
    CalmSetting,
    GridResult,
    grid_settings,
)
from calm.selection.sweep import Build, SweepPoint, point_eer, sweep_cross_validation, sweep_split

ORACLE_LABEL = "oracle: best of grid on the test set (optimistic; how the reference scripts chose)"
CV_LABEL = "chosen by cross-validation on the support set; the test set is not used"


def select_by_cross_validation(
    support_features: FeaturesLike,
    support_labels: LabelsLike,
    grid: CalmGrid | Sequence[CalmSetting],
    folds: int = 5,
    seed: int = 0,
    *,
    n_classes: int | None = None,
    support_targets: np.ndarray | torch.Tensor | None = None,
    support_groups: np.ndarray | None = None,
    chunk: int = 256,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """Choose a setting from the support set alone, by stratified k-fold cross-validation (rows of one
    `support_groups` id, e.g. the questions of one clip, held out together).

    Each fold refits prototypes and reliabilities on the rest and scores the whole grid on the
    held-out clips; the pooled held-out accuracy (exact match with `support_targets`) ranks the
    settings, ties to the first in grid order. With a single clip in some class, CALM's default
    setting is returned instead (with the grid's top_k_mode and tie rule), with ``selected_by: "default"``
    and the reason in ``note``.
    """
    settings = grid_settings(grid)
    features = support_features  # kept in its dtype (fp16 from the cache): each fold's grid upcasts in chunks
    labels, n_classes = checked_labels(tuple(features.shape), support_labels, n_classes)
    labels_np = labels.cpu().numpy()
    fold, n_folds, smallest = support_folds(labels_np, n_classes, folds, seed, support_groups)
    if fold is None:
        return {"selected_by": "default", "setting": default_setting(settings).as_dict(), "setting_index": None,
                "cv_score": None, "folds": 0, "metric": None,
                "note": f"{too_few_clips(smallest)}, so CALM's default setting is used"}
    targets = None if support_targets is None else target_tensor(support_targets, len(labels_np), n_classes)

    def score_fold(held: torch.Tensor) -> np.ndarray:
        held = held.to(labels.device)
        keep, out = held.nonzero().flatten().cpu(), (~held).nonzero().flatten().cpu()
        return evaluate_grid(RowSubset(features, out), labels[~held], RowSubset(features, keep), labels[held], settings,
                             n_classes=n_classes, query_targets=None if targets is None else targets[held],
                             chunk=chunk, device=device).values()

    pooled = pooled_fold_scores(fold, n_folds, score_fold)
    return cross_validation_choice(pooled, [s.as_dict() for s in settings], n_folds, len(labels_np),
                                   targets is not None)


def default_setting(settings: Sequence[CalmSetting]) -> CalmSetting:
    """CALM's default setting, ranking and masking heads as the grid's settings do."""
    first = settings[0]
    return replace(DEFAULT_SETTING, top_k_mode=first.top_k_mode, tie_break=first.tie_break, tie_seed=first.tie_seed)


@dataclass(frozen=True, eq=False)
class PaperGridReport:
    """The paper protocol's two selections, and the whole grid's test scores."""

    cv_choice: dict[str, Any]
    oracle: dict[str, Any]
    test: GridResult

    def summary(self) -> dict[str, Any]:
        """JSON-ready: both selections, labelled, and the grid's size and ranking metric."""
        return {"grid_size": len(self.test.settings), "metric": self.test.metric,
                "cv_choice": self.cv_choice, "oracle": self.oracle}


def labelled_choices(cv: dict[str, Any], cv_test: dict[str, float], test: GridResult,
                     settings: Sequence[Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The two labelled records of a tuned method: the cross-validated choice with its test scores, and
    the best of grid on test (the oracle; ties to the first in grid order)."""
    best = test.best()
    return ({"label": CV_LABEL, **cv, "test": cv_test},
            {"label": ORACLE_LABEL, "setting": settings[best].as_dict(), "setting_index": best,
             "test": test.scores_of(best)})


def paper_grid_report(
    support: FeaturesLike,
    support_labels: LabelsLike,
    query: FeaturesLike | QueryRows,
    query_labels: LabelsLike,
    grid: CalmGrid | Sequence[CalmSetting],
    *,
    folds: int = 5,
    seed: int = 0,
    n_classes: int | None = None,
    query_targets: np.ndarray | torch.Tensor | None = None,
    support_targets: np.ndarray | torch.Tensor | None = None,
    query_groups: np.ndarray | None = None,
    support_groups: np.ndarray | None = None,
    positive_class: int | None = None,
    chunk: int = 256,
    query_chunk: int = 256,
    device: torch.device | str | None = None,
) -> PaperGridReport:
    """The grid on test, the setting chosen by cross-validation on the support set (with its test
    scores), and the best of grid on test, labelled as an oracle.

    The selector is called with the support set only. `positive_class` (two-class detection, e.g.
    bonafide) adds each selection's test EER. Multi-label: pass `query_targets` (and, to select by
    exact match, `support_targets`). Per-label questions: pass `query_groups` (clip id per query row)
    for both clip-level exact matches, the first of which then ranks the grid on test.
    `support_groups`: support rows cross-validation must hold out together (one clip's questions, a
    clip drawn twice). `query` may be a lazy row view read `query_chunk` clips at a time; `device` is
    where the work runs.
    """
    settings = grid_settings(grid)
    with torch.no_grad():  # the test clips are read once: the grid, the default and the EERs share the scorer
        scorer = SplitScorer(support, support_labels, query, n_classes, query_chunk, device)
    scored = {"query_targets": query_targets, "query_groups": query_groups}
    test = score_settings(scorer, query_labels, settings, chunk=chunk, **scored)
    cv = select_by_cross_validation(support, support_labels, settings, folds, seed, n_classes=n_classes,
                                    support_targets=support_targets, support_groups=support_groups, chunk=chunk,
                                    device=device)
    if cv["setting_index"] is not None:
        cv_test = test.scores_of(cv["setting_index"])
    else:
        cv_test = score_settings(scorer, query_labels, [default_setting(settings)], **scored).scores_of(0)
    cv_choice, oracle = labelled_choices(cv, cv_test, test, settings)
    if positive_class is not None:
        truth = query_label_tensor(query_labels, 2).numpy() == positive_class
        for record in (cv_choice, oracle):
            with torch.no_grad():
                scores = scorer.setting_scores(CalmSetting(**record["setting"]))
            record["test"]["eer"] = eer(detector_scores(scores, positive_class), truth)
    return PaperGridReport(cv_choice, oracle, test)


def paper_sweep_report(
    build: Build,
    points: Sequence[SweepPoint],
    support: FeaturesLike,
    support_labels: LabelsLike,
    query: FeaturesLike | QueryRows,
    query_labels: LabelsLike,
    *,
    n_classes: int,
    folds: int = 5,
    seed: int = 0,
    tie_seed: int | None = None,
    query_targets: np.ndarray | torch.Tensor | None = None,
    support_targets: np.ndarray | torch.Tensor | None = None,
    query_groups: np.ndarray | None = None,
    support_groups: np.ndarray | None = None,
    positive_class: int | None = None,
    query_chunk: int = 256,
    device: torch.device | str | None = None,
) -> PaperGridReport:
    """`paper_grid_report` for any estimator: `build(point)` makes the estimator of a grid point
    (`calm.selection.sweep`), each fitted from scratch. Same two selections, rules and fields; the
    settings are the points' values, and the default when cross-validation cannot run is the
    method's configured setting (the empty point)."""
    points = tuple(points)
    split = {"n_classes": n_classes, "tie_seed": tie_seed, "device": device}
    test = sweep_split(build, points, support, support_labels, query, query_labels, query_targets=query_targets,
                       query_groups=query_groups, query_chunk=query_chunk, **split)
    cv = sweep_cross_validation(build, points, support, support_labels, folds=folds, seed=seed,
                                support_targets=support_targets, support_groups=support_groups, **split)
    cv_point = points[cv["setting_index"]] if cv["setting_index"] is not None else SweepPoint()
    if cv["setting_index"] is not None:
        cv_test = test.scores_of(cv["setting_index"])
    else:
        cv_test = sweep_split(build, [cv_point], support, support_labels, query, query_labels,
                              query_targets=query_targets, query_groups=query_groups, query_chunk=query_chunk,
                              **split).scores_of(0)
    cv_choice, oracle = labelled_choices(cv, cv_test, test, points)
    if positive_class is not None:
        for record, point in ((cv_choice, cv_point), (oracle, points[oracle["setting_index"]])):
            record["test"]["eer"] = point_eer(build, point, support, support_labels, query, query_labels,
                                              positive_class, tie_seed=tie_seed, query_chunk=query_chunk,
                                              device=device)
    return PaperGridReport(cv_choice, oracle, test)
