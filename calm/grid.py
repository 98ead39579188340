"""CALM hyper-parameter grids (DESIGN section 8, protocol=paper): every setting on one split, cheaply,
and a choice made without the test set.

The paper picked its settings as the best of a 20,736-point grid on the test set. `evaluate_grid`
scores such a grid on one support/query split while sharing all the work settings have in common:

- the cosine products, once per split (as dot products with the normalised prototypes and the
  clips' inverse norms, so the per-tau logits are computed with the estimator's own arithmetic);
- the posteriors, once per tau; the reliabilities, once per (tau, scheme); shrinkage per alpha;
- the per-class head ranking for top_k, one sort per reliability matrix;
- the weights of all (tau_w, top_k) pairs of a reliability matrix at once, and the query scores of
  hundreds of settings as one batched product per class: scores[s] = Σ_j W[s, j, c] P[j, m, c].

`select_by_cross_validation` chooses a setting from the support set alone, and `paper_grid_report`
puts that choice next to the best of grid on test, labelled as an oracle.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from calm.errors import ConfigError
from calm.methods import (
    CALM,
    class_counts,
    class_sums,
    default_weight_norm,
    normalized_prototypes,
    prototype_dots,
    shrink,
    validate_query,
    validate_support,
)
from calm.methods.calm import (
    EPSILON,
    WEIGHT_SUM_FLOOR,
    check_calm_settings,
    class_means,
    logit_shift,
    softmax_classes_,
)
from calm.methods.prototypes import NORM_FLOOR, FeaturesLike, LabelsLike
from calm.metrics import detector_scores, eer

__all__ = [
    "DEFAULT_SETTING",
    "PAPER_GRID",
    "CalmGrid",
    "CalmSetting",
    "GridResult",
    "PaperGridReport",
    "evaluate_grid",
    "paper_grid_report",
    "select_by_cross_validation",
    "stratified_folds",
]

ORACLE_LABEL = "oracle: best of grid on the test set (optimistic; how the reference scripts chose)"
CV_LABEL = "chosen by cross-validation on the support set; the test set is not used"
AXES = ("reliability", "tau", "tau_w", "top_k", "shrinkage")


@dataclass(frozen=True)
class CalmSetting:
    """One CALM setting; `weight_norm` is always the paper's pairing for the scheme."""

    reliability: str = "margin_clamped"
    tau: float = 0.07
    tau_w: float = 0.5
    top_k: int | None = None
    shrinkage: float = 0.0

    def __post_init__(self) -> None:
        check_calm_settings(self.tau, self.tau_w, self.reliability, self.top_k, self.shrinkage, None)

    def estimator(self) -> CALM:
        """The estimator that computes this setting from scratch (reliability on the support set)."""
        return CALM(tau=self.tau, tau_w=self.tau_w, reliability=self.reliability, top_k=self.top_k,
                    shrinkage=self.shrinkage)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT_SETTING = CalmSetting()


@dataclass(frozen=True)
class CalmGrid:
    """The Cartesian product of values per hyper-parameter; top_k None means all heads."""

    reliability: tuple[str, ...]
    tau: tuple[float, ...]
    tau_w: tuple[float, ...]
    top_k: tuple[int | None, ...]
    shrinkage: tuple[float, ...]

    def __post_init__(self) -> None:
        for name in AXES:
            values = tuple(getattr(self, name))
            if not values:
                raise ConfigError(f"the grid's {name} list is empty", f"give at least one {name} value")
            object.__setattr__(self, name, values)
            for value in values:
                CalmSetting(**{name: value})  # rejects values CALM does not accept

    def __len__(self) -> int:
        return math.prod(len(getattr(self, name)) for name in AXES)

    def settings(self) -> list[CalmSetting]:
        """Every setting, ordered by reliability, tau, shrinkage, tau_w, top_k (the reuse order)."""
        return [CalmSetting(reliability=r, tau=t, tau_w=w, top_k=k, shrinkage=a)
                for r, t, a, w, k in itertools.product(self.reliability, self.tau, self.shrinkage,
                                                        self.tau_w, self.top_k)]

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> CalmGrid:
        """From a config mapping of lists; a top_k of null or "all" means all heads."""
        missing = [name for name in AXES if name not in cfg]
        if missing:
            raise ConfigError(f"the grid config lacks {missing}",
                              "list values for reliability, tau, tau_w, top_k and shrinkage")
        top_k = tuple(None if k in (None, "all") else k for k in cfg["top_k"])
        return cls(tuple(cfg["reliability"]), tuple(float(t) for t in cfg["tau"]),
                   tuple(float(w) for w in cfg["tau_w"]), top_k, tuple(float(a) for a in cfg["shrinkage"]))


