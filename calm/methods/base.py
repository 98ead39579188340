"""The base class of the model-free estimators, the API they share (docs/design/formulas.md#estimator-api).

`fit(features (n, K, d), labels (n,), n_classes=None, tie_seed=None) -> self`,
`predict_scores(features) -> (m, C)` and `predict(features) -> (m,)`. The base holds the plumbing
every estimator repeated: validating the support set, normalised class prototypes, SAV's head
ranking, the tie order of head rankings, validating queries against the fitted shape, and argmax
prediction (ties to the lowest class index).

Ties (docs/design/formulas.md#ties; `calm.methods.ties`): an estimator that ranks heads takes
`tie_break` ("index", the default: lower flat head index first; "random": a seeded random order
among equal scores) and `tie_seed` (default 0). The seed is per episode: `fit(..., tie_seed=s)`
uses s for that fit only, so one estimator object can be fitted episode after episode with each
episode's seed and stays a plain description of its settings; `tie_seed=None` uses the
constructor's. Under "index" the seed is ignored. Every estimator's `fit` takes `tie_seed`, those
that rank no heads ignore it, so a caller can pass it to every method. After `fit`: `tie_seed_`
(the seed used, None under "index") and, where heads are selected, `tied_selections_`: how many
selected heads were chosen among ties (their score equals the first unselected head's).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import torch

from calm.config.builder import build
from calm.methods.prototypes import (
    FeaturesLike,
    LabelsLike,
    ReliabilitySet,
    check_fitted,
    class_counts,
    class_sums,
    normalized_prototypes,
    prototype_dots,
    validate_query,
    validate_support,
)
from calm.methods.sav_core import sav_head_scores, sav_rank
from calm.methods.ties import check_tie_break, check_tie_seed, tie_order, tied_selections

# clips whose cosine products (heads x clips x classes floats) a fit holds at once: SAV's head ranking
# (support), GRW's reliabilities (V); per-head counts and per-clip margins do not depend on the chunking
FIT_CHUNK = 256


class Estimator(ABC):
    """Fit on cached support rows, score query rows; subclasses set `fitted_attribute` in `fit`."""

    fitted_attribute = "prototypes_"
    # estimators that measure a reliability on labelled clips take a named reliability set V in `fit`
    # (`reliability_set=`); the others (SAV ranks heads on the support set, as the authors' runner did)
    # are fitted on S alone (`fit_estimator`)
    uses_reliability_set = False
    prototypes_: torch.Tensor | None = None
    tie_break: str = "index"  # estimators that rank heads take both as constructor arguments
    tie_seed: int = 0

    @abstractmethod
    def fit(
        self, features: FeaturesLike, labels: LabelsLike, *, n_classes: int | None = None, tie_seed: int | None = None
    ) -> Estimator:
        """Learn from the support set; returns self. `tie_seed` replaces the `tie_seed` setting for
        this fit (used only with tie_break="random"; ignored by estimators that rank no heads)."""

    @abstractmethod
    def predict_scores(self, features: FeaturesLike) -> torch.Tensor:
        """Class scores (m, C) of the query clips."""

    def predict(self, features: FeaturesLike) -> torch.Tensor:
        """argmax_c of `predict_scores` (m,), ties to the lowest class index."""
        return self.predict_scores(features).argmax(dim=1)

    def _support(
        self, features: FeaturesLike, labels: LabelsLike, n_classes: int | None
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Validated support features, labels and class count; remembers the shape queries must have."""
        features, labels, n_classes = validate_support(features, labels, n_classes)
        self.n_classes_ = n_classes
        self.n_heads_, self.head_dim_ = features.shape[1], features.shape[2]
        return features, labels, n_classes

    def _fit_prototypes(
        self, features: FeaturesLike, labels: LabelsLike, n_classes: int | None
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """`_support`, plus the normalised class prototypes (K, C, d) in `prototypes_`."""
        features, labels, n_classes = self._support(features, labels, n_classes)
        self.prototypes_ = normalized_prototypes(
            class_sums(features, labels, n_classes), class_counts(labels, n_classes)
        )
        return features, labels, n_classes

    def _check_ties(self) -> None:
        check_tie_break(type(self).__name__, self.tie_break, self.tie_seed)

    def _tie_order(self, n_heads: int, tie_seed: int | None) -> torch.Tensor | None:
        """The head permutation that settles ties in this fit (None: lower index first); records the
        seed used in `tie_seed_`."""
        self._check_ties()
        seed = self.tie_seed if tie_seed is None else tie_seed
        if self.tie_break == "index":
            self.tie_seed_ = None
            return None
        check_tie_seed(type(self).__name__, seed)
        self.tie_seed_ = int(seed)
        return tie_order(n_heads, self.tie_break, seed)

    def _rank_heads(
        self,
        features: FeaturesLike,
        labels: LabelsLike,
        n_classes: int | None,
        top_k: int | None,
        tie_seed: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Fit the prototypes and rank heads as SAV (ties by `tie_break`); keeps the first top_k (all
        when None) in `selected_heads_` and counts in `tied_selections_` those chosen among ties.
        Returns the validated support features, labels and class count."""
        features, labels, n_classes = self._fit_prototypes(features, labels, n_classes)
        # per-head counts summed over chunks of clips: never the whole support's (K, n, C) products at once
        self.head_scores_ = sum(
            sav_head_scores(prototype_dots(features[a : a + FIT_CHUNK], self.prototypes_), labels[a : a + FIT_CHUNK])
            for a in range(0, len(labels), FIT_CHUNK)
        )
        self.ranking_ = sav_rank(self.head_scores_, self._tie_order(self.n_heads_, tie_seed))
        k = min(top_k or self.n_heads_, self.n_heads_)
        self.selected_heads_ = self.ranking_[:k]
        self.tied_selections_ = tied_selections(self.head_scores_, self.ranking_, k)
        return features, labels, n_classes

    def _query(self, features: FeaturesLike) -> torch.Tensor:
        """Query features validated against the fitted heads and head size."""
        check_fitted(self, self.fitted_attribute)
        return validate_query(features, self.n_heads_, self.head_dim_)


def build_estimator(cfg: Mapping[str, Any], key: str | None = None) -> Estimator:
    """The estimator an `estimator` config (configs/estimator/<name>.yaml: `_target_` and settings) names,
    built as every configurable part is (`calm.config.builder.build`): the class must be an `Estimator`,
    and an unknown or missing setting is a ConfigError naming the accepted ones. `key` is where the
    config sits in the job's config (`method.estimators.calm`), for messages."""
    return build(cfg, "estimator", base=Estimator, key=key)


def fit_estimator(
    estimator: Any,
    features: FeaturesLike,
    labels: LabelsLike,
    *,
    n_classes: int | None = None,
    tie_seed: int | None = None,
    reliability_set: ReliabilitySet | None = None,
) -> Any:
    """`estimator.fit` on the support set, with the named reliability set V for the estimators that use
    one (`uses_reliability_set`); `tie_seed` (the episode's seed) for every `Estimator`."""
    kwargs: dict[str, Any] = {} if tie_seed is None or not isinstance(estimator, Estimator) else {"tie_seed": tie_seed}
    if reliability_set is not None and getattr(estimator, "uses_reliability_set", False):
        kwargs["reliability_set"] = reliability_set
    return estimator.fit(features, labels, n_classes=n_classes, **kwargs)
