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

from calm.methods.metrics import detector_scores, eer
from calm.methods.prototypes import FeaturesLike, LabelsLike, ReliabilitySet
from calm.methods.prototypes import support_labels as checked_labels
from calm.selection.cross_validation import choose_by_cross_validation
from calm.selection.grid import (
    MEMORY_BUDGET,
    QueryRows,
    ReliabilityRows,
    RowSubset,
    SplitScorer,
    evaluate_grid,
    query_label_tensor,
    score_settings,
)
from calm.selection.settings import (
    DEFAULT_SETTING,
    CalmGrid,
    CalmSetting,
    GridResult,
    grid_settings,
)
from calm.selection.sweep import (
    Build,
    SweepPoint,
    kept_rows,
    point_eer,
    sweep_cross_validation,
    sweep_split,
)

ORACLE_LABEL = "oracle: best of grid on the test set (optimistic; how the reference scripts chose)"
CV_LABEL = "chosen by cross-validation on the support set; the test set is not used"
VAL_LABEL = (
    "best on the reliability (val) set V: scored on V's clips with prototypes from the support set "
    "(how the authors' runner chose when given a val file); the test set is not used"
)


def select_by_cross_validation(
    support_features: FeaturesLike | QueryRows,
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
    reliability: ReliabilityRows | None = None,
    dtype: torch.dtype = torch.float32,
    selection_metric: str = "accuracy",
    memory_budget: int = MEMORY_BUDGET,
) -> dict[str, Any]:
    """Choose a setting from the support set alone, by stratified k-fold cross-validation (rows of one
    `support_groups` id, e.g. the questions of one clip, held out together).

    Each fold refits prototypes (and reliabilities, on the named reliability set V when one is given,
    else on the rest) and scores the whole grid on the held-out clips; the pooled held-out accuracy
    (exact match with `support_targets`; macro-F1 with `selection_metric="macro_f1"`) ranks the
    settings, ties to the first in grid order. With a single clip in some class, CALM's default
    setting is returned instead (with the grid's top_k_mode and tie rule), with ``selected_by: "default"``
    and the reason in ``note``.
    """
    settings = grid_settings(grid)
    features = support_features  # kept in its dtype (fp16 from the cache): each fold's grid upcasts in chunks
    labels, n_classes = checked_labels(tuple(features.shape), support_labels, n_classes)
    split = {"n_classes": n_classes, "device": device, "reliability": reliability, "dtype": dtype}
    split["memory_budget"] = memory_budget

    def score_fold(held: torch.Tensor, held_targets: torch.Tensor | None) -> np.ndarray:
        held = held.to(labels.device)
        keep, out = held.nonzero().flatten().cpu(), (~held).nonzero().flatten().cpu()
        fit, scored = RowSubset(features, out), RowSubset(features, keep)
        result = evaluate_grid(
            fit, labels[~held], scored, labels[held], settings, query_targets=held_targets, chunk=chunk, **split
        )
        return result.values(selection_metric)

    return choose_by_cross_validation(
        labels.cpu().numpy(),
        n_classes,
        folds,
        seed,
        support_groups,
        support_targets,
        [s.as_dict() for s in settings],
        score_fold,
        (default_setting(settings).as_dict(), "CALM's default setting"),
        selection_metric,
    )


def default_setting(settings: Sequence[CalmSetting]) -> CalmSetting:
    """CALM's default setting, ranking and masking heads as the grid's settings do."""
    first = settings[0]
    return replace(DEFAULT_SETTING, top_k_mode=first.top_k_mode, tie_break=first.tie_break, tie_seed=first.tie_seed)


