"""The SAV estimator (Sparse Attention Vectors, Mitra et al. 2024): top_k heads by support accuracy,
uniform majority vote. The formulas are in `calm.methods.sav_core`."""

from __future__ import annotations

import torch

from calm.methods.base import Estimator
from calm.methods.checks import check_top_k
from calm.methods.prototypes import FeaturesLike, LabelsLike, prototype_dots
from calm.methods.sav_core import sav_decide, sav_head_votes, sav_votes


class SAV(Estimator):
    """Top-k heads by support accuracy, uniform majority vote of their nearest-prototype guesses.

    `tie_break` / `tie_seed` settle heads of equal score (see `calm.methods.base`): at 1 shot every
    head scores C, so the top_k is the tie rule's choice alone.

    After `fit`: `head_scores_` (K,) support clips each head gets right, `ranking_` (K,) heads best
    first, `selected_heads_` (min(top_k, K),) in rank order, `tied_selections_` how many of them were
    chosen among ties, `tie_seed_`, `prototypes_` (K, C, d) normalised.
    """

    def __init__(self, top_k: int | None = 20, tie_break: str = "index", tie_seed: int = 0) -> None:
        check_top_k("SAV", top_k)
        self.top_k = top_k
        self.tie_break = tie_break
        self.tie_seed = tie_seed
        self._check_ties()

    def fit(
        self, features: FeaturesLike, labels: LabelsLike, *, n_classes: int | None = None, tie_seed: int | None = None
    ) -> SAV:
        """Score every head on the support set and keep the top_k (clamped to the number of heads);
        `tie_seed` replaces the setting for this fit (tie_break="random" only)."""
        check_top_k("SAV", self.top_k)
        self._rank_heads(features, labels, n_classes, self.top_k, tie_seed)
        return self

    def _head_votes(self, features: FeaturesLike) -> torch.Tensor:
        features = self._query(features)
        heads = self.selected_heads_.to(features.device)
        return sav_head_votes(prototype_dots(features[:, heads], self.prototypes_[heads]))

    def predict_scores(self, features: FeaturesLike) -> torch.Tensor:
        """Vote counts (m, C) of the selected heads."""
        return sav_votes(self._head_votes(features), self.n_classes_)

    def predict(self, features: FeaturesLike) -> torch.Tensor:
        """Majority vote (m,), ties to the class voted by the highest-ranked head among the tied ones."""
        return sav_decide(self._head_votes(features), self.n_classes_)
