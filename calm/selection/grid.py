"""CALM hyper-parameter grids on one split (docs/design/formulas.md#the-paper-grid): every setting, cheaply.

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
from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol

import numpy as np
import torch

from calm.errors import ConfigError
from calm.methods.calm_core import (
    calm_scores,
    class_means,
    class_totals,
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
from calm.methods.metrics import PredictionCounts, exact_hits, prediction_counts
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
# bytes of cosine products (and their posteriors) a split may hold at once; a split whose products need
# more is streamed: its rows are read again and its products recomputed block by block
MEMORY_BUDGET = 128 * 2**20


def _device_of(rows: FeaturesLike | QueryRows) -> torch.device:
    return rows.device if isinstance(rows, torch.Tensor) else torch.device("cpu")


def _slices(n: int, step: int) -> list[slice]:
    return [slice(a, min(a + step, n)) for a in range(0, n, step)] or [slice(0, 0)]


def rows_within(memory_budget: int, n_heads: int, n_classes: int) -> int:
    """How many clips' products fit `memory_budget` bytes (the one rule of evaluate.memory_budget_mb):
    per clip, its dot products with the prototypes and their posteriors (K x C floats each) and its
    inverse norms (K floats). At least one."""
    return max(1, memory_budget // ((2 * n_classes + 1) * n_heads * 4))


class SplitScorer:
    """One split's cosine products with CALM's own arithmetic, so reliabilities (and with them top_k's
    ranking) equal the estimator's bit for bit.

    Memory is bounded by `memory_budget` (bytes per split), not by the split sizes: a split (support,
    query, reliability set V) whose dot products with the prototypes (K, n, C), inverse norms and
    posteriors fit is computed once and kept; a larger one is cut into blocks that fit, each read from
    its rows and recomputed when it is used (`blocks`), so time grows linearly with the rows. The rows
    are read `query_chunk` at a time (a tensor, or a lazy row view such as `calm.cache.RowView`, whose
    slices are read from disk); the prototypes (K, C, d) are the only per-class state kept.

    `reliability` (a named reliability set V: rows and labels) is where reliabilities are measured,
    against the prototypes of the support set; without it V = S. Its clips can also be scored
    (`score_settings(..., split="reliability")`: the `[val]` choice). `dtype` other than float32 is the
    authors' arithmetic (`calm.methods.precision`): prototypes, cosines and softmax in that dtype, the
    cosines streamed block by block as the float32 products are; the prototypes' running sums take the
    support rows whole, held in that dtype.
    """

    def __init__(
        self,
        support: FeaturesLike | QueryRows,
        labels: LabelsLike,
        query: FeaturesLike | QueryRows,
        n_classes: int | None,
        query_chunk: int = 256,
        device: torch.device | str | None = None,
        support_chunk: int = SUPPORT_CHUNK,
        reliability: ReliabilityRows | None = None,
        dtype: torch.dtype = torch.float32,
        memory_budget: int = MEMORY_BUDGET,
    ) -> None:
        self.device = torch.device(device) if device is not None else _device_of(support)
        self.labels, self.n_classes = support_labels(tuple(support.shape), labels, n_classes, self.device)
        self.n_heads, self.head_dim, self.n_queries = support.shape[1], support.shape[2], len(query)
        self.counts = class_counts(self.labels, self.n_classes)
        self.dtype, self.query_chunk, self.support_chunk = dtype, query_chunk, support_chunk
        self.rows: dict[str, FeaturesLike | QueryRows] = {"support": support, "query": query}
        self.reliability_split, self.reliability_labels, self.reliability_counts = "support", self.labels, self.counts
        if reliability is not None:
            rows, rel_labels = reliability
            self.reliability_split = "reliability"
            self.reliability_labels = reliability_labels(rel_labels, len(rows), self.n_classes, self.device)
            self.reliability_counts = class_counts(self.reliability_labels, self.n_classes)
            self.n_reliability = len(rows)
            self.rows["reliability"] = rows
        block_rows = rows_within(memory_budget, self.n_heads, self.n_classes)
        self.block_rows = dict.fromkeys(self.rows, block_rows)
        # query clips are scored in chunks of at most a quarter of the budget of posteriors
        self.score_rows = max(query_chunk, memory_budget // (4 * 4 * self.n_heads * self.n_classes))
        self._resident: dict[str, slice] = {}
        self._streamed: dict[tuple[float, str], torch.Tensor] = {}  # r of a streamed V, per (tau, scheme)
        self._dots: dict[str, torch.Tensor] = {}
        self._recip: dict[str, torch.Tensor] = {}
        self._buffers: dict[str, torch.Tensor] = {}
        self._cosines: dict[str, torch.Tensor] = {}  # the low-precision path's products, in `dtype`
        if dtype != torch.float32:
            self.prototypes = self._low_precision_prototypes(support)
        else:
            sums = None
            for part in _slices(len(self.labels), support_chunk):  # class sums chunk by chunk: never upcast whole
                part_sums = class_sums(as_features(support[part]).to(self.device), self.labels[part], self.n_classes)
                sums = part_sums if sums is None else sums + part_sums
            self.prototypes = normalized_prototypes(sums, self.counts)
        for split in self.rows:
            if len(self.block_slices(split)) == 1:  # fits: computed once, kept
                self._load(split, self.block_slices(split)[0])

    def block_slices(self, split: str) -> list[slice]:
        """The blocks `split` is read in (one when its products fit the budget)."""
        return _slices(len(self.rows[split]), self.block_rows[split])

    def blocks(self, split: str) -> Iterator[slice]:
        """Each block of `split` made resident in turn (rows read, products computed), yielded as the
        rows it covers; the block's clips are then addressed relative to its start."""
        for block in self.block_slices(split):
            if self._resident.get(split) != block:
                self._load(split, block)
            yield block

    def _load(self, split: str, block: slice) -> None:
        """Dot products with the prototypes and inverse norms of `block`'s rows (the low-precision path:
        their cosines in `dtype`), read a chunk at a time."""
        self._dots.pop(split, None)
        self._buffers.pop(split, None)
        self._cosines.pop(split, None)
        step = self.support_chunk if split == "support" else self.query_chunk
        if self.dtype != torch.float32:
            self._cosines[split] = torch.cat(
                [
                    low_precision_cosines(
                        validate_query(
                            self.rows[split][slice(block.start + part.start, block.start + part.stop)],
                            self.n_heads,
                            self.head_dim,
                        ).to(self.device),
                        self.prototypes,
                    )
                    for part in _slices(block.stop - block.start, step)
                ],
                dim=1,
            )
            self._resident[split] = block
            n = block.stop - block.start
            if split == "query":
                self.chunks = _slices(n, min(self.score_rows, max(n, 1)))
            return
        dots, recip = [], []
        for part in _slices(block.stop - block.start, step):
            rows = self.rows[split][slice(block.start + part.start, block.start + part.stop)]
            features = validate_query(rows, self.n_heads, self.head_dim).to(self.device)
            dots.append(prototype_dots(features, self.prototypes).transpose(1, 2))  # (K, C, part), classes-major
            recip.append(reciprocal_norms(features))
        self._dots[split] = torch.cat(dots, dim=2).transpose(1, 2)
        self._recip[split] = torch.cat(recip, dim=1)
        self._resident[split] = block
        n = block.stop - block.start
        if split == "query":
            # scored in chunks (fewer posterior passes per tau than query_chunk-sized ones); the buffer is
            # reused across taus: fresh 100-MB tensors per tau would spend more time on page faults than math
            self.chunks = _slices(n, min(self.score_rows, max(n, 1)))
            largest = self.chunks[0].stop - self.chunks[0].start
            self._buffers[split] = torch.empty(self.n_heads, self.n_classes, largest, device=self.device).transpose(
                1, 2
            )
        else:
            self._buffers[split] = torch.empty_like(self._dots[split])  # classes-major, as the dots

    def _low_precision_prototypes(self, support: FeaturesLike | QueryRows) -> torch.Tensor:
        """The prototypes in `dtype` (`calm.methods.precision`): the support rows cast to `dtype` a chunk
        at a time (never upcast whole), then summed in support order."""
        rows = torch.cat(
            [
                validate_query(support[part], self.n_heads, self.head_dim).to(self.device).to(self.dtype)
                for part in _slices(len(self.labels), self.support_chunk)
            ]
        )
        return low_precision_prototypes(rows, self.labels, self.n_classes, self.dtype)

    def setting_scores(self, setting: CalmSetting) -> torch.Tensor:
        """Class scores (m, C) of the query clips under one setting, computed chunk by chunk (for
        detection scores such as the EER's, where a setting's scores and not only its metrics count)."""
        r = shrink(
            self.reliabilities(setting.tau, [setting.reliability])[setting.reliability],
            self.reliability_counts,
            setting.shrinkage,
        )
        weighted, ranked = self.head_choice(r, setting)
        weights = weight_sets(
            weighted,
            head_ranks(ranked, self.tie_order(setting)),
            default_weight_norm(setting.reliability),
            [setting.tau_w],
            [setting.top_k],
            top_k_mode=setting.top_k_mode,
        )[0]
        return torch.cat(
            [
                calm_scores(self.posteriors("query", setting.tau, part), weights)
                for _ in self.blocks("query")
                for part in self.chunks
            ]
        )

    def dots(self, split: str) -> torch.Tensor:
        """⟨a_j(x), μ̂_{c,j}⟩ (K, n, C) of the support clips or of every query clip (a classes-major view,
        as `prototype_dots`): cosines up to a positive factor per clip and head, all SAV needs. Only for
        a split that fits the memory budget (one block)."""
        if len(self.block_slices(split)) != 1:
            raise ConfigError(
                f"the {split} split's cosine products exceed the memory budget, so they are never held whole",
                "raise evaluate.memory_budget_mb, or stream the split with SplitScorer.blocks",
            )
        return self._dots[split]

    def tie_order(self, setting: CalmSetting) -> torch.Tensor | None:
        """The head order that settles reliability ties under `setting`'s tie rule (as CALM.fit)."""
        return tie_order(self.n_heads, setting.tie_break, setting.tie_seed)

    @staticmethod
    def head_choice(r: torch.Tensor, setting: CalmSetting) -> tuple[torch.Tensor, torch.Tensor]:
        """(weighted, ranked) scores of `setting`'s head choice (`calm_core.head_choice_scores`), the
        random draw seeded as CALM.fit seeds it."""
        return head_choice_scores(r, setting.head_choice, setting.head_seed)

    def posteriors(self, split: str, tau: float, part: slice = slice(None)) -> torch.Tensor:
        """p_j(c|x) (K, n, C) of the resident block of the support clips, the reliability clips or one
        chunk of query clips (`part`, relative to the block), in a buffer the next call overwrites."""
        if self.dtype != torch.float32:
            return low_precision_softmax(self._cosines[split][:, part], tau)
        shift = logit_shift(tau)
        dots, recip = self._dots[split][:, part], self._recip[split][:, part]
        out = self._buffers[split][:, : dots.shape[1]]
        return softmax_classes_(scaled_dots(dots, recip, 1.0 / tau, shift or 0.0, out), shifted=shift is not None)

    def reliabilities(self, tau: float, schemes: Sequence[str]) -> dict[str, torch.Tensor]:
        """r (K, C) per scheme from the posteriors of the reliability set (consumed in place)."""
        return self.reliability_matrices({tau: schemes})[tau]

    def reliability_matrices(self, schemes: Mapping[float, Sequence[str]]) -> dict[float, dict[str, torch.Tensor]]:
        """r (K, C) per tau and scheme. A reliability set that fits is scored whole (each class's mean
        as the estimator takes it); a larger one block by block, each class's total summed over the
        blocks, read once for every tau."""
        split, labels = self.reliability_split, self.reliability_labels
        if len(self.block_slices(split)) == 1:
            next(self.blocks(split))
            return {
                tau: {
                    s: class_means(r, labels, self.n_classes)
                    for s, r in clip_reliabilities(self.posteriors(split, tau), labels, wanted, scratch=True).items()
                }
                for tau, wanted in schemes.items()
            }
        missing = {tau: [s for s in wanted if (tau, s) not in self._streamed] for tau, wanted in schemes.items()}
        missing = {tau: wanted for tau, wanted in missing.items() if wanted}
        if missing:  # V read once for every (tau, scheme) not yet measured; kept (K x C each) for later calls
            totals: dict[tuple[float, str], torch.Tensor] = {}
            for block in self.blocks(split):
                for tau, wanted in missing.items():
                    per_clip = clip_reliabilities(self.posteriors(split, tau), labels[block], wanted, scratch=True)
                    for s, r in per_clip.items():
                        total = class_totals(r, labels[block], self.n_classes)
                        totals[tau, s] = total if (tau, s) not in totals else totals[tau, s] + total
            scale = self.reliability_counts.clamp_min(1.0)
            self._streamed.update({key: total / scale for key, total in totals.items()})
        return {tau: {s: self._streamed[tau, s].clone() for s in wanted} for tau, wanted in schemes.items()}


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
    """Metrics of many settings, from counts summed chunk of queries by chunk, block by block: only
    per-setting counts are kept across blocks (`score`), the metrics are read off their totals
    (`finish`). With `groups` (per-label questions), each settings chunk's predictions (settings x
    queries int64) are kept until the clip-level exact matches are read off them."""

    def __init__(
        self,
        labels: torch.Tensor,
        targets: torch.Tensor | None,
        n_classes: int,
        n_settings: int,
        groups: torch.Tensor | None = None,
    ) -> None:
        self.labels, self.targets, self.n_classes, self.groups = labels, targets, n_classes, groups
        self.accuracy = np.zeros(n_settings)
        self.macro_f1 = np.zeros(n_settings)
        self.exact_match = None if targets is None else np.zeros(n_settings)
        self.by_clip = {} if groups is None else {name: np.zeros(n_settings) for name in CLIP_METRICS}
        self.offset = 0  # the first row of the block being scored
        self._totals: dict[bytes, tuple[np.ndarray, PredictionCounts, torch.Tensor | None, list[torch.Tensor]]] = {}

    def score(
        self, weights: torch.Tensor, query_posteriors: Iterator[tuple[slice, torch.Tensor]], index: np.ndarray
    ) -> None:
        """weights (C, S, K) and the posteriors of the block's queries chunk by chunk, (C, K, mc) each
        (slices relative to the block): add the counts of settings `index`."""
        _, counts, hits, preds = self._totals.get(index.tobytes(), (index, None, None, []))
        for part, posteriors in query_posteriors:
            rows = slice(self.offset + part.start, self.offset + part.stop)
            scores = setting_scores(weights, posteriors)  # (C, S, mc)
            pred = scores.max(dim=0).indices  # ties: lowest class, as CALM.predict
            if self.groups is not None:
                preds.append(pred)
            chunk = prediction_counts(pred, self.labels[rows], self.n_classes)
            counts = chunk if counts is None else counts + chunk
            if self.targets is not None:
                chunk_hits = exact_hits(scores, self.targets[rows])
                hits = chunk_hits if hits is None else hits + chunk_hits
        self._totals[index.tobytes()] = (index, counts, hits, preds)

    def finish(self) -> None:
        """The metrics of every scored setting, from its counts over all blocks."""
        for index, counts, hits, preds in self._totals.values():
            self.accuracy[index] = counts.accuracy()
            self.macro_f1[index] = counts.macro_f1()
            if hits is not None:
                self.exact_match[index] = hits.div(counts.n).mul(100.0).cpu().numpy()
            if preds:
                for name, values in clip_exact_matches(torch.cat(preds, dim=1), self.labels, self.groups).items():
                    self.by_clip[name][index] = values
        self._totals = {}


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
    memory_budget: int = MEMORY_BUDGET,
) -> GridResult:
    """Accuracy and macro-F1 (and exact match, given (m, C) `query_targets`) of every setting.

    Reliability is measured on the support set (the paper's split), or on a named reliability set V
    (`reliability`: rows and labels); `dtype` as in `SplitScorer`. Each setting's predictions are
    those of `setting.estimator().fit(support, support_labels).predict(query)`: reliabilities and
    weights equal the estimator's bit for bit, and only the final sum over heads is ordered
    differently (`setting_scores` against `calm_scores`). A query whose two best class scores are
    closer than float32 rounding of that sum can therefore go either way, as between thread counts.
    Memory: `chunk` settings' weights (chunk·K·C floats), the prototypes (K·C·d) and, per split, at most
    `memory_budget` bytes of cosine products and posteriors (`SplitScorer`), whatever the split sizes;
    `device` (default: the support's) is where the work runs.
    """
    with torch.no_grad():
        scorer = SplitScorer(
            support,
            support_labels,
            query,
            n_classes,
            query_chunk,
            device,
            reliability=reliability,
            dtype=dtype,
            memory_budget=memory_budget,
        )
    return score_settings(
        scorer, query_labels, settings, query_targets=query_targets, query_groups=query_groups, chunk=chunk
    )


