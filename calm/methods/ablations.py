"""The ablations beyond the paper (docs/design/formulas.md#ablations-and-baselines): GRW and the soft votes.
(The hard-vote ablation, every head voting, is SAV with `top_k: null`: configs/estimator/hard_vote.yaml.)

- `GRW`: one class-agnostic reliability per head (the clamped true-class margin averaged over all
  clips of the reliability set V: the support set, or a named V as CALM takes one), softmax weights over the top_k
  heads, score_c = Σ_j w_j p_j(c|x).
- `Concat`: one cosine over all heads concatenated (`normalization="authors"`: each query head
  normalised before concatenating, against the raw concatenated prototype, as the authors ran it).
- `UniformSoft`: mean of the per-head posteriors over all heads.
- `ConfidenceWeighted`: each head weighted by its own confidence max_c p_j(c|x) on this query.
- `TopKSoft`: uniform mean of the posteriors of the top_k heads ranked as in SAV.

Every estimator has the API of `CALM` and `SAV` (fit / predict / predict_scores) and reuses their
arithmetic: prototypes and cosines from `calm.methods.prototypes`, posteriors, margins, head
selection and weights from `calm.methods.calm`, head ranking and votes from `calm.methods.sav`.
Those that rank heads (GRW, TopKSoft) take `tie_break` / `tie_seed` as SAV does (see
`calm.methods.base`); every `fit` takes `tie_seed`, ignored where no heads are ranked.
"""

from __future__ import annotations

import torch

from calm.errors import ConfigError
from calm.methods.base import FIT_CHUNK, Estimator
from calm.methods.calm_core import (
    calm_posteriors,
    calm_scores,
    calm_weights,
    clip_reliability,
    top_k_mask,
)
from calm.methods.checks import check_positive, check_top_k
from calm.methods.prototypes import (
    FeaturesLike,
    LabelsLike,
    ReliabilitySet,
    check_fitted,
    cosine_similarities,
    l2_normalize,
    validate_reliability_set,
    validate_support,
)
from calm.methods.ties import descending_order, tied_selections

CONCAT_NORMALIZATIONS = ("cosine", "authors")


class _PosteriorEstimator(Estimator):
    """An estimator that votes with per-head posteriors p_j(c|x) at temperature `tau`."""

    tau: float

    def _posteriors(self, features: torch.Tensor, heads: torch.Tensor | None = None) -> torch.Tensor:
        """Per-head posteriors (K', m, C) of the query for the given heads (all when None)."""
        prototypes = self.prototypes_
        if heads is not None:
            features, prototypes = features[:, heads.to(features.device)], prototypes[heads]
        return calm_posteriors(cosine_similarities(features, prototypes), self.tau)


class GRW(_PosteriorEstimator):
    """Global reliability weighting: one class-agnostic reliability and weight per head.

    After `fit`: `reliability_` (K,) the clamped true-class margin averaged over all support clips,
    `kept_heads_` (K,) bool, `weights_` (K,) softmax of r / tau_w over the kept heads (0 elsewhere),
    `tied_selections_` kept heads chosen among ties, `tie_seed_`, `prototypes_` (K, C, d)
    normalised, `n_classes_`.
    """

    def __init__(
        self,
        tau: float = 0.07,
        tau_w: float = 0.5,
        top_k: int | None = None,
        tie_break: str = "index",
        tie_seed: int = 0,
    ) -> None:
        self.tau = tau
        self.tau_w = tau_w
        self.top_k = top_k
        self.tie_break = tie_break
        self.tie_seed = tie_seed
        self._check()
        self.weights_: torch.Tensor | None = None

    def _check(self) -> None:
        check_positive("tau", self.tau)
        check_positive("tau_w", self.tau_w)
        check_top_k("GRW", self.top_k)
        self._check_ties()

    uses_reliability_set = True

    def fit(
        self,
        features: FeaturesLike,
        labels: LabelsLike,
        *,
        n_classes: int | None = None,
        tie_seed: int | None = None,
        reliability_set: ReliabilitySet | None = None,
    ) -> GRW:
        """Reliabilities on the reliability set (a named V, else the support set), the top_k heads by
        them, and their softmax weights."""
        self._check()
        features, labels, n_classes = self._fit_prototypes(features, labels, n_classes)
        if reliability_set is not None:
            named = validate_reliability_set(reliability_set, n_classes, self.n_heads_, self.head_dim_)
            features, labels = named.features, named.labels
        # per-clip margins over chunks of clips: never the whole set's (K, n, C) posteriors at once
        margins = torch.cat(
            [
                clip_reliability(
                    calm_posteriors(cosine_similarities(features[a : a + FIT_CHUNK], self.prototypes_), self.tau),
                    labels[a : a + FIT_CHUNK],
                    "margin_clamped",
                    scratch=True,
                )
                for a in range(0, len(labels), FIT_CHUNK)
            ],
            dim=1,
        )
        self.reliability_ = margins.mean(dim=1)
        column = self.reliability_[:, None]
        ties = self._tie_order(self.n_heads_, tie_seed)
        self.kept_heads_ = top_k_mask(column, self.top_k, ties)[:, 0]
        self.weights_ = calm_weights(column, self.tau_w, self.top_k, "softmax", tie_order=ties)[:, 0]
        self.tied_selections_ = tied_selections(column, descending_order(column, ties), self.top_k)
        return self

    def predict_scores(self, features: FeaturesLike) -> torch.Tensor:
        """score_c(x) = Σ_j w_j p_j(c|x), (m, C); heads with zero weight are skipped."""
        features = self._query(features)
        check_fitted(self, "weights_")
        heads = (self.weights_ > 0).nonzero().flatten()
        weights = self.weights_[heads, None].expand(-1, self.n_classes_)
        return calm_scores(self._posteriors(features, heads), weights)


