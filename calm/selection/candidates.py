"""Candidate estimators scored on one cross-validation fold, sharing the work they have in common.

`AutoSelect` (`calm.selection.auto`) scores every candidate on every fold of a support set. Fitting
each candidate on each fold through its own API would compute the fold's cosine products once per
candidate; here they are computed once per fold (`calm.selection.grid.SplitScorer`) and every
candidate the grid machinery knows is read off them:

- SAV (any top_k): head scores, ranking and votes from the fold's dot products
  (`calm.methods.sav_core`, SAV's own functions), so any number of top_k costs one ranking;
- CALM with reliability on the fit clips and the paper's weight pairing (one `CalmSetting` per
  candidate), and GRW: per tau the posteriors once, every reliability scheme off them, each
  candidate's weights (`calm.methods.calm_core.weight_sets`, as the grid engine makes them), and the
  held-out clips scored for all candidates of that tau by one batched product per class
  (`setting_scores`).

Any other candidate (another CALM configuration, an ablation, the linear probe, a user's estimator)
is fitted on the fold's fit clips and predicts its held-out clips through the estimator API.
Engine and API agree up to float32 rounding (the order of the sum over heads, shifted logits), which
can only flip a held-out clip whose two best class scores are closer than that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from calm.methods import GRW, SAV, Estimator
from calm.methods.calm_core import (
    calm_weights,
    default_weight_norm,
    head_ranks,
    setting_scores,
    shrink,
    weight_sets,
)
from calm.methods.metrics import accuracy
from calm.methods.sav_core import sav_decide, sav_head_scores, sav_head_votes, sav_rank
from calm.methods.ties import tie_order
from calm.selection.grid import SplitScorer
from calm.selection.settings import AXES, CalmSetting, uses_calm_engine


def fit_seed(estimator: Any, tie_seed: int | None) -> int:
    """The tie seed a fit of `estimator` uses: the one passed to fit (an episode's), else its own."""
    return int(estimator.tie_seed if tie_seed is None else tie_seed)


def engine_setting(estimator: Any, tie_seed: int | None) -> CalmSetting | None:
    """The grid engine's setting for a CALM estimator it computes exactly from the fold's shared float32
    cosines (`uses_calm_engine`, with CALM's own head choice and float32 arithmetic); None for any other
    estimator or configuration, which is then fitted per fold through its own API."""
    if (
        not uses_calm_engine(estimator)
        or estimator.head_choice != "reliable"
        or estimator.arithmetic_dtype != "float32"
    ):
        return None
    values = {name: getattr(estimator, name) for name in (*AXES, "top_k_mode", "tie_break")}
    return CalmSetting(**values, tie_seed=fit_seed(estimator, tie_seed))


@dataclass(frozen=True)
class CandidatePlan:
    """How each candidate (by position) is scored on a fold: SAV, GRW and engine-exact CALM from the
    fold's shared cosine products, the rest through fit/predict. Built once per support set, since
    the tie seed of a fit (an episode's) is part of a setting."""

    n_candidates: int
    sav: tuple[tuple[int, SAV], ...]
    calm: tuple[tuple[int, CalmSetting], ...]
    grw: tuple[tuple[int, GRW], ...]
    other: tuple[tuple[int, Estimator], ...]

    @classmethod
    def of(cls, candidates: Sequence[Estimator], tie_seed: int | None) -> CandidatePlan:
        """Sort the candidates by how they are scored (exact classes only: a subclass may change them)."""
        sav, calm, grw, other = [], [], [], []
        for i, estimator in enumerate(candidates):
            setting = engine_setting(estimator, tie_seed)
            if setting is not None:
                calm.append((i, setting))
            elif type(estimator) is SAV:
                sav.append((i, estimator))
            elif type(estimator) is GRW:
                grw.append((i, estimator))
            else:
                other.append((i, estimator))
        return cls(len(candidates), tuple(sav), tuple(calm), tuple(grw), tuple(other))

    @property
    def shares_products(self) -> bool:
        """Whether any candidate is read off the fold's shared cosine products."""
        return bool(self.sav or self.calm or self.grw)


def fold_accuracies(
    plan: CandidatePlan,
    features: torch.Tensor,
    labels: torch.Tensor,
    held: torch.Tensor,
    n_classes: int,
    tie_seed: int | None,
) -> np.ndarray:
    """Percent of the held-out clips (`held`, bool (n,)) each candidate gets right when fitted on the
    other clips, (n_candidates,)."""
    out = np.zeros(plan.n_candidates)
    fit_rows, held_rows = (~held).nonzero().flatten(), held.nonzero().flatten()
    fit_labels, held_labels = labels[fit_rows], labels[held_rows]
    fit_features, held_features = features[fit_rows], features[held_rows]  # gathered once per fold
    if plan.shares_products:
        with torch.no_grad():
            scorer = SplitScorer(fit_features, fit_labels, held_features, n_classes)
            for i, pred in [
                *_sav_predictions(scorer, plan.sav, tie_seed),
                *_weighted_predictions(scorer, plan.calm, plan.grw, tie_seed),
            ]:
                out[i] = accuracy(pred, held_labels)
    tie = {} if tie_seed is None else {"tie_seed": tie_seed}
    for i, estimator in plan.other:
        fitted = estimator.fit(fit_features, fit_labels, n_classes=n_classes, **tie)
        out[i] = accuracy(fitted.predict(held_features), held_labels)
    return out


def _sav_predictions(
    scorer: SplitScorer, candidates: Sequence[tuple[int, SAV]], tie_seed: int | None
) -> list[tuple[int, torch.Tensor]]:
    """SAV's fit and predict on the fold (`SAV.fit`, `SAV.predict`), from the products: one head ranking
    per tie order serves every top_k."""
    if not candidates:
        return []
    support, query = scorer.dots("support"), scorer.dots("query")
    head_scores = sav_head_scores(support, scorer.labels)
    rankings: dict[tuple[str, int], torch.Tensor] = {}
    predictions = []
    for i, sav in candidates:
        key = (sav.tie_break, fit_seed(sav, tie_seed))
        if key not in rankings:
            rankings[key] = sav_rank(head_scores, tie_order(scorer.n_heads, *key))
        heads = rankings[key][: sav.top_k]  # top_k None: every head
        predictions.append((i, sav_decide(sav_head_votes(query[heads]), scorer.n_classes)))
    return predictions


def _weighted_predictions(
    scorer: SplitScorer, calm: Sequence[tuple[int, CalmSetting]], grw: Sequence[tuple[int, GRW]], tie_seed: int | None
) -> list[tuple[int, torch.Tensor]]:
    """CALM's and GRW's fit and predict on the fold, per tau: the fit clips' posteriors once (every
    reliability scheme read off them), each candidate's head weights (K, C), then the held-out clips'
    posteriors once, scored for every candidate of that tau by one batched product per class.

    GRW's reliability, the clamped true-class margin averaged over all fit clips, is CALM's
    margin_clamped reliability averaged over classes weighted by their clip counts; its weights are a
    softmax over its top_k heads (`GRW.fit`), the same for every class.
    """
    by_tau: dict[float, list[tuple[int, Any]]] = {}
    for i, candidate in [*calm, *grw]:
        by_tau.setdefault(candidate.tau, []).append((i, candidate))
    predictions = []
    for tau, members in by_tau.items():
        schemes = [c.reliability if isinstance(c, CalmSetting) else "margin_clamped" for _, c in members]
        reliabilities = scorer.reliabilities(tau, list(dict.fromkeys(schemes)))
        weights = [
            _calm_weights(scorer, reliabilities, c)
            if isinstance(c, CalmSetting)
            else _grw_weights(scorer, reliabilities["margin_clamped"], c, tie_seed)
            for _, c in members
        ]
        stacked = torch.stack(weights).permute(2, 0, 1).contiguous()  # (C, S, K)
        pred = torch.cat(
            [
                setting_scores(stacked, scorer.posteriors("query", tau, part).permute(2, 0, 1).contiguous())
                .max(dim=0)
                .indices
                for part in scorer.chunks
            ],
            dim=1,
        )  # (S, m); ties: lowest class
        predictions.extend((i, pred[s]) for s, (i, _) in enumerate(members))
    return predictions


def _calm_weights(scorer: SplitScorer, reliabilities: dict[str, torch.Tensor], setting: CalmSetting) -> torch.Tensor:
    """One CALM setting's head weights (K, C) on the fold, as `SplitScorer.setting_scores` makes them."""
    r = shrink(reliabilities[setting.reliability], scorer.counts, setting.shrinkage)
    return weight_sets(
        r,
        head_ranks(r, scorer.tie_order(setting)),
        default_weight_norm(setting.reliability),
        [setting.tau_w],
        [setting.top_k],
        top_k_mode=setting.top_k_mode,
    )[0]


def _grw_weights(scorer: SplitScorer, margin_clamped: torch.Tensor, grw: GRW, tie_seed: int | None) -> torch.Tensor:
    """GRW's head weights on the fold, one column per class (K, C)."""
    r = (margin_clamped @ scorer.counts / scorer.counts.sum())[:, None]
    order = tie_order(scorer.n_heads, grw.tie_break, fit_seed(grw, tie_seed))
    return calm_weights(r, grw.tau_w, grw.top_k, "softmax", tie_order=order).expand(-1, scorer.n_classes)
