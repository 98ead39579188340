"""CALM hyper-parameter grids on one split (DESIGN section 8, protocol=paper): every setting, cheaply.

`evaluate_grid` scores a grid on one support/query split with `calm.methods.calm_core`'s functions,
sharing all the work settings have in common:

- the cosine products, once per split (dot products with the normalised prototypes and the clips'
  inverse norms; per tau the logits come from `calm.methods.prototypes.scaled_dots`, the
  estimator's own formula);
- the posteriors, once per tau; the reliabilities, once per (tau, scheme); shrinkage per alpha;
- the per-class head ranking for top_k, one sort per reliability matrix;
- the weights of all (tau_w, top_k) pairs of a reliability matrix at once (`weight_sets`), and the
  query scores of hundreds of settings as one batched product per class (`setting_scores`).

The grid's values come from config only (`configs/protocol/*.yaml`, `CalmGrid.from_config`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np
import torch

from calm.errors import ConfigError
from calm.methods import CALM
from calm.methods.calm_core import (
    check_calm_settings,
    class_means,
    clip_reliabilities,
    default_weight_norm,
    head_ranks,
    logit_shift,
    setting_scores,
    shrink,
    softmax_classes_,
    weight_sets,
)
from calm.methods.prototypes import (
    FeaturesLike,
    LabelsLike,
    class_counts,
    class_sums,
    normalized_prototypes,
    prototype_dots,
    reciprocal_norms,
    scaled_dots,
    validate_query,
    validate_support,
)
from calm.metrics import exact_hits, prediction_counts

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


def grid_settings(grid: CalmGrid | Sequence[CalmSetting]) -> tuple[CalmSetting, ...]:
    """The settings of a grid, or of an explicit list, in order."""
    return tuple(grid.settings() if isinstance(grid, CalmGrid) else grid)


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


class SplitScorer:
    """One split's cosine products, computed once; posteriors per tau with CALM's own arithmetic,
    so reliabilities (and with them top_k's ranking) equal the estimator's bit for bit.

    The query clips are read `query_chunk` at a time (a tensor, or a lazy row view such as
    `calm.cache.RowView`, whose slices are read from disk): only their dot products with the
    prototypes (K, m, C) and inverse norms are kept, never the query features themselves.
    """

    def __init__(self, support: FeaturesLike, labels: LabelsLike, query: FeaturesLike | QueryRows,
                 n_classes: int | None, query_chunk: int = 8192,
                 device: torch.device | str | None = None) -> None:
        support, self.labels, self.n_classes = validate_support(support, labels, n_classes)
        self.device = torch.device(device) if device is not None else support.device
        support, self.labels = support.to(self.device), self.labels.to(self.device)
        self.n_heads, self.n_queries = support.shape[1], len(query)
        self.counts = class_counts(self.labels, self.n_classes)
        prototypes = normalized_prototypes(class_sums(support, self.labels, self.n_classes), self.counts)
        self.chunks = [slice(a, min(a + query_chunk, self.n_queries)) for a in range(0, self.n_queries, query_chunk)]
        query_dots, query_recip = [], []
        for part in self.chunks:
            rows = validate_query(query[part], support.shape[1], support.shape[2]).to(self.device)
            query_dots.append(prototype_dots(rows, prototypes).transpose(1, 2))  # (K, C, mc), classes-major
            query_recip.append(reciprocal_norms(rows))
        self._dots = {"support": prototype_dots(support, prototypes),
                      "query": torch.cat(query_dots, dim=2).transpose(1, 2)}
        self._recip = {"support": reciprocal_norms(support), "query": torch.cat(query_recip, dim=1)}
        # reused across taus: fresh 100-MB tensors per tau would spend more time on page faults than on math
        largest = self.chunks[0].stop - self.chunks[0].start
        self._buffers = {"support": torch.empty_like(self._dots["support"]),  # classes-major, as the dots
                         "query": torch.empty(self.n_heads, self.n_classes, largest, device=self.device).transpose(1, 2)}

    def posteriors(self, split: str, tau: float, part: slice = slice(None)) -> torch.Tensor:
        """p_j(c|x) (K, n, C) of the support clips or of one chunk of query clips, in a buffer the
        next call overwrites."""
        shift = logit_shift(tau)
        dots, recip = self._dots[split][:, part], self._recip[split][:, part]
        out = self._buffers[split][:, : dots.shape[1]]
        return softmax_classes_(scaled_dots(dots, recip, 1.0 / tau, shift or 0.0, out), shifted=shift is not None)

    def reliabilities(self, tau: float, schemes: Sequence[str]) -> dict[str, torch.Tensor]:
        """r (K, C) per scheme from one set of support posteriors (consumed in place)."""
        per_clip = clip_reliabilities(self.posteriors("support", tau), self.labels, schemes, scratch=True)
        return {s: class_means(r, self.labels, self.n_classes) for s, r in per_clip.items()}


class QueryRows(Protocol):
    """Query features that can be read a slice at a time: `len()` and `[a:b] -> (b-a, K, d)`."""

    def __len__(self) -> int: ...

    def __getitem__(self, part: slice) -> FeaturesLike: ...


class Scoreboard:
    """Metrics of many settings, accumulated chunk of settings by chunk of queries."""

    def __init__(self, labels: torch.Tensor, targets: torch.Tensor | None, n_classes: int, n_settings: int) -> None:
        self.labels, self.targets, self.n_classes = labels, targets, n_classes
        self.accuracy = np.zeros(n_settings)
        self.macro_f1 = np.zeros(n_settings)
        self.exact_match = None if targets is None else np.zeros(n_settings)

    def score(self, weights: torch.Tensor, query_posteriors: Iterator[tuple[slice, torch.Tensor]],
              index: np.ndarray) -> None:
        """weights (C, S, K) and the query posteriors chunk by chunk, (C, K, mc) each: record the
        metrics of settings `index` from the counts summed over the chunks."""
        counts, hits = None, None
        for part, posteriors in query_posteriors:
            scores = setting_scores(weights, posteriors)  # (C, S, mc)
            pred = scores.max(dim=0).indices  # ties: lowest class, as CALM.predict
            chunk = prediction_counts(pred, self.labels[part], self.n_classes)
            counts = chunk if counts is None else counts + chunk
            if self.targets is not None:
                chunk_hits = exact_hits(scores, self.targets[part])
                hits = chunk_hits if hits is None else hits + chunk_hits
        self.accuracy[index] = counts.accuracy()
        self.macro_f1[index] = counts.macro_f1()
        if hits is not None:
            self.exact_match[index] = hits.div(counts.n).mul(100.0).cpu().numpy()


def evaluate_grid(
    support: FeaturesLike,
    support_labels: LabelsLike,
    query: FeaturesLike | QueryRows,
    query_labels: LabelsLike,
    settings: CalmGrid | Sequence[CalmSetting],
    *,
    n_classes: int | None = None,
    query_targets: np.ndarray | torch.Tensor | None = None,
    chunk: int = 256,
    query_chunk: int = 8192,
    device: torch.device | str | None = None,
) -> GridResult:
    """Accuracy and macro-F1 (and exact match, given (m, C) `query_targets`) of every setting.

    Reliability is measured on the support set (the paper's split). Each setting's predictions are
    those of `setting.estimator().fit(support, support_labels).predict(query)`: reliabilities and
    weights equal the estimator's bit for bit, and only the final sum over heads is ordered
    differently (`setting_scores` against `calm_scores`). A query whose two best class scores are
    closer than float32 rounding of that sum can therefore go either way, as between thread counts.
    Memory: `chunk` settings are scored at a time against `query_chunk` queries at a time
    (chunk·K·C + C·K·query_chunk + C·chunk·query_chunk floats), plus the queries' dot products with
    the prototypes (K·m·C floats); `device` (default: the support's) is where the work runs.
    """
    settings = grid_settings(settings)
    if not settings:
        raise ConfigError("no settings to evaluate", "pass a CalmGrid or a non-empty list of CalmSetting")
    with torch.no_grad():
        scorer = SplitScorer(support, support_labels, query, n_classes, query_chunk, device)
        labels = query_label_tensor(query_labels, scorer.n_classes).to(scorer.device)
        if labels.shape[0] != scorer.n_queries:
            raise ConfigError(f"{scorer.n_queries} query clips but {labels.shape[0]} query labels",
                              "pass one label per query clip")
        targets = None if query_targets is None else target_tensor(query_targets, labels.shape[0], scorer.n_classes)
        board = Scoreboard(labels, None if targets is None else targets.to(scorer.device), scorer.n_classes,
                           len(settings))
        for tau, groups in _plan(settings).items():
            _score_tau(scorer, board, tau, groups, chunk)
    return GridResult(settings, board.accuracy, board.macro_f1, board.exact_match, int(labels.shape[0]))


def _plan(settings: Sequence[CalmSetting]) -> dict[float, dict[tuple[str, float], list[tuple[int, CalmSetting]]]]:
    """Settings grouped by tau, then by reliability matrix (scheme, shrinkage), in first-seen order."""
    plan: dict[float, dict[tuple[str, float], list[tuple[int, CalmSetting]]]] = {}
    for i, s in enumerate(settings):
        plan.setdefault(s.tau, {}).setdefault((s.reliability, s.shrinkage), []).append((i, s))
    return plan


def _score_tau(scorer: SplitScorer, board: Scoreboard, tau: float,
               groups: dict[tuple[str, float], list[tuple[int, CalmSetting]]], chunk: int) -> None:
    """All settings at one tau: posteriors once (per query chunk), reliabilities per scheme, weights
    batched per reliability matrix."""
    reliabilities = scorer.reliabilities(tau, list(dict.fromkeys(scheme for scheme, _ in groups)))
    single = None
    if len(scorer.chunks) == 1:  # the whole test set fits one chunk: its posteriors serve every settings chunk
        single = scorer.posteriors("query", tau).permute(2, 0, 1).contiguous()  # (C, K, m)

    def query_posteriors() -> Iterator[tuple[slice, torch.Tensor]]:
        if single is not None:
            yield scorer.chunks[0], single
            return
        for part in scorer.chunks:
            yield part, scorer.posteriors("query", tau, part).permute(2, 0, 1).contiguous()

    n_classes, n_heads = scorer.n_classes, scorer.n_heads
    capacity = max(chunk, *(len(members) for members in groups.values()))
    buffer = torch.empty(n_classes, capacity, n_heads, device=scorer.device)
    pending: list[int] = []
    for (scheme, alpha), members in groups.items():
        if len(pending) + len(members) > capacity:
            board.score(buffer[:, :len(pending)], query_posteriors(), np.array(pending))
            pending = []
        r = shrink(reliabilities[scheme], scorer.counts, alpha)
        ranks = head_ranks(r)
        tau_ws = list(dict.fromkeys(s.tau_w for _, s in members))
        top_ks = list(dict.fromkeys(s.top_k for _, s in members))
        slot = {(w, k): t for t, (w, k) in enumerate(itertools.product(tau_ws, top_ks))}
        picks = [slot[(s.tau_w, s.top_k)] for _, s in members]
        start = len(pending)
        target = buffer[:, start:start + len(members)].permute(1, 2, 0)  # (settings, K, C) view
        norm = default_weight_norm(scheme)
        if picks == list(range(len(slot))):
            weight_sets(r, ranks, norm, tau_ws, top_ks, out=target)
        else:
            target.copy_(weight_sets(r, ranks, norm, tau_ws, top_ks)[torch.tensor(picks, device=scorer.device)])
        pending.extend(i for i, _ in members)
    if pending:
        board.score(buffer[:, :len(pending)], query_posteriors(), np.array(pending))


def query_label_tensor(labels: LabelsLike, n_classes: int) -> torch.Tensor:
    """Query labels as a 1-D int64 CPU tensor of class indices, checked against the class count."""
    labels = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels).long().cpu()
    if labels.ndim != 1 or (labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n_classes)):
        raise ConfigError(f"query labels must be 1-D class indices in 0..{n_classes - 1}",
                          "map the query clips' classes to the support set's indices")
    return labels


def target_tensor(targets: np.ndarray | torch.Tensor, m: int, n_classes: int) -> torch.Tensor:
    """Multi-label true sets as an (m, C) bool CPU tensor with a label in every row."""
    t = torch.as_tensor(np.asarray(targets) if not isinstance(targets, torch.Tensor) else targets).cpu().bool()
    if tuple(t.shape) != (m, n_classes) or not bool(t.any(dim=1).all()):
        raise ConfigError(f"multi-label targets must be ({m}, {n_classes}) with a label in every row, "
                          f"got shape {tuple(t.shape)}", "pass calm.protocols.multilabel_targets(episode)")
    return t