@dataclass(frozen=True, eq=False)
class PaperGridReport:
    """The paper protocol's selections (the `[val]` one only with a named reliability set V), and the
    whole grid's test scores."""

    cv_choice: dict[str, Any]
    oracle: dict[str, Any]
    test: GridResult
    val_choice: dict[str, Any] | None = None
    selection_metric: str = "accuracy"

    def summary(self) -> dict[str, Any]:
        """JSON-ready: the selections, labelled, and the grid's size and ranking metric."""
        out = {
            "grid_size": len(self.test.settings),
            "metric": self.test.metric_for(self.selection_metric),
            "cv_choice": self.cv_choice,
            "oracle": self.oracle,
        }
        return out if self.val_choice is None else {**out, "val_choice": self.val_choice}

    def records(self) -> list[dict[str, Any]]:
        """The labelled records in row order: [cv], [val] (with a named V), [oracle]."""
        return [self.cv_choice, *([] if self.val_choice is None else [self.val_choice]), self.oracle]


def labelled_choices(
    cv: dict[str, Any],
    cv_test: dict[str, float],
    test: GridResult,
    settings: Sequence[Any],
    selection_metric: str = "accuracy",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The two labelled records of a tuned method: the cross-validated choice with its test scores, and
    the best of grid on test by `selection_metric` (the oracle; ties to the first in grid order)."""
    best = test.best(selection_metric)
    return (
        {"label": CV_LABEL, **cv, "test": cv_test},
        {
            "label": ORACLE_LABEL,
            "setting": settings[best].as_dict(),
            "setting_index": best,
            "metric": test.metric_for(selection_metric),
            "test": test.scores_of(best),
        },
    )


def val_choice(
    val: GridResult | None, test: GridResult, settings: Sequence[Any], selection_metric: str = "accuracy"
) -> dict[str, Any] | None:
    """The `[val]` record: the setting best on the reliability set V (`val`, every setting scored on V's
    clips), with its test scores; None without a named V."""
    if val is None:
        return None
    best = val.best(selection_metric)
    return {
        "label": VAL_LABEL,
        "selected_by": "val",
        "setting": settings[best].as_dict(),
        "setting_index": best,
        "val_score": float(val.values(selection_metric)[best]),
        "metric": val.metric_for(selection_metric),
        "val_clips": val.n_queries,
        "test": test.scores_of(best),
    }


def paper_grid_report(
    support: FeaturesLike | QueryRows,
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
    reliability: ReliabilityRows | None = None,
    dtype: torch.dtype = torch.float32,
    selection_metric: str = "accuracy",
    memory_budget: int = MEMORY_BUDGET,
) -> PaperGridReport:
    """The grid on test, the setting chosen by cross-validation on the support set (with its test
    scores), and the best of grid on test, labelled as an oracle; with a named reliability set V
    (`reliability`: rows and labels) reliabilities are measured on V and a third choice, the best on
    V (`[val]`), is added. `selection_metric` (accuracy | macro_f1) ranks every choice; `dtype` as in
    `SplitScorer`.

    The selector is called with the support set only. `positive_class` (two-class detection, e.g.
    bonafide) adds each selection's test EER. Multi-label: pass `query_targets` (and, to select by
    exact match, `support_targets`). Per-label questions: pass `query_groups` (clip id per query row)
    for both clip-level exact matches, the first of which then ranks the grid on test.
    `support_groups`: support rows cross-validation must hold out together (one clip's questions, a
    clip drawn twice). `support`, `query` and V's rows may be lazy row views read `query_chunk` clips at
    a time; `device` is where the work runs; `memory_budget` bounds each split's cosine products
    (`SplitScorer`): larger test, support or V sets are streamed block by block.
    """
    settings = grid_settings(grid)
    # how the split is scored, by the test grid and by each cross-validation fold alike
    split = {"n_classes": n_classes, "device": device, "reliability": reliability, "dtype": dtype}
    split["memory_budget"] = memory_budget
    with torch.no_grad():  # the test clips are read once: the grid, the default and the EERs share the scorer
        scorer = SplitScorer(support, support_labels, query, query_chunk=query_chunk, **split)
    scored = {"query_targets": query_targets, "query_groups": query_groups}
    test = score_settings(scorer, query_labels, settings, chunk=chunk, **scored)
    held_out = {"support_targets": support_targets, "support_groups": support_groups}
    cv = select_by_cross_validation(
        support,
        support_labels,
        settings,
        folds,
        seed,
        chunk=chunk,
        selection_metric=selection_metric,
        **held_out,
        **split,
    )
    if cv["setting_index"] is not None:
        cv_test = test.scores_of(cv["setting_index"])
    else:
        cv_test = score_settings(scorer, query_labels, [default_setting(settings)], **scored).scores_of(0)
    cv_choice, oracle = labelled_choices(cv, cv_test, test, settings, selection_metric)
    val = (
        None
        if reliability is None
        else score_settings(scorer, reliability[1], settings, chunk=chunk, split="reliability")
    )
    report = PaperGridReport(
        cv_choice, oracle, test, val_choice(val, test, settings, selection_metric), selection_metric
    )
    if positive_class is not None:
        truth = query_label_tensor(query_labels, 2).numpy() == positive_class
        for record in report.records():
            with torch.no_grad():
                scores = scorer.setting_scores(CalmSetting(**record["setting"]))
            record["test"]["eer"] = eer(detector_scores(scores, positive_class), truth)
    return report


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
    reliability: ReliabilityRows | None = None,
    selection_metric: str = "accuracy",
    memory_budget: int = MEMORY_BUDGET,
) -> PaperGridReport:
    """`paper_grid_report` for any estimator: `build(point)` makes the estimator of a grid point
    (`calm.selection.sweep`), each fitted from scratch. Same selections, rules and fields; the
    settings are the points' values, and the default when cross-validation cannot run is the
    method's configured setting (the empty point). A named reliability set V reaches the estimators
    that measure reliabilities (`fit_estimator`) and adds the `[val]` choice for every method. Scored
    rows are read in chunks under `memory_budget` (`calm.selection.sweep`); the support set and V stay
    in their dtype (fp16 from the cache) between fits."""
    points = tuple(points)
    named = (
        None
        if reliability is None
        else ReliabilitySet(kept_rows(reliability[0]), torch.as_tensor(np.asarray(reliability[1])))
    )
    split = {
        "n_classes": n_classes,
        "tie_seed": tie_seed,
        "device": device,
        "reliability_set": named,
        "query_chunk": query_chunk,
        "memory_budget": memory_budget,
    }
    test = sweep_split(
        build,
        points,
        support,
        support_labels,
        query,
        query_labels,
        query_targets=query_targets,
        query_groups=query_groups,
        **split,
    )
    cv = sweep_cross_validation(
        build,
        points,
        support,
        support_labels,
        folds=folds,
        seed=seed,
        support_targets=support_targets,
        support_groups=support_groups,
        selection_metric=selection_metric,
        **split,
    )
    cv_point = points[cv["setting_index"]] if cv["setting_index"] is not None else SweepPoint()
    if cv["setting_index"] is not None:
        cv_test = test.scores_of(cv["setting_index"])
    else:
        cv_test = sweep_split(
            build,
            [cv_point],
            support,
            support_labels,
            query,
            query_labels,
            query_targets=query_targets,
            query_groups=query_groups,
            **split,
        ).scores_of(0)
    cv_choice, oracle = labelled_choices(cv, cv_test, test, points, selection_metric)
    val = (
        None
        if named is None
        else sweep_split(build, points, support, support_labels, named.features, named.labels, **split)
    )
    report = PaperGridReport(cv_choice, oracle, test, val_choice(val, test, points, selection_metric), selection_metric)
    if positive_class is not None:
        chosen = [
            cv_point,
            *([] if val is None else [points[report.val_choice["setting_index"]]]),
            points[oracle["setting_index"]],
        ]
        for record, point in zip(report.records(), chosen, strict=True):
            record["test"]["eer"] = point_eer(
                build,
                point,
                support,
                support_labels,
                query,
                query_labels,
                positive_class,
                tie_seed=tie_seed,
                query_chunk=query_chunk,
                device=device,
                reliability_set=named,
                memory_budget=memory_budget,
            )
    return report