PAPER_GRID = CalmGrid(
    reliability=("margin_clamped", "margin", "prob", "brier"),
    tau=(1e-4, 1e-3, 0.01, 0.03, 0.05, 0.1, 0.3, 0.5, 0.8, 1.0, 2.0, 5.0),
    tau_w=(0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0),
    top_k=(5, 10, 20, 40, 100, 300, 500, None),
    shrinkage=(0.0, 0.1, 0.3, 0.5, 0.7, 1.0),
)


@dataclass(frozen=True, eq=False)
class GridResult:
    """Scores in percent per setting, aligned with `settings`; `exact_match` only for multi-label."""

    settings: tuple[CalmSetting, ...]
    accuracy: np.ndarray
    macro_f1: np.ndarray
    exact_match: np.ndarray | None
    n_queries: int

    @property
    def metric(self) -> str:
        """The score settings are ranked by: exact match for multi-label queries, else accuracy."""
        return "accuracy" if self.exact_match is None else "exact_match"

    def values(self) -> np.ndarray:
        return self.accuracy if self.exact_match is None else self.exact_match

    def best(self) -> int:
        """Index of the best setting; ties go to the first in grid order, so the choice is reproducible."""
        return int(np.argmax(self.values()))

    def scores_of(self, i: int) -> dict[str, float]:
        out = {"accuracy": float(self.accuracy[i]), "macro_f1": float(self.macro_f1[i])}
        if self.exact_match is not None:
            out["exact_match"] = float(self.exact_match[i])
        return out

    def rows(self) -> list[dict[str, Any]]:
        """One flat dict per setting, for a results table."""
        return [{**s.as_dict(), **self.scores_of(i)} for i, s in enumerate(self.settings)]


class _SplitScorer:
    """One split's cosine products, computed once; posteriors per tau with CALM's own arithmetic.

    Keeps the dot products with the normalised prototypes and the clips' inverse norms, and per tau
    forms scale·dots·inv_norm − shift exactly as `scaled_cosines` does inside `CALM.fit`/`predict`,
    so reliabilities (and with them top_k's ranking) equal the estimator's bit for bit.
    """

    def __init__(self, support: FeaturesLike, labels: LabelsLike, query: FeaturesLike,
                 n_classes: int | None) -> None:
        support, self.labels, self.n_classes = validate_support(support, labels, n_classes)
        query = validate_query(query, support.shape[1], support.shape[2])
        self.n_heads, self.n_queries, self.device = support.shape[1], query.shape[0], support.device
        self.counts = class_counts(self.labels, self.n_classes)
        prototypes = normalized_prototypes(class_sums(support, self.labels, self.n_classes), self.counts)
        self._dots = {"support": prototype_dots(support, prototypes), "query": prototype_dots(query, prototypes)}
        self._recip = {"support": _reciprocal_norms(support), "query": _reciprocal_norms(query)}
        # reused across taus: fresh 100-MB tensors per tau would spend more time on page faults than on math
        self._buffers = {split: torch.empty_like(dots) for split, dots in self._dots.items()}

    def posteriors(self, split: str, tau: float) -> torch.Tensor:
        """p_j(c|x) (K, n, C) for the support or query clips, in the estimator's storage layout.

        Written into a buffer of this split that the next call overwrites.
        """
        dots = self._dots[split]
        shift = logit_shift(tau)
        inv = self._recip[split].mul(1.0 / tau).unsqueeze(-1)
        out = self._buffers[split]
        if shift is None:
            torch.mul(dots, inv, out=out)
        else:
            torch.addcmul(dots.new_tensor(-shift), dots, inv, out=out)
        return softmax_classes_(out, shifted=shift is not None)

    def reliabilities(self, tau: float, schemes: Iterable[str]) -> dict[str, torch.Tensor]:
        """r (K, C) per scheme from one set of support posteriors (consumed in place)."""
        p = self.posteriors("support", tau)
        clips = torch.arange(self.labels.shape[0], device=self.labels.device)
        own = p[:, clips, self.labels]
        per_clip = {"prob": own}
        schemes = list(schemes)
        if "brier" in schemes:
            per_clip["brier"] = 2 * own - torch.linalg.vector_norm(p, dim=-1).square()
        if {"margin", "margin_clamped"} & set(schemes):
            p[:, clips, self.labels] = -math.inf
            per_clip["margin"] = own - p.amax(dim=-1)
            per_clip["margin_clamped"] = per_clip["margin"].clamp_min(0.0)
        return {s: class_means(per_clip[s], self.labels, self.n_classes) for s in schemes}