def score_settings(
    scorer: SplitScorer,
    query_labels: LabelsLike,
    settings: CalmGrid | Sequence[CalmSetting],
    *,
    query_targets: np.ndarray | torch.Tensor | None = None,
    query_groups: np.ndarray | None = None,
    chunk: int = 256,
    split: str = "query",
) -> GridResult:
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
            raise ConfigError(
                f"{expected} {split} clips but {labels.shape[0]} {split} labels", "pass one label per scored clip"
            )
        targets = None if query_targets is None else target_tensor(query_targets, labels.shape[0], scorer.n_classes)
        groups = None if query_groups is None else group_tensor(query_groups, labels.shape[0]).to(scorer.device)
        board = Scoreboard(
            labels, None if targets is None else targets.to(scorer.device), scorer.n_classes, len(settings), groups
        )
        plan = _plan(settings)
        reliabilities = scorer.reliability_matrices(
            {tau: list(dict.fromkeys(key[0] for key in matrices)) for tau, matrices in plan.items()}
        )
        for block in scorer.blocks(split):  # one block when the split fits the memory budget
            board.offset = block.start
            for tau, matrices in plan.items():
                _score_tau(scorer, board, tau, matrices, chunk, reliabilities[tau], split)
        board.finish()
    return GridResult(settings, board.accuracy, board.macro_f1, board.exact_match, int(labels.shape[0]), board.by_clip)


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


