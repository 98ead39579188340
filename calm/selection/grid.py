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

The grid's values come from config only (`configs/grids/<dataset>.yaml`, `CalmGrid.from_config`).
Per-label questions (`query_groups`) add the two clip-level exact matches (`calm.selection.questions`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Protocol

import numpy as np
import torch

from calm.errors import ConfigError
from calm.methods.calm_core import (
    calm_scores,
    class_means,
    clip_reliabilities,
    default_weight_norm,
    head_choice_scores,
    head_ranks,
    logit_shift,
    setting_scores,
    shrink,
    softmax_classes_,
    weight_sets,
)
from calm.methods.precision import (
    low_precision_cosines,
    low_precision_prototypes,
    low_precision_softmax,
)
from calm.methods.prototypes import (
    FeaturesLike,
    LabelsLike,
    as_features,
    class_counts,
    class_sums,
    normalized_prototypes,
    prototype_dots,
    reciprocal_norms,
    reliability_labels,
    scaled_dots,
    support_labels,
    validate_query,
)
from calm.methods.ties import tie_order
from calm.metrics import exact_hits, prediction_counts
from calm.selection.questions import CLIP_METRICS, clip_exact_matches, group_tensor
from calm.selection.settings import (
    CalmGrid,
    CalmSetting,
    GridResult,
    grid_settings,
)

# support clips upcast to float32 at a time; up to this many, the grid's reliabilities and weights equal
# the estimator's bit for bit (larger supports are summed chunk by chunk: equal up to float32 rounding)
SUPPORT_CHUNK = 256
SCORE_BUDGET = 1 << 25  # floats of query posteriors scored at once (128 MiB), per chunk of query clips


def _device_of(rows: FeaturesLike | QueryRows) -> torch.device:
    return rows.device if isinstance(rows, torch.Tensor) else torch.device("cpu")


class SplitScorer:
    """One split's cosine products, computed once; posteriors per tau with CALM's own arithmetic,
    so reliabilities (and with them top_k's ranking) equal the estimator's bit for bit.

    The query clips are read `query_chunk` at a time (a tensor, or a lazy row view such as
    `calm.cache.RowView`, whose slices are read from disk): only their dot products with the
    prototypes (K, m, C) and inverse norms are kept, never the query features themselves.

    `reliability` (a named reliability set V: rows and labels) is where reliabilities are measured,
    against the prototypes of the support set; without it V = S. Its clips can also be scored
    (`score_settings(..., split="reliability")`: the `[val]` choice). `dtype` other than float32 is the
    authors' arithmetic (`calm.methods.precision`): prototypes, cosines and softmax in that dtype.
    """

    def __init__(self, support: FeaturesLike | QueryRows, labels: LabelsLike, query: FeaturesLike | QueryRows,
                 n_classes: int | None, query_chunk: int = 256, device: torch.device | str | None = None,
                 support_chunk: int = SUPPORT_CHUNK, reliability: ReliabilityRows | None = None,
                 dtype: torch.dtype = torch.float32) -> None:
        self.device = torch.device(device) if device is not None else _device_of(support)
        self.labels, self.n_classes = support_labels(tuple(support.shape), labels, n_classes, self.device)
        self.n_heads, head_dim, self.n_queries = support.shape[1], support.shape[2], len(query)
        self.counts = class_counts(self.labels, self.n_classes)
        self.dtype = dtype
        n = len(self.labels)
        support_parts = [slice(a, min(a + support_chunk, n)) for a in range(0, n, support_chunk)]
        # clips are upcast `query_chunk` at a time (memory), but scored in chunks as large as a
        # heads x classes x clips budget allows (speed: fewer posterior passes per tau)
        upcast = [slice(a, min(a + query_chunk, self.n_queries)) for a in range(0, self.n_queries, query_chunk)]
        scored = max(query_chunk, SCORE_BUDGET // (self.n_heads * self.n_classes))
        self.chunks = [slice(a, min(a + scored, self.n_queries)) for a in range(0, self.n_queries, scored)]
        splits = [("support", support, support_parts), ("query", query, upcast)]
        self.reliability_split, self.reliability_labels, self.reliability_counts = "support", self.labels, self.counts
        if reliability is not None:
            rows, rel_labels = reliability
            self.reliability_split = "reliability"
            self.reliability_labels = reliability_labels(rel_labels, len(rows), self.n_classes, self.device)
            self.reliability_counts = class_counts(self.reliability_labels, self.n_classes)
            self.n_reliability = len(rows)
            splits.append(("reliability", rows, [slice(a, min(a + query_chunk, len(rows)))
                                                 for a in range(0, len(rows), query_chunk)]))
        if dtype != torch.float32:
            self._low_precision(support, splits, head_dim)
            return
        sums = None
        for part in support_parts:  # class sums chunk by chunk: the support is never upcast whole
            part_sums = class_sums(as_features(support[part]).to(self.device), self.labels[part], self.n_classes)
            sums = part_sums if sums is None else sums + part_sums
        prototypes = normalized_prototypes(sums, self.counts)
        self._dots, self._recip = {}, {}
        for split, rows, parts in splits:
            dots, recip = [], []
            for part in parts:
                features = validate_query(rows[part], self.n_heads, head_dim).to(self.device)
                dots.append(prototype_dots(features, prototypes).transpose(1, 2))  # (K, C, part), classes-major
                recip.append(reciprocal_norms(features))
            self._dots[split] = torch.cat(dots, dim=2).transpose(1, 2)
            self._recip[split] = torch.cat(recip, dim=1)
        # reused across taus: fresh 100-MB tensors per tau would spend more time on page faults than on math
        largest = self.chunks[0].stop - self.chunks[0].start
        self._buffers = {"support": torch.empty_like(self._dots["support"]),  # classes-major, as the dots
                         "query": torch.empty(self.n_heads, self.n_classes, largest, device=self.device).transpose(1, 2)}
        if reliability is not None:
            self._buffers["reliability"] = torch.empty_like(self._dots["reliability"])

    def _low_precision(self, support: FeaturesLike | QueryRows, splits: list, head_dim: int) -> None:
        """The cosines of every split in `dtype` (`calm.methods.precision`), kept in that dtype."""
        whole = validate_query(support[slice(0, len(self.labels))], self.n_heads, head_dim).to(self.device)
        prototypes = low_precision_prototypes(whole, self.labels, self.n_classes, self.dtype)
        self._cosines = {split: torch.cat([low_precision_cosines(validate_query(rows[part], self.n_heads, head_dim)
                                                                 .to(self.device), prototypes) for part in parts],
                                          dim=1)
                         for split, rows, parts in splits}

    def setting_scores(self, setting: CalmSetting) -> torch.Tensor:
        """Class scores (m, C) of the query clips under one setting, computed chunk by chunk (for
        detection scores such as the EER's, where a setting's scores and not only its metrics count)."""
        r = shrink(self.reliabilities(setting.tau, [setting.reliability])[setting.reliability],
                   self.reliability_counts, setting.shrinkage)
        weighted, ranked = self.head_choice(r, setting)
        weights = weight_sets(weighted, head_ranks(ranked, self.tie_order(setting)),
                              default_weight_norm(setting.reliability), [setting.tau_w], [setting.top_k],
                              top_k_mode=setting.top_k_mode)[0]
        return torch.cat([calm_scores(self.posteriors("query", setting.tau, part), weights) for part in self.chunks])

    def tie_order(self, setting: CalmSetting) -> torch.Tensor | None:
        """The head order that settles reliability ties under `setting`'s tie rule (as CALM.fit)."""
        return tie_order(self.n_heads, setting.tie_break, setting.tie_seed)

    @staticmethod
    def head_choice(r: torch.Tensor, setting: CalmSetting) -> tuple[torch.Tensor, torch.Tensor]:
        """(weighted, ranked) scores of `setting`'s head choice (`calm_core.head_choice_scores`), the
        random draw seeded as CALM.fit seeds it."""
        return head_choice_scores(r, setting.head_choice, setting.head_seed)

    def posteriors(self, split: str, tau: float, part: slice = slice(None)) -> torch.Tensor:
        """p_j(c|x) (K, n, C) of the support clips, the reliability clips or one chunk of query clips, in
        a buffer the next call overwrites."""
        if self.dtype != torch.float32:
            return low_precision_softmax(self._cosines[split][:, part], tau)
        shift = logit_shift(tau)
        dots, recip = self._dots[split][:, part], self._recip[split][:, part]
        out = self._buffers[split][:, : dots.shape[1]]
        return softmax_classes_(scaled_dots(dots, recip, 1.0 / tau, shift or 0.0, out), shifted=shift is not None)

    def reliabilities(self, tau: float, schemes: Sequence[str]) -> dict[str, torch.Tensor]:
        """r (K, C) per scheme from one set of posteriors of the reliability set (consumed in place)."""
        labels = self.reliability_labels
        per_clip = clip_reliabilities(self.posteriors(self.reliability_split, tau), labels, schemes, scratch=True)
        return {s: class_means(r, labels, self.n_classes) for s, r in per_clip.items()}


class RowSubset:
    """Some rows of a feature tensor (or row view), by index, read a slice at a time: a fold of a
    support set without copying it."""

    def __init__(self, rows: FeaturesLike | QueryRows, index: torch.Tensor) -> None:
        self.rows, self.index = rows, index
        self.shape = (len(index), *tuple(rows.shape)[1:])

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, part: slice) -> FeaturesLike:
        return self.rows[self.index[part]]


class QueryRows(Protocol):
    """Query features that can be read a slice at a time: `len()` and `[a:b] -> (b-a, K, d)`."""

    def __len__(self) -> int: ...

    def __getitem__(self, part: slice) -> FeaturesLike: ...


# a named reliability set V for the grid: its rows (read a slice at a time) and their labels
ReliabilityRows = tuple[FeaturesLike | QueryRows, LabelsLike]


class Scoreboard:
    """Metrics of many settings, accumulated chunk of settings by chunk of queries. With `groups`
    (per-label questions), the predictions of each settings chunk are kept whole (settings x queries
    int64) until the clip-level exact matches are read off them."""

    def __init__(self, labels: torch.Tensor, targets: torch.Tensor | None, n_classes: int, n_settings: int,
                 groups: torch.Tensor | None = None) -> None:
        self.labels, self.targets, self.n_classes, self.groups = labels, targets, n_classes, groups
        self.accuracy = np.zeros(n_settings)
        self.macro_f1 = np.zeros(n_settings)
        self.exact_match = None if targets is None else np.zeros(n_settings)
        self.by_clip = {} if groups is None else {name: np.zeros(n_settings) for name in CLIP_METRICS}

    def score(self, weights: torch.Tensor, query_posteriors: Iterator[tuple[slice, torch.Tensor]],
              index: np.ndarray) -> None:
        """weights (C, S, K) and the query posteriors chunk by chunk, (C, K, mc) each: record the
        metrics of settings `index` from the counts summed over the chunks."""
        counts, hits, preds = None, None, []
        for part, posteriors in query_posteriors:
            scores = setting_scores(weights, posteriors)  # (C, S, mc)
            pred = scores.max(dim=0).indices  # ties: lowest class, as CALM.predict
            if self.groups is not None:
                preds.append(pred)
            chunk = prediction_counts(pred, self.labels[part], self.n_classes)
            counts = chunk if counts is None else counts + chunk
            if self.targets is not None:
                chunk_hits = exact_hits(scores, self.targets[part])
                hits = chunk_hits if hits is None else hits + chunk_hits
        self.accuracy[index] = counts.accuracy()
        self.macro_f1[index] = counts.macro_f1()
        if hits is not None:
            self.exact_match[index] = hits.div(counts.n).mul(100.0).cpu().numpy()
        if preds:
            for name, values in clip_exact_matches(torch.cat(preds, dim=1), self.labels, self.groups).items():
                self.by_clip[name][index] = values


def evaluate_grid(
    support: FeaturesLike,
    support_labels: LabelsLike,
    query: FeaturesLike | QueryRows,
    query_labels: LabelsLike,
    settings: CalmGrid | Sequence[CalmSetting],
    *,
    n_classes: int | None = None,
    query_targets: np.ndarray | torch.Tensor | None = None,
    query_groups: np.ndarray | None = None,
    chunk: int = 256,
    query_chunk: int = 256,
    device: torch.device | str | None = None,
    reliability: ReliabilityRows | None = None,
    dtype: torch.dtype = torch.float32,
) -> GridResult:
    """Accuracy and macro-F1 (and exact match, given (m, C) `query_targets`) of every setting.

    Reliability is measured on the support set (the paper's split), or on a named reliability set V
    (`reliability`: rows and labels); `dtype` as in `SplitScorer`. Each setting's predictions are
    those of `setting.estimator().fit(support, support_labels).predict(query)`: reliabilities and
    weights equal the estimator's bit for bit, and only the final sum over heads is ordered
    differently (`setting_scores` against `calm_scores`). A query whose two best class scores are
    closer than float32 rounding of that sum can therefore go either way, as between thread counts.
    Memory: `chunk` settings are scored at a time against `query_chunk` queries at a time
    (chunk·K·C + C·K·query_chunk + C·chunk·query_chunk floats), plus the queries' dot products with
    the prototypes (K·m·C floats); `device` (default: the support's) is where the work runs.
    """
    with torch.no_grad():
        scorer = SplitScorer(support, support_labels, query, n_classes, query_chunk, device,
                             reliability=reliability, dtype=dtype)
    return score_settings(scorer, query_labels, settings, query_targets=query_targets, query_groups=query_groups,
                          chunk=chunk)


def score_settings(scorer: SplitScorer, query_labels: LabelsLike, settings: CalmGrid | Sequence[CalmSetting], *,
                   query_targets: np.ndarray | torch.Tensor | None = None, query_groups: np.ndarray | None = None,
                   chunk: int = 256, split: str = "query") -> GridResult:
    """`evaluate_grid` on a split whose cosine products are already computed (a scorer serves many
    grids and settings' scores without reading the clips again). `split="reliability"` scores the
    clips of the named reliability set V instead of the queries (`query_labels` are then V's labels):
    the `[val]` choice, weights measured on V and prototypes from S as for the test clips."""
    settings = grid_settings(settings)
    if not settings:
        raise ConfigError("no settings to evaluate", "pass a CalmGrid or a non-empty list of CalmSetting")
    with torch.no_grad():
        labels = query_label_tensor(query_labels, scorer.n_classes).to(scorer.device)
        expected = scorer.n_queries if split == "query" else scorer.n_reliability
        if labels.shape[0] != expected:
            raise ConfigError(f"{expected} {split} clips but {labels.shape[0]} {split} labels",
                              "pass one label per scored clip")
        targets = None if query_targets is None else target_tensor(query_targets, labels.shape[0], scorer.n_classes)
        groups = None if query_groups is None else group_tensor(query_groups, labels.shape[0]).to(scorer.device)
        board = Scoreboard(labels, None if targets is None else targets.to(scorer.device), scorer.n_classes,
                           len(settings), groups)
        for tau, matrices in _plan(settings).items():
            _score_tau(scorer, board, tau, matrices, chunk, split)
    return GridResult(settings, board.accuracy, board.macro_f1, board.exact_match, int(labels.shape[0]),
                      board.by_clip)


# a reliability matrix and how its heads are chosen, ranked and masked:
# (scheme, shrinkage, top_k_mode, tie_break, tie_seed, head_choice, head_seed)
Matrix = tuple[str, float, str, str, int, str, int]


def _plan(settings: Sequence[CalmSetting]) -> dict[float, dict[Matrix, list[tuple[int, CalmSetting]]]]:
    """Settings grouped by tau, then by reliability matrix and head-ranking rule, in first-seen order."""
    plan: dict[float, dict[Matrix, list[tuple[int, CalmSetting]]]] = {}
    for i, s in enumerate(settings):
        key = (s.reliability, s.shrinkage, s.top_k_mode, s.tie_break, s.tie_seed, s.head_choice, s.head_seed)
        plan.setdefault(s.tau, {}).setdefault(key, []).append((i, s))
    return plan


def _score_tau(scorer: SplitScorer, board: Scoreboard, tau: float,
               groups: dict[Matrix, list[tuple[int, CalmSetting]]], chunk: int, split: str = "query") -> None:
    """All settings at one tau: posteriors once (per query chunk), reliabilities per scheme, weights
    batched per reliability matrix. `split`: the clips scored (the queries, or the reliability set V)."""
    reliabilities = scorer.reliabilities(tau, list(dict.fromkeys(key[0] for key in groups)))
    single = None
    if split != "query":  # V is scored whole, after its posteriors gave the reliabilities
        single = scorer.posteriors(split, tau).permute(2, 0, 1).contiguous()
    elif len(scorer.chunks) == 1:  # the whole test set fits one chunk: its posteriors serve every settings chunk
        single = scorer.posteriors("query", tau).permute(2, 0, 1).contiguous()  # (C, K, m)

    def query_posteriors() -> Iterator[tuple[slice, torch.Tensor]]:
        if single is not None:
            yield (scorer.chunks[0] if split == "query" else slice(None)), single
            return
        for part in scorer.chunks:
            yield part, scorer.posteriors("query", tau, part).permute(2, 0, 1).contiguous()

    n_classes, n_heads = scorer.n_classes, scorer.n_heads
    capacity = max(chunk, *(len(members) for members in groups.values()))
    buffer = torch.empty(n_classes, capacity, n_heads, device=scorer.device)
    pending: list[int] = []
    for (scheme, alpha, top_k_mode, *_), members in groups.items():
        if len(pending) + len(members) > capacity:
            board.score(buffer[:, :len(pending)], query_posteriors(), np.array(pending))
            pending = []
        r, ranked = scorer.head_choice(shrink(reliabilities[scheme], scorer.reliability_counts, alpha), members[0][1])
        ranks = head_ranks(ranked, scorer.tie_order(members[0][1]))
        tau_ws = list(dict.fromkeys(s.tau_w for _, s in members))
        top_ks = list(dict.fromkeys(s.top_k for _, s in members))
        slot = {(w, k): t for t, (w, k) in enumerate(itertools.product(tau_ws, top_ks))}
        picks = [slot[(s.tau_w, s.top_k)] for _, s in members]
        start = len(pending)
        target = buffer[:, start:start + len(members)].permute(1, 2, 0)  # (settings, K, C) view
        norm = default_weight_norm(scheme)
        if picks == list(range(len(slot))):
            weight_sets(r, ranks, norm, tau_ws, top_ks, out=target, top_k_mode=top_k_mode)
        else:
            target.copy_(weight_sets(r, ranks, norm, tau_ws, top_ks, top_k_mode=top_k_mode)[
                torch.tensor(picks, device=scorer.device)])
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