def _reciprocal_norms(features: torch.Tensor) -> torch.Tensor:
    """1 / max(‖a_j(x)‖, 1e-8) as `scaled_cosines` computes it, stored heads-major (K, n): a transposed
    view would make every per-tau product gather across memory."""
    return torch.linalg.vector_norm(features, dim=-1).clamp_min(NORM_FLOOR).reciprocal().t().contiguous()


def _head_ranks(r: torch.Tensor) -> torch.Tensor:
    """Rank (K, C) of each head within its class by r, descending, ties to the lower index: one sort
    serves every top_k (kept = rank < top_k, the same heads `top_k_mask` keeps)."""
    order = torch.sort(r, dim=0, descending=True, stable=True).indices
    positions = torch.arange(r.shape[0], device=r.device).unsqueeze(1).expand_as(order)
    return torch.empty_like(order).scatter_(0, order, positions)


def _weight_sets(out: torch.Tensor, r: torch.Tensor, ranks: torch.Tensor, scheme: str,
                 tau_ws: Sequence[float], top_ks: Sequence[int | None]) -> None:
    """Write the weights of every (tau_w, top_k) pair, tau_w-major, into `out` (W·T, K, C), any strides.

    `calm_weights` batched, with its arithmetic kept (the same scalar ops per tau_w, sums over the
    heads axis), so the weights equal the estimator's bit for bit. The power (or exponential) of r
    is taken once per tau_w and masked per top_k: the best head by r is always kept, so the softmax's
    maximum over the kept heads is its maximum over all heads.
    """
    n_heads = r.shape[0]
    limits = torch.tensor([k if k is not None and 0 < k < n_heads else n_heads for k in top_ks], device=r.device)
    kept = ranks.unsqueeze(0) < limits[:, None, None]  # (T, K, C)
    out = out.unflatten(0, (len(tau_ws), len(top_ks)))
    if default_weight_norm(scheme) == "softmax":
        z = r / torch.tensor(tau_ws, dtype=r.dtype, device=r.device)[:, None, None]
        e = (z - z.amax(dim=1, keepdim=True)).exp_().unsqueeze(1) * kept
        torch.div(e, e.sum(dim=2, keepdim=True), out=out)
        return
    raw = r.clamp_min(0.0) + EPSILON
    raw = torch.stack([raw if tau_w == 1 else raw.pow(1.0 / tau_w) for tau_w in tau_ws]).unsqueeze(1) * kept
    total = raw.sum(dim=2, keepdim=True)
    uniform = kept / kept.sum(dim=1, keepdim=True)
    torch.where(total > WEIGHT_SUM_FLOOR, raw / total.clamp_min(EPSILON), uniform, out=out)


