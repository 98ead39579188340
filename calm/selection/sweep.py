"""Any estimator's grid on one split, through the estimator API (protocol=paper's baselines).

CALM has its own engine (`calm.selection.grid`), which shares work between settings; every other
method, including one a user adds with a `configs/grids/<dataset>.yaml` entry, is swept here: for
each grid point the estimator is built (`build(point)`: the job's `estimators.<name>` config with the
point's values set), fitted on the support set and asked for predictions. Points are fitted in batches
whose fitted state (prototypes and the like) stays under `fitted_budget` bytes, and each batch reads the
test rows once: a grid of P points reads them ceil(P / batch) times, not P times. Only counts (and, for
per-label questions, each point's predictions) are kept.

Memory: the scored rows (test, held-out folds, the reliability set V) are read from their tensor or lazy
row view (`calm.cache.RowView`) in chunks whose per-clip products fit `memory_budget` bytes, the grid's
rule (`calm.selection.grid.rows_within`, evaluate.memory_budget_mb); the support set and V stay in the
dtype they come in (fp16 from the cache) and are upcast to float32 for one fit at a time. A fit itself
takes its rows whole (the estimator API), so its transient products grow with the support set and V.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from calm.errors import ConfigError
from calm.methods.base import fit_estimator
from calm.methods.metrics import detector_scores, eer, exact_hits, prediction_counts
from calm.methods.prototypes import FeaturesLike, LabelsLike, ReliabilitySet, as_features
from calm.selection.cross_validation import choose_by_cross_validation
from calm.selection.grid import (
    MEMORY_BUDGET,
    QueryRows,
    RowSubset,
    query_label_tensor,
    rows_within,
    target_tensor,
)
from calm.selection.questions import CLIP_METRICS, clip_exact_matches, group_tensor
from calm.selection.settings import ALL_HEADS, GridResult, heads_top_k

# builds the estimator of one grid point from the point's values (the method's other settings fixed)
Build = Callable[[Mapping[str, Any]], Any]
# bytes of fitted estimators kept at once: points fitted together share one read of the test rows
FITTED_BUDGET = 2 * 2**30


@dataclass(frozen=True)
class SweepPoint:
    """One grid point: the swept parameters' values, in the grid's key order."""

    values: tuple[tuple[str, Any], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return dict(self.values)


@dataclass(frozen=True)
class MethodGrid:
    """A method's grid: values per constructor parameter; the points are their Cartesian product, the
    first key slowest. No axes: one point, the method's configured setting."""

    method: str
    axes: tuple[tuple[str, tuple[Any, ...]], ...]

    @classmethod
    def from_config(
        cls, method: str, cfg: Mapping[str, Sequence[Any]], parameters: Collection[str], source: str
    ) -> MethodGrid:
        """From `grids.<method>` of the config; `parameters` are what the estimator's constructor takes
        (a grid key outside them is refused), `source` the file to name in messages. A top_k of null
        or "all" means all heads."""
        unknown = [str(key) for key in cfg if key not in parameters]
        if unknown:
            raise ConfigError(
                f"the {method} grid in {source} sweeps {unknown}, which {method} does not take",
                f"use only {method}'s parameters {sorted(parameters)} as grid keys in {source}",
            )
        axes = []
        for key, values in cfg.items():
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
                raise ConfigError(
                    f"the {method} grid in {source} gives {key} as {values!r}, not a non-empty list",
                    f"write {key}: [value, ...] under {method} in {source}",
                )
            if key == "top_k":
                values = [None if k in ALL_HEADS else k for k in values]
            axes.append((str(key), tuple(values)))
        return cls(method, tuple(axes))

    def for_heads(self, n_heads: int) -> tuple[MethodGrid, tuple[int, ...]]:
        """This grid for a model with `n_heads` heads (`heads_top_k`), and the top_k values clamped."""
        axes, clamped = [], ()
        for key, values in self.axes:
            if key == "top_k":
                values, clamped = heads_top_k(values, n_heads)
            axes.append((key, values))
        return MethodGrid(self.method, tuple(axes)), clamped

    def points(self) -> tuple[SweepPoint, ...]:
        keys = [key for key, _ in self.axes]
        return tuple(
            SweepPoint(tuple(zip(keys, combo, strict=True)))
            for combo in itertools.product(*(values for _, values in self.axes))
        )

    def __len__(self) -> int:
        return len(self.points())


def _parts(n: int, chunk: int) -> list[slice]:
    return [slice(a, min(a + chunk, n)) for a in range(0, n, chunk)]


