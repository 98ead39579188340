"""The one base class of the model-free estimators: the API every method shares (DESIGN section 6).

`fit(features (n, K, d), labels (n,), n_classes=None) -> self`, `predict_scores(features) -> (m, C)`
and `predict(features) -> (m,)`. The base holds the plumbing every estimator repeated: validating
the support set, normalised class prototypes, SAV's head ranking, validating queries against the
fitted shape, and argmax prediction (ties to the lowest class index).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from calm.methods.prototypes import (
    FeaturesLike,
    LabelsLike,
    check_fitted,
    class_counts,
    class_sums,
    normalized_prototypes,
    prototype_dots,
    validate_query,
    validate_support,
)
from calm.methods.sav_core import sav_head_scores, sav_rank


class Estimator(ABC):
    """Fit on cached support rows, score query rows; subclasses set `fitted_attribute` in `fit`."""

    fitted_attribute = "prototypes_"
    prototypes_: torch.Tensor | None = None

    @abstractmethod
    def fit(self, features: FeaturesLike, labels: LabelsLike, *, n_classes: int | None = None) -> Estimator:
        """Learn from the support set; returns self."""

    @abstractmethod
    def predict_scores(self, features: FeaturesLike) -> torch.Tensor:
        """Class scores (m, C) of the query clips."""

    def predict(self, features: FeaturesLike) -> torch.Tensor:
        """argmax_c of `predict_scores` (m,), ties to the lowest class index."""
        return self.predict_scores(features).argmax(dim=1)

    def _support(self, features: FeaturesLike, labels: LabelsLike,
                 n_classes: int | None) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Validated support features, labels and class count; remembers the shape queries must have."""
        features, labels, n_classes = validate_support(features, labels, n_classes)
        self.n_classes_ = n_classes
        self.n_heads_, self.head_dim_ = features.shape[1], features.shape[2]
        return features, labels, n_classes

    def _fit_prototypes(self, features: FeaturesLike, labels: LabelsLike,
                        n_classes: int | None) -> tuple[torch.Tensor, torch.Tensor, int]:
        """`_support`, plus the normalised class prototypes (K, C, d) in `prototypes_`."""
        features, labels, n_classes = self._support(features, labels, n_classes)
        self.prototypes_ = normalized_prototypes(class_sums(features, labels, n_classes),
                                                 class_counts(labels, n_classes))
        return features, labels, n_classes

    def _rank_heads(self, features: FeaturesLike, labels: LabelsLike, n_classes: int | None,
                    top_k: int | None) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Fit the prototypes and rank heads as SAV; keeps the first top_k (all when None) in
        `selected_heads_`. Returns the validated support features, labels and class count."""
        features, labels, n_classes = self._fit_prototypes(features, labels, n_classes)
        self.head_scores_ = sav_head_scores(prototype_dots(features, self.prototypes_), labels)
        self.ranking_ = sav_rank(self.head_scores_)
        self.selected_heads_ = self.ranking_[: min(top_k or self.n_heads_, self.n_heads_)]
        return features, labels, n_classes

    def _query(self, features: FeaturesLike) -> torch.Tensor:
        """Query features validated against the fitted heads and head size."""
        check_fitted(self, self.fitted_attribute)
        return validate_query(features, self.n_heads_, self.head_dim_)
