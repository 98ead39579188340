"""SAV (Sparse Attention Vectors, Mitra et al. 2024) exactly as DESIGN section 6.

Heads are scored by how many support clips their nearest prototype gets right, the top_k heads are
kept, and each query is the majority vote of their nearest-prototype guesses. The functional cores
(`sav_head_scores`, `sav_rank`, `sav_head_votes`, `sav_votes`, `sav_decide`) work on precomputed
cosines so a sweep over top_k reuses them; the `SAV` estimator is a thin wrapper.
"""

from __future__ import annotations

from numbers import Integral

import torch

from calm.errors import ConfigError
from calm.methods.prototypes import (
    FeaturesLike,
    LabelsLike,
    Similarities,
    check_fitted,
    class_counts,
    class_sums,
    normalized_prototypes,
    prototype_dots,
    validate_query,
    validate_support,
)


def sav_head_scores(support_sims: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per head (K,), the number of support clips whose argmax cosine is their label (ties: lowest class).

    `support_sims` (K, n, C) may be any positive per-clip multiple of the cosines (e.g. the raw dot
    products with the normalised prototypes): the argmax is the same.
    """
    return (sav_head_votes(support_sims) == labels).sum(dim=1)


def sav_rank(head_scores: torch.Tensor) -> torch.Tensor:
    """Head indices by score, descending; a stable sort sends ties to the lower flat head index."""
    return torch.sort(head_scores, descending=True, stable=True).indices


def sav_head_votes(sims: torch.Tensor) -> torch.Tensor:
    """Each head's nearest-prototype class (T, m) from its cosines (T, m, C); ties go to the lowest class.

    max(...).indices, like argmax, returns the first maximum, and is much faster on classes-major views.
    """
    return sims.max(dim=-1).indices


def sav_votes(head_votes: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Vote counts (m, C) as float32 from the votes (T, m) of the selected heads."""
    return torch.nn.functional.one_hot(head_votes, n_classes).sum(dim=0).to(torch.float32)


def sav_decide(head_votes: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Majority class per query (m,); rows of `head_votes` must be in rank order.

    A tie between classes goes to the one voted by the highest-ranked head among them: the key
    votes·(T+1) + (T - first rank voting for the class) orders classes by votes, then by that rank.
    """
    n_heads = head_votes.shape[0]
    voted = torch.nn.functional.one_hot(head_votes, n_classes).bool()  # (T, m, C)
    votes = voted.sum(dim=0)
    ranks = torch.arange(n_heads, device=head_votes.device)[:, None, None]
    first = torch.where(voted, ranks, n_heads).amin(dim=0)
    return (votes * (n_heads + 1) + (n_heads - first)).argmax(dim=1)


def check_top_k(top_k: int) -> None:
    """SAV needs at least one voting head."""
    if isinstance(top_k, bool) or not isinstance(top_k, Integral) or top_k < 1:
        raise ConfigError(f"SAV top_k must be a positive integer, got {top_k!r}", "set top_k to e.g. 20")


def sav_predict_from(sims: Similarities, top_k: int) -> torch.Tensor:
    """SAV predictions (m,) from an episode's precomputed cosines, for sweeps over top_k."""
    check_top_k(top_k)
    if sims.split != "support":
        raise ConfigError(f"SAV scores heads on the support set, but these similarities use split {sims.split!r}",
                          "compute the similarities with split='support'")
    order = sav_rank(sav_head_scores(sims.reliability, sims.reliability_labels))[:top_k]
    return sav_decide(sav_head_votes(sims.query[order]), sims.n_classes)


class SAV:
    """Top-k heads by support accuracy, uniform majority vote of their nearest-prototype guesses.

    After `fit`: `head_scores_` (K,) support clips each head gets right, `ranking_` (K,) heads best
    first, `selected_heads_` (min(top_k, K),) in rank order, `prototypes_` (K, C, d) normalised.
    """

    def __init__(self, top_k: int = 20) -> None:
        check_top_k(top_k)
        self.top_k = top_k
        self.prototypes_: torch.Tensor | None = None

    def fit(self, features: FeaturesLike, labels: LabelsLike, *, n_classes: int | None = None) -> SAV:
        """Score every head on the support set and keep the top_k (clamped to the number of heads)."""
        check_top_k(self.top_k)
        features, labels, n_classes = validate_support(features, labels, n_classes)
        prototypes = normalized_prototypes(class_sums(features, labels, n_classes), class_counts(labels, n_classes))
        self.head_scores_ = sav_head_scores(prototype_dots(features, prototypes), labels)
        self.ranking_ = sav_rank(self.head_scores_)
        self.selected_heads_ = self.ranking_[: min(self.top_k, features.shape[1])]
        self.prototypes_ = prototypes
        self.n_classes_ = n_classes
        self.n_heads_, self.head_dim_ = features.shape[1], features.shape[2]
        return self

    def _head_votes(self, features: FeaturesLike) -> torch.Tensor:
        check_fitted(self, "prototypes_")
        features = validate_query(features, self.n_heads_, self.head_dim_)
        heads = self.selected_heads_.to(features.device)
        return sav_head_votes(prototype_dots(features[:, heads], self.prototypes_[heads]))

    def predict_scores(self, features: FeaturesLike) -> torch.Tensor:
        """Vote counts (m, C) of the selected heads."""
        return sav_votes(self._head_votes(features), self.n_classes_)

    def predict(self, features: FeaturesLike) -> torch.Tensor:
        """Majority vote (m,), ties to the class voted by the highest-ranked head among the tied ones."""
        return sav_decide(self._head_votes(features), self.n_classes_)