class Concat(Estimator):
    """Nearest prototype by one cosine over all heads concatenated, (n, K·d).

    μ_c = mean over the support clips of class c of the concatenation [a_1(x); …; a_K(x)].
    `normalization`:
    - "cosine" (default): score_c(x) = cos([a_1(x); …; a_K(x)], μ_c), the raw concatenations.
    - "authors": score_c(x) = cos([q̂_1(x); …; q̂_K(x)], μ_c), q̂_j = a_j/‖a_j‖: the authors cached
      each query head L2-normalised and compared the concatenation with the raw (unnormalised)
      concatenated class means, so every head counts equally in the query but heads with large
      activations still dominate the prototype. The prototypes are the same in both modes.

    After `fit`: `prototypes_` (1, C, K·d) normalised class means of the concatenated features.
    """

    def __init__(self, normalization: str = "cosine") -> None:
        self.normalization = normalization
        self._check()

    def _check(self) -> None:
        if self.normalization not in CONCAT_NORMALIZATIONS:
            raise ConfigError(
                f"Concat normalization must be one of {', '.join(CONCAT_NORMALIZATIONS)}, got {self.normalization!r}",
                "use normalization=cosine (raw concatenations) or normalization=authors "
                "(per-head normalised queries against raw prototypes)",
            )

    def fit(
        self, features: FeaturesLike, labels: LabelsLike, *, n_classes: int | None = None, tie_seed: int | None = None
    ) -> Concat:
        self._check()
        features, labels, n_classes = validate_support(features, labels, n_classes)
        n_heads, head_dim = features.shape[1], features.shape[2]
        self._fit_prototypes(features.reshape(features.shape[0], 1, n_heads * head_dim), labels, n_classes)
        self.n_heads_, self.head_dim_ = n_heads, head_dim
        return self

    def predict_scores(self, features: FeaturesLike) -> torch.Tensor:
        """Cosines (m, C) of the concatenated query features (per head normalised first under
        normalization="authors") with the concatenated prototypes."""
        features = self._query(features)
        if self.normalization == "authors":
            features = l2_normalize(features)
        flat = features.reshape(features.shape[0], 1, self.n_heads_ * self.head_dim_)
        return cosine_similarities(flat, self.prototypes_)[0].contiguous()


class UniformSoft(_PosteriorEstimator):
    """Mean of the per-head posteriors over all heads. After `fit`: `prototypes_` (K, C, d)."""

    def __init__(self, tau: float = 0.07) -> None:
        self.tau = tau
        check_positive("tau", tau)

    def fit(
        self, features: FeaturesLike, labels: LabelsLike, *, n_classes: int | None = None, tie_seed: int | None = None
    ) -> UniformSoft:
        check_positive("tau", self.tau)
        self._fit_prototypes(features, labels, n_classes)
        return self

    def predict_scores(self, features: FeaturesLike) -> torch.Tensor:
        """(1/K) Σ_j p_j(c|x), (m, C)."""
        return self._posteriors(self._query(features)).mean(dim=0)


class ConfidenceWeighted(_PosteriorEstimator):
    """Each head weighted, per query, by its confidence max_c p_j(c|x), normalised over heads.

    After `fit`: `prototypes_` (K, C, d). `query_weights` gives the (K, m) weights of a query batch.
    """

    def __init__(self, tau: float = 0.07) -> None:
        self.tau = tau
        check_positive("tau", tau)

    def fit(
        self, features: FeaturesLike, labels: LabelsLike, *, n_classes: int | None = None, tie_seed: int | None = None
    ) -> ConfidenceWeighted:
        check_positive("tau", self.tau)
        self._fit_prototypes(features, labels, n_classes)
        return self

    @staticmethod
    def _weights(posteriors: torch.Tensor) -> torch.Tensor:
        confidence = posteriors.amax(dim=-1)  # ≥ 1/C > 0, so the sum never vanishes
        return confidence / confidence.sum(dim=0, keepdim=True)

    def query_weights(self, features: FeaturesLike) -> torch.Tensor:
        """w_j(x) (K, m): each head's confidence on each query, summing to 1 over heads."""
        return self._weights(self._posteriors(self._query(features)))

    def predict_scores(self, features: FeaturesLike) -> torch.Tensor:
        """Σ_j w_j(x) p_j(c|x), (m, C)."""
        posteriors = self._posteriors(self._query(features))
        return (posteriors * self._weights(posteriors)[..., None]).sum(dim=0)


class TopKSoft(_PosteriorEstimator):
    """Uniform mean of the posteriors of SAV's top_k heads.

    After `fit`: `head_scores_` (K,), `ranking_` (K,), `selected_heads_` (min(top_k, K),) in rank
    order, `tied_selections_`, `tie_seed_`, `prototypes_` (K, C, d).
    """

    def __init__(self, tau: float = 0.07, top_k: int | None = 20, tie_break: str = "index", tie_seed: int = 0) -> None:
        self.tau = tau
        self.top_k = top_k
        self.tie_break = tie_break
        self.tie_seed = tie_seed
        self._check()

    def _check(self) -> None:
        check_positive("tau", self.tau)
        check_top_k("TopKSoft", self.top_k)
        self._check_ties()

    def fit(
        self, features: FeaturesLike, labels: LabelsLike, *, n_classes: int | None = None, tie_seed: int | None = None
    ) -> TopKSoft:
        self._check()
        self._rank_heads(features, labels, n_classes, self.top_k, tie_seed)
        return self

    def predict_scores(self, features: FeaturesLike) -> torch.Tensor:
        """(1/k) Σ_{j in top_k} p_j(c|x), (m, C)."""
        return self._posteriors(self._query(features), self.selected_heads_).mean(dim=0)