def _score_tau(
    scorer: SplitScorer,
    board: Scoreboard,
    tau: float,
    groups: dict[Matrix, list[tuple[int, CalmSetting]]],
    chunk: int,
    reliabilities: dict[str, torch.Tensor],
    split: str = "query",
) -> None:
    """All settings at one tau on the resident block of `split` (the queries, or the reliability set V):
    posteriors once (per query chunk), weights batched per reliability matrix (`reliabilities`: r per
    scheme at this tau)."""
    single = None
    if split != "query":  # V's block is scored whole
        single = scorer.posteriors(split, tau).permute(2, 0, 1).contiguous()
    elif len(scorer.chunks) == 1:  # the block fits one chunk: its posteriors serve every settings chunk
        single = scorer.posteriors("query", tau).permute(2, 0, 1).contiguous()  # (C, K, m)

    def query_posteriors() -> Iterator[tuple[slice, torch.Tensor]]:
        if single is not None:
            yield (scorer.chunks[0] if split == "query" else slice(0, single.shape[2])), single
            return
        for part in scorer.chunks:
            yield part, scorer.posteriors("query", tau, part).permute(2, 0, 1).contiguous()

    n_classes, n_heads = scorer.n_classes, scorer.n_heads
    capacity = max(chunk, *(len(members) for members in groups.values()))
    buffer = torch.empty(n_classes, capacity, n_heads, device=scorer.device)
    pending: list[int] = []
    for (scheme, alpha, top_k_mode, *_), members in groups.items():
        if len(pending) + len(members) > capacity:
            board.score(buffer[:, : len(pending)], query_posteriors(), np.array(pending))
            pending = []
        r, ranked = scorer.head_choice(shrink(reliabilities[scheme], scorer.reliability_counts, alpha), members[0][1])
        ranks = head_ranks(ranked, scorer.tie_order(members[0][1]))
        tau_ws = list(dict.fromkeys(s.tau_w for _, s in members))
        top_ks = list(dict.fromkeys(s.top_k for _, s in members))
        slot = {(w, k): t for t, (w, k) in enumerate(itertools.product(tau_ws, top_ks))}
        picks = [slot[(s.tau_w, s.top_k)] for _, s in members]
        start = len(pending)
        target = buffer[:, start : start + len(members)].permute(1, 2, 0)  # (settings, K, C) view
        norm = default_weight_norm(scheme)
        if picks == list(range(len(slot))):
            weight_sets(r, ranks, norm, tau_ws, top_ks, out=target, top_k_mode=top_k_mode)
        else:
            target.copy_(
                weight_sets(r, ranks, norm, tau_ws, top_ks, top_k_mode=top_k_mode)[
                    torch.tensor(picks, device=scorer.device)
                ]
            )
        pending.extend(i for i, _ in members)
    if pending:
        board.score(buffer[:, : len(pending)], query_posteriors(), np.array(pending))


def query_label_tensor(labels: LabelsLike, n_classes: int) -> torch.Tensor:
    """Query labels as a 1-D int64 CPU tensor of class indices, checked against the class count."""
    labels = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels).long().cpu()
    if labels.ndim != 1 or (labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n_classes)):
        raise ConfigError(
            f"query labels must be 1-D class indices in 0..{n_classes - 1}",
            "map the query clips' classes to the support set's indices",
        )
    return labels


def target_tensor(targets: np.ndarray | torch.Tensor, m: int, n_classes: int) -> torch.Tensor:
    """Multi-label true sets as an (m, C) bool CPU tensor with a label in every row."""
    t = torch.as_tensor(np.asarray(targets) if not isinstance(targets, torch.Tensor) else targets).cpu().bool()
    if tuple(t.shape) != (m, n_classes) or not bool(t.any(dim=1).all()):
        raise ConfigError(
            f"multi-label targets must be ({m}, {n_classes}) with a label in every row, got shape {tuple(t.shape)}",
            "pass calm.protocols.multilabel_targets(episode)",
        )
    return t