def fit_point(
    build: Build,
    point: SweepPoint,
    support: torch.Tensor,
    labels: torch.Tensor,
    n_classes: int,
    tie_seed: int | None,
    reliability_set: ReliabilitySet | None = None,
) -> Any:
    """The estimator of `point`, fitted on the support rows (`tie_seed`: this fit's tie seed, if given;
    `reliability_set`: a named V, for the estimators that measure reliabilities). Rows kept in fp16 are
    upcast to float32 for this fit only."""
    named = (
        None
        if reliability_set is None
        else ReliabilitySet(as_features(reliability_set.features), reliability_set.labels)
    )
    return fit_estimator(
        build(point.as_dict()),
        as_features(support),
        labels,
        n_classes=n_classes,
        tie_seed=tie_seed,
        reliability_set=named,
    )


def fitted_bytes(estimator: Any) -> int:
    """Bytes of the tensors a fitted estimator holds (its prototypes, weights, rankings)."""
    return sum(
        value.element_size() * value.nelement() for value in vars(estimator).values() if isinstance(value, torch.Tensor)
    )


def fitted_batches(
    build: Build,
    points: Sequence[SweepPoint],
    support: torch.Tensor,
    labels: torch.Tensor,
    n_classes: int,
    tie_seed: int | None,
    budget: int,
    reliability_set: ReliabilitySet | None = None,
) -> Iterator[list[tuple[int, Any]]]:
    """(point index, fitted estimator) pairs, in grid order, in batches whose fitted state stays under
    `budget` bytes (a batch always holds at least one point)."""
    batch: list[tuple[int, Any]] = []
    used = 0
    for i, point in enumerate(points):
        fitted = fit_point(build, point, support, labels, n_classes, tie_seed, reliability_set)
        size = fitted_bytes(fitted)
        if batch and used + size > budget:
            yield batch
            batch, used = [], 0
        batch.append((i, fitted))
        used += size
    if batch:
        yield batch


def _query_chunks(
    query: FeaturesLike | QueryRows, chunk: int, device: torch.device, memory_budget: int, n_heads: int, n_classes: int
) -> Iterator[tuple[slice, torch.Tensor]]:
    """The scored rows as float32, at most `chunk` clips at a time and fewer when their products (K x C
    per clip) would exceed `memory_budget` (`rows_within`)."""
    step = min(chunk, rows_within(memory_budget, n_heads, n_classes))
    for part in _parts(len(query), step):
        yield part, as_features(query[part]).to(device)


def kept_rows(rows: FeaturesLike, device: torch.device | None = None) -> torch.Tensor:
    """Support or V rows as a tensor (on `device`, if given) in their own dtype: fp16 stays fp16, and
    `fit_point` upcasts for one fit at a time."""
    rows = rows if isinstance(rows, torch.Tensor) else as_features(rows)
    return rows if device is None else rows.to(device)


def sweep_split(
    build: Build,
    points: Sequence[SweepPoint],
    support: FeaturesLike,
    support_labels: LabelsLike,
    query: FeaturesLike | QueryRows,
    query_labels: LabelsLike,
    *,
    n_classes: int,
    tie_seed: int | None = None,
    query_targets: np.ndarray | torch.Tensor | None = None,
    query_groups: np.ndarray | torch.Tensor | None = None,
    query_chunk: int = 256,
    device: torch.device | str | None = None,
    fitted_budget: int = FITTED_BUDGET,
    reliability_set: ReliabilitySet | None = None,
    memory_budget: int = MEMORY_BUDGET,
) -> GridResult:
    """Accuracy and macro-F1 of every point (exact match with (m, C) `query_targets`; both clip-level
    exact matches with `query_groups`), each point's estimator fitted from scratch on the support set
    (and the named reliability set V, `reliability_set`, where the estimator uses one); the test rows
    are read once per batch of fitted points (`fitted_batches`), in chunks under `memory_budget`."""
    if not points:
        raise ConfigError("no grid points to evaluate", "give the method at least one grid point")
    device = torch.device(device) if device is not None else torch.device("cpu")
    support = kept_rows(support, device)
    fit_labels = torch.as_tensor(np.asarray(support_labels)).long().to(device)
    labels = query_label_tensor(query_labels, n_classes)
    if labels.shape[0] != len(query):
        raise ConfigError(
            f"{len(query)} query clips but {labels.shape[0]} query labels", "pass one label per query clip"
        )
    targets = None if query_targets is None else target_tensor(query_targets, labels.shape[0], n_classes)
    groups = None if query_groups is None else group_tensor(query_groups, labels.shape[0])
    n = len(points)
    accuracy, f1 = np.zeros(n), np.zeros(n)
    exact = None if targets is None else np.zeros(n)
    by_clip = {} if groups is None else {name: np.zeros(n) for name in CLIP_METRICS}
    with torch.no_grad():
        for batch in fitted_batches(
            build, points, support, fit_labels, n_classes, tie_seed, fitted_budget, reliability_set
        ):
            counts: dict[int, Any] = {}
            hits: dict[int, torch.Tensor] = {}
            preds: dict[int, list[torch.Tensor]] = {i: [] for i, _ in batch}
            for part, rows in _query_chunks(
                query, query_chunk, device, memory_budget, int(support.shape[1]), n_classes
            ):
                for i, fitted in batch:
                    pred = torch.as_tensor(fitted.predict(rows)).long().cpu()  # SAV's own tie rule, not argmax
                    if targets is not None:  # (m, C) scores as the grid's (C, S=1, m)
                        scores = torch.as_tensor(fitted.predict_scores(rows)).float().cpu().t().unsqueeze(1)
                        part_hits = exact_hits(scores, targets[part])
                        hits[i] = part_hits if i not in hits else hits[i] + part_hits
                    chunk = prediction_counts(pred[None], labels[part], n_classes)
                    counts[i] = chunk if i not in counts else counts[i] + chunk
                    if groups is not None:
                        preds[i].append(pred)
            for i, _ in batch:
                accuracy[i], f1[i] = counts[i].accuracy()[0], counts[i].macro_f1()[0]
                if exact is not None:
                    exact[i] = float(hits[i][0]) / counts[i].n * 100.0
                if groups is not None:
                    for name, values in clip_exact_matches(torch.cat(preds[i])[None], labels, groups).items():
                        by_clip[name][i] = values[0]
    return GridResult(tuple(points), accuracy, f1, exact, int(labels.shape[0]), by_clip)