class _Scoreboard:
    """Query scores of many settings as one batched product per class, reduced to metrics at once."""

    def __init__(self, labels: torch.Tensor, targets: torch.Tensor | None, n_classes: int, n_settings: int) -> None:
        self.labels = labels
        self.targets = None if targets is None else targets.t().unsqueeze(1)  # (C, 1, m)
        self.n_classes = n_classes
        self.n_true = torch.bincount(labels, minlength=n_classes).double()
        self.ids = torch.arange(n_classes, device=labels.device)[:, None, None]
        self.accuracy = np.zeros(n_settings)
        self.macro_f1 = np.zeros(n_settings)
        self.exact_match = None if targets is None else np.zeros(n_settings)

    def score(self, weights: torch.Tensor, posteriors: torch.Tensor, index: np.ndarray) -> None:
        """weights (C, S, K) and posteriors (C, K, m): record the metrics of settings `index`."""
        scores = torch.bmm(weights, posteriors)  # (C, S, m)
        pred = scores.max(dim=0).indices  # ties: lowest class, as CALM.predict
        correct = pred == self.labels
        self.accuracy[index] = correct.double().mean(dim=1).mul(100.0).cpu().numpy()
        self.macro_f1[index] = self._macro_f1(pred, correct)
        if self.targets is not None:
            self.exact_match[index] = self._exact(scores).double().mean(dim=1).mul(100.0).cpu().numpy()

    def _macro_f1(self, pred: torch.Tensor, correct: torch.Tensor) -> np.ndarray:
        """As `calm.metrics.macro_f1`: classes absent from both predictions and truth are left out."""
        n_pred = torch.zeros(pred.shape[0], self.n_classes, dtype=torch.float64, device=pred.device)
        n_pred.scatter_add_(1, pred, torch.ones_like(pred, dtype=torch.float64))
        tp = torch.zeros_like(n_pred).scatter_add_(1, pred, correct.double())
        denominator = n_pred + self.n_true
        present = denominator > 0
        f1 = torch.where(present, 2 * tp / denominator.clamp_min(1.0), 0.0)
        return (f1.sum(dim=1) / present.sum(dim=1) * 100.0).cpu().numpy()

    def _exact(self, scores: torch.Tensor) -> torch.Tensor:
        """(S, m): the top-|true set| classes (ties to the lower id, as `top_label_sets`) are the true set.

        Every true class must rank above every other: min over true > max over the rest, or equal
        with all tied true classes at lower ids than all tied others.
        """
        true = self.targets
        low = torch.where(true, scores, math.inf).amin(dim=0)
        high = torch.where(true, -math.inf, scores).amax(dim=0)
        exact = low > high
        tied = low == high
        if bool(tied.any()):
            last_true = torch.where(true & (scores == low), self.ids, -1).amax(dim=0)
            first_other = torch.where(~true & (scores == high), self.ids, self.n_classes).amin(dim=0)
            exact |= tied & (last_true < first_other)
        return exact


def evaluate_grid(
    support: FeaturesLike,
    support_labels: LabelsLike,
    query: FeaturesLike,
    query_labels: LabelsLike,
    settings: CalmGrid | Sequence[CalmSetting] = PAPER_GRID,
    *,
    n_classes: int | None = None,
    query_targets: np.ndarray | torch.Tensor | None = None,
    chunk: int = 256,
) -> GridResult:
    """Accuracy and macro-F1 (and exact match, given (m, C) `query_targets`) of every setting.

    Reliability is measured on the support set (the paper's split). Each setting's predictions are
    those of `setting.estimator().fit(support, support_labels).predict(query)`: reliabilities and
    weights equal the estimator's bit for bit, and only the final sum over heads is ordered
    differently (a batched product against the estimator's matrix-vector product). A query whose two
    best class scores are closer than float32 rounding of that sum (near-uniform posteriors: large
    tau on weak features) can therefore go either way, as it could between thread counts.
    `chunk` bounds how many settings are scored per product (memory: chunk·K·C + C·chunk·m floats).
    """
    settings = tuple(settings.settings() if isinstance(settings, CalmGrid) else settings)
    if not settings:
        raise ConfigError("no settings to evaluate", "pass a CalmGrid or a non-empty list of CalmSetting")
    with torch.no_grad():
        scorer = _SplitScorer(support, support_labels, query, n_classes)
        labels = _query_labels(query_labels, scorer.n_classes).to(scorer.device)
        targets = None if query_targets is None else _targets(query_targets, labels.shape[0], scorer.n_classes)
        targets = None if targets is None else targets.to(scorer.device)
        if labels.shape[0] != scorer.n_queries:
            raise ConfigError(f"{scorer.n_queries} query clips but {labels.shape[0]} query labels",
                              "pass one label per query clip")
        board = _Scoreboard(labels, targets, scorer.n_classes, len(settings))
        for tau, groups in _plan(settings).items():
            _score_tau(scorer, board, tau, groups, chunk)
    return GridResult(settings, board.accuracy, board.macro_f1, board.exact_match, int(labels.shape[0]))


def _plan(settings: Sequence[CalmSetting]) -> dict[float, dict[tuple[str, float], list[tuple[int, CalmSetting]]]]:
    """Settings grouped by tau, then by reliability matrix (scheme, shrinkage), in first-seen order."""
    plan: dict[float, dict[tuple[str, float], list[tuple[int, CalmSetting]]]] = {}
    for i, s in enumerate(settings):
        plan.setdefault(s.tau, {}).setdefault((s.reliability, s.shrinkage), []).append((i, s))
    return plan


def _score_tau(scorer: _SplitScorer, board: _Scoreboard, tau: float,
               groups: dict[tuple[str, float], list[tuple[int, CalmSetting]]], chunk: int) -> None:
    """All settings at one tau: posteriors once, reliabilities per scheme, weights batched per r."""
    reliabilities = scorer.reliabilities(tau, {scheme for scheme, _ in groups})
    posteriors = scorer.posteriors("query", tau).permute(2, 0, 1).contiguous()  # (C, K, m)
    n_classes, n_heads = scorer.n_classes, scorer.n_heads
    capacity = max(chunk, *(len(members) for members in groups.values()))
    buffer = torch.empty(n_classes, capacity, n_heads, device=scorer.device)
    pending: list[int] = []
    for (scheme, alpha), members in groups.items():
        if len(pending) + len(members) > capacity:
            board.score(buffer[:, :len(pending)], posteriors, np.array(pending))
            pending = []
        r = shrink(reliabilities[scheme], scorer.counts, alpha)
        ranks = _head_ranks(r)
        tau_ws = list(dict.fromkeys(s.tau_w for _, s in members))
        top_ks = list(dict.fromkeys(s.top_k for _, s in members))
        slot = {(w, k): t for t, (w, k) in enumerate(itertools.product(tau_ws, top_ks))}
        picks = [slot[(s.tau_w, s.top_k)] for _, s in members]
        start = len(pending)
        target = buffer[:, start:start + len(members)].permute(1, 2, 0)  # (settings, K, C) view
        if picks == list(range(len(slot))):
            _weight_sets(target, r, ranks, scheme, tau_ws, top_ks)
        else:
            every = torch.empty(len(slot), n_heads, n_classes, device=scorer.device)
            _weight_sets(every, r, ranks, scheme, tau_ws, top_ks)
            target.copy_(every[torch.tensor(picks, device=scorer.device)])
        pending.extend(i for i, _ in members)
    if pending:
        board.score(buffer[:, :len(pending)], posteriors, np.array(pending))


def _query_labels(labels: LabelsLike, n_classes: int) -> torch.Tensor:
    labels = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels).long().cpu()
    if labels.ndim != 1 or (labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n_classes)):
        raise ConfigError(f"query labels must be 1-D class indices in 0..{n_classes - 1}",
                          "map the query clips' classes to the support set's indices")
    return labels


def _targets(targets: np.ndarray | torch.Tensor, m: int, n_classes: int) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(targets) if not isinstance(targets, torch.Tensor) else targets).cpu().bool()
    if tuple(t.shape) != (m, n_classes) or not bool(t.any(dim=1).all()):
        raise ConfigError(f"multi-label targets must be ({m}, {n_classes}) with a label in every row, "
                          f"got shape {tuple(t.shape)}", "pass calm.protocols.multilabel_targets(episode)")
    return t


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold id (n,) per clip: each class's clips shuffled and dealt round-robin, continuing from where
    the previous class stopped so folds stay balanced in size; with folds ≤ every class's count, every
    fold leaves at least one clip of every class for fitting."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    fold = np.empty(len(labels), dtype=np.int64)
    start = 0
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        fold[rows] = (start + np.arange(len(rows))) % folds
        start += len(rows)
    return fold


def support_folds(labels: np.ndarray, n_classes: int, folds: int, seed: int) -> tuple[np.ndarray | None, int, int]:
    """(fold id per clip, folds used, smallest class count) for cross-validation on a support set.

    Uses min(folds, smallest class count) folds, so with few shots each fold holds out one clip of
    every class and every class keeps a prototype; None when some class has a single clip.
    """
    smallest = int(np.bincount(np.asarray(labels), minlength=n_classes).min())
    n_folds = min(int(folds), smallest)
    if n_folds < 2:
        return None, n_folds, smallest
    return stratified_folds(labels, n_folds, seed), n_folds, smallest