def sweep_cross_validation(
    build: Build,
    points: Sequence[SweepPoint],
    support: FeaturesLike,
    support_labels: LabelsLike,
    *,
    n_classes: int,
    folds: int = 5,
    seed: int = 0,
    tie_seed: int | None = None,
    support_targets: np.ndarray | torch.Tensor | None = None,
    support_groups: np.ndarray | None = None,
    device: torch.device | str | None = None,
    reliability_set: ReliabilitySet | None = None,
    selection_metric: str = "accuracy",
    query_chunk: int = 256,
    memory_budget: int = MEMORY_BUDGET,
) -> dict[str, Any]:
    """Choose a point from the support set alone, by the one cross-validation rule
    (`calm.selection.cross_validation`: stratified folds keeping `support_groups` together, pooled
    held-out score) and the one tie rule
    (`first_best`). With a single clip in some class, the method's configured setting is used
    (``selected_by: "default"``, the reason in ``note``). Each fold's held-out rows are read from the
    support rows in chunks (`sweep_split`), not copied."""
    support = kept_rows(support)
    labels_np = np.asarray(torch.as_tensor(np.asarray(support_labels)).long())
    split = {"n_classes": n_classes, "tie_seed": tie_seed, "device": device, "reliability_set": reliability_set}
    split |= {"query_chunk": query_chunk, "memory_budget": memory_budget}

    def score_fold(held: torch.Tensor, held_targets: torch.Tensor | None) -> np.ndarray:
        keep = ~held
        fit, fit_labels = support[keep], labels_np[keep.numpy()]
        scored = RowSubset(support, held.nonzero().flatten())
        result = sweep_split(
            build, points, fit, fit_labels, scored, labels_np[held.numpy()], query_targets=held_targets, **split
        )
        return result.values(selection_metric)

    return choose_by_cross_validation(
        labels_np,
        n_classes,
        folds,
        seed,
        support_groups,
        support_targets,
        [s.as_dict() for s in points],
        score_fold,
        ({}, "the configured setting"),
        selection_metric,
    )


def point_eer(
    build: Build,
    point: SweepPoint,
    support: FeaturesLike,
    support_labels: LabelsLike,
    query: FeaturesLike | QueryRows,
    query_labels: LabelsLike,
    positive_class: int,
    *,
    tie_seed: int | None = None,
    query_chunk: int = 256,
    device: torch.device | str | None = None,
    reliability_set: ReliabilitySet | None = None,
    memory_budget: int = MEMORY_BUDGET,
) -> float:
    """Test EER (percent) of one point on a two-class split, `positive_class` the detected class."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    labels = torch.as_tensor(np.asarray(support_labels)).long().to(device)
    with torch.no_grad():
        support = kept_rows(support, device)
        fitted = fit_point(build, point, support, labels, 2, tie_seed, reliability_set)
        scores = torch.cat(
            [
                torch.as_tensor(fitted.predict_scores(rows)).float().cpu()
                for _, rows in _query_chunks(query, query_chunk, device, memory_budget, int(support.shape[1]), 2)
            ]
        )
    truth = query_label_tensor(query_labels, 2).numpy() == positive_class
    return eer(detector_scores(scores, positive_class), truth)