def select_by_cross_validation(
    support_features: FeaturesLike,
    support_labels: LabelsLike,
    grid: CalmGrid | Sequence[CalmSetting] = PAPER_GRID,
    folds: int = 5,
    seed: int = 0,
    *,
    n_classes: int | None = None,
    support_targets: np.ndarray | torch.Tensor | None = None,
    chunk: int = 256,
) -> dict[str, Any]:
    """Choose a setting from the support set alone, by stratified k-fold cross-validation.

    Uses min(folds, smallest class count) folds (2 shots: leave one clip per class out); each fold
    refits prototypes and reliabilities on the rest and scores the whole grid on the held-out clips;
    the pooled held-out accuracy (exact match with `support_targets`) ranks the settings, ties to
    the first in grid order. With a single clip in some class nothing can be held out without
    leaving that class without a prototype, so CALM's default setting is returned instead, with
    ``selected_by: "default"`` and the reason in ``note``.
    """
    settings = tuple(grid.settings() if isinstance(grid, CalmGrid) else grid)
    features, labels, n_classes = validate_support(support_features, support_labels, n_classes)
    labels_np = labels.cpu().numpy()
    fold, n_folds, smallest = support_folds(labels_np, n_classes, folds, seed)
    if fold is None:
        return {"selected_by": "default", "setting": DEFAULT_SETTING.as_dict(), "setting_index": None,
                "cv_score": None, "folds": 0, "metric": None,
                "note": (f"a class has {smallest} support clip(s): none can be held out without leaving its "
                         "class without a prototype, so CALM's default setting is used")}
    targets = None if support_targets is None else _targets(support_targets, len(labels_np), n_classes)
    pooled = np.zeros(len(settings))
    metric = "accuracy" if targets is None else "exact_match"
    for f in range(n_folds):
        held = torch.from_numpy(fold == f)
        result = evaluate_grid(features[~held], labels[~held], features[held], labels[held], settings,
                               n_classes=n_classes, query_targets=None if targets is None else targets[held],
                               chunk=chunk)
        pooled += result.values() * int(held.sum())
    pooled /= len(labels_np)
    best = int(np.argmax(pooled))
    return {"selected_by": "cross_validation", "setting": settings[best].as_dict(), "setting_index": best,
            "cv_score": float(pooled[best]), "folds": n_folds, "metric": metric,
            "note": f"stratified {n_folds}-fold cross-validation on the {len(labels_np)} support clips"}


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


def paper_grid_report(
    support: FeaturesLike,
    support_labels: LabelsLike,
    query: FeaturesLike,
    query_labels: LabelsLike,
    grid: CalmGrid | Sequence[CalmSetting] = PAPER_GRID,
    *,
    folds: int = 5,
    seed: int = 0,
    n_classes: int | None = None,
    query_targets: np.ndarray | torch.Tensor | None = None,
    support_targets: np.ndarray | torch.Tensor | None = None,
    positive_class: int | None = None,
    chunk: int = 256,
) -> PaperGridReport:
    """protocol=paper: the grid on test, the setting chosen by cross-validation on the support set
    (with its test scores), and the best of grid on test, labelled as an oracle.

    The selector is called with the support set only. `positive_class` (two-class detection, e.g.
    bonafide) adds each selection's test EER. Multi-label: pass `query_targets` (and, to select by
    exact match, `support_targets`).
    """
    settings = tuple(grid.settings() if isinstance(grid, CalmGrid) else grid)
    test = evaluate_grid(support, support_labels, query, query_labels, settings, n_classes=n_classes,
                         query_targets=query_targets, chunk=chunk)
    cv = select_by_cross_validation(support, support_labels, settings, folds, seed, n_classes=n_classes,
                                    support_targets=support_targets, chunk=chunk)
    if cv["setting_index"] is not None:
        cv_test = test.scores_of(cv["setting_index"])
    else:
        default = evaluate_grid(support, support_labels, query, query_labels, [DEFAULT_SETTING],
                                n_classes=n_classes, query_targets=query_targets)
        cv_test = default.scores_of(0)
    best = test.best()
    cv_choice = {"label": CV_LABEL, **cv, "test": cv_test}
    oracle = {"label": ORACLE_LABEL, "setting": settings[best].as_dict(), "setting_index": best,
              "test": test.scores_of(best)}
    if positive_class is not None:
        for record in (cv_choice, oracle):
            record["test"]["eer"] = _test_eer(CalmSetting(**record["setting"]), support, support_labels, query,
                                              query_labels, positive_class, n_classes)
    return PaperGridReport(cv_choice, oracle, test)


def _test_eer(setting: CalmSetting, support: FeaturesLike, support_labels: LabelsLike, query: FeaturesLike,
              query_labels: LabelsLike, positive: int, n_classes: int | None) -> float:
    """EER (%) of one setting as a detector of `positive` (score difference between the two classes)."""
    scores = setting.estimator().fit(support, support_labels, n_classes=n_classes).predict_scores(query)
    truth = _query_labels(query_labels, 2).numpy() == positive
    return eer(detector_scores(scores, positive), truth)
