"""CALM (Class-Conditional Sparse Attention Vectors, Mehta et al. 2026) exactly as DESIGN section 6.

Every head gives a soft posterior over classes; each head gets a reliability per class measured
on a reliability set V; the class score is the reliability-weighted sum of the heads' posteriors.
The steps are functional cores on precomputed cosines (`calm_posteriors`, `calm_reliability`,
`shrink`, `calm_weights`, `calm_scores`) so a sweep computes the matrix products once
(`calm.methods.prototypes.episode_similarities`) and scores each setting cheaply
(`calm_scores_from`); the `CALM` estimator is a thin wrapper over the same functions.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch

from calm.errors import ConfigError
from calm.methods.prototypes import (
    FeaturesLike,
    LabelsLike,
    Similarities,
    check_fitted,
    check_split,
    class_counts,
    reliability_similarities,
    scaled_cosines,
    validate_query,
    validate_support,
)

RELIABILITY_SCHEMES = ("margin_clamped", "margin", "prob", "brier")
WEIGHT_NORMS = ("power", "softmax")
EPSILON = torch.finfo(torch.float32).tiny
WEIGHT_SUM_FLOOR = 1e-12
LOGIT_RANGE = 80.0  # exp(-80) is still a normal float32 number


def default_weight_norm(reliability: str) -> str:
    """The paper's pairing: power weights for margin_clamped, softmax weights for the other schemes."""
    return "power" if reliability == "margin_clamped" else "softmax"


def calm_posteriors(sims: torch.Tensor, tau: float) -> torch.Tensor:
    """Per-head posteriors p_j(c|x) = softmax_c(s_{j,c}(x) / tau), shape and layout as `sims` (K, m, C)."""
    return softmax_classes_(sims * (1.0 / tau), shifted=False)


def logit_shift(tau: float) -> float | None:
    """1/tau when logits s/tau - 1/tau can be exponentiated without subtracting a maximum.

    Cosines lie in [-1, 1], so the shifted logits lie in [-2/tau, 0]: exp cannot overflow, and while
    2/tau < 80 cannot underflow to zero for every class. Saves a max pass and a subtraction pass.
    """
    return 1.0 / tau if 2.0 / tau < LOGIT_RANGE else None


def softmax_classes_(logits: torch.Tensor, shifted: bool) -> torch.Tensor:
    """Softmax over the last axis, in place, so it keeps the storage layout of `logits`.

    torch.softmax would allocate a second (K, m, C) tensor and copy a classes-major view first.
    `shifted`: the logits are already known to be safe to exponentiate (`logit_shift`).
    """
    if not shifted:
        logits.sub_(logits.amax(dim=-1, keepdim=True))
    logits.exp_()
    return logits.div_(logits.sum(dim=-1, keepdim=True))


def calm_reliability(posteriors: torch.Tensor, labels: torch.Tensor, n_classes: int, scheme: str) -> torch.Tensor:
    """Reliability r (K, C): the per-clip score of `scheme` averaged over the clips of each class.

    posteriors: (K, n, C) of the reliability clips; labels: (n,). Classes without a clip in V get 0.
    """
    return class_means(clip_reliability(posteriors, labels, n_classes, scheme, scratch=False), labels, n_classes)


def clip_reliability(posteriors: torch.Tensor, labels: torch.Tensor, n_classes: int, scheme: str,
                      scratch: bool) -> torch.Tensor:
    """Per clip and head (K, n): the reliability score of the clip's own class.

    With `scratch` the caller gives up `posteriors`, and the margins overwrite its own-class entries
    instead of copying the whole (K, n, C) tensor to mask them.
    """
    check_reliability(scheme)
    clips = torch.arange(labels.shape[0], device=labels.device)
    own = posteriors[:, clips, labels]
    if scheme == "prob":
        return own
    if scheme == "brier":
        return 2 * own - torch.linalg.vector_norm(posteriors, dim=-1).square()
    if scratch:
        posteriors[:, clips, labels] = -math.inf
        others = posteriors
    else:
        others = posteriors.masked_fill(torch.nn.functional.one_hot(labels, n_classes).bool(), -math.inf)
    margin = own - others.amax(dim=-1)
    return margin.clamp_min(0.0) if scheme == "margin_clamped" else margin


def class_means(per_clip: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Mean over the clips of each class, (K, n) -> (K, C), as one small matrix product."""
    one_hot = torch.nn.functional.one_hot(labels, n_classes).to(per_clip.dtype)
    return (per_clip @ one_hot) / class_counts(labels, n_classes).clamp_min(1.0)


def shrink(r: torch.Tensor, counts: torch.Tensor, alpha: float) -> torch.Tensor:
    """Shrink r (K, C) toward its grand mean: r ← n_c/(n_c+α)·r + α/(n_c+α)·r̄, steadier at few shots."""
    if alpha == 0:
        return r
    keep = counts / (counts + alpha)
    return keep * r + (1 - keep) * r.mean()


def top_k_mask(r: torch.Tensor, top_k: int | None) -> torch.Tensor:
    """Kept heads (K, C) bool: per class the top_k heads by r, ties to the lower index; all when not 0<top_k<K."""
    n_heads = r.shape[0]
    if top_k is None or not 0 < top_k < n_heads:
        return torch.ones_like(r, dtype=torch.bool)
    best = torch.sort(r, dim=0, descending=True, stable=True).indices[:top_k]
    return torch.zeros_like(r, dtype=torch.bool).scatter_(0, best, True)


def calm_weights(r: torch.Tensor, tau_w: float, top_k: int | None = None, weight_norm: str | None = None,
                 scheme: str = "margin_clamped") -> torch.Tensor:
    """Head weights (K, C), summing to 1 over heads within each class; excluded heads get 0.

    `power`: w ∝ (max(r, 0) + ε)^(1/tau_w), uniform over the kept heads when a class's weights sum
    to ≤ 1e-12. `softmax`: softmax over the kept heads of r / tau_w. None: the paper's pairing for
    `scheme`.
    """
    weight_norm = weight_norm or default_weight_norm(scheme)
    check_weight_norm(weight_norm)
    check_positive("tau_w", tau_w)
    kept = top_k_mask(r, top_k)
    if weight_norm == "softmax":
        z = (r / tau_w).masked_fill(~kept, -math.inf)
        # written out: torch.softmax over dim 0 goes multi-threaded even for a (K, C) matrix and
        # then stalls for milliseconds whenever other processes hold the cores
        e = (z - z.amax(dim=0)).exp()
        return e / e.sum(dim=0)
    raw = r.clamp_min(0.0) + EPSILON
    if tau_w != 1:
        raw = raw.pow(1.0 / tau_w)
    raw = raw * kept
    total = raw.sum(dim=0)
    uniform = kept / kept.sum(dim=0)
    return torch.where(total > WEIGHT_SUM_FLOOR, raw / total.clamp_min(EPSILON), uniform)


def calm_scores(query_posteriors: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Class scores (m, C): score_c(x) = Σ_j w_{j,c} p_j(c|x).

    Classes-major posteriors (as `scaled_cosines` makes them) are read once by a matrix-vector
    product per class; other layouts use a product and a sum over heads (BLAS would copy them).
    """
    if query_posteriors.stride(1) == 1:
        return torch.einsum("kmc,kc->mc", query_posteriors, weights)
    return (query_posteriors * weights[:, None, :]).sum(dim=0)


def calm_scores_from(sims: Similarities, *, tau: float = 0.07, tau_w: float = 0.5,
                     reliability: str = "margin_clamped", top_k: int | None = None, shrinkage: float = 0.0,
                     weight_norm: str | None = None) -> torch.Tensor:
    """CALM scores (m, C) for one setting from an episode's precomputed cosines (sweeps).

    For many settings at one tau, compute the posteriors once with `calm_posteriors` and call
    `calm_reliability`, `shrink`, `calm_weights` and `calm_scores` directly.
    """
    check_calm_settings(tau, tau_w, reliability, top_k, shrinkage, weight_norm)
    labels, n_classes = sims.reliability_labels, sims.n_classes
    r = calm_reliability(calm_posteriors(sims.reliability, tau), labels, n_classes, reliability)
    r = shrink(r, class_counts(labels, n_classes), shrinkage)
    weights = calm_weights(r, tau_w, top_k, weight_norm, reliability)
    return calm_scores(calm_posteriors(sims.query, tau), weights)


def check_positive(name: str, value: float) -> None:
    if not isinstance(value, Real) or isinstance(value, bool) or not value > 0:
        raise ConfigError(f"{name} must be a positive number, got {value!r}", f"set {name} > 0 (e.g. tau=0.07, tau_w=0.5)")


def check_reliability(scheme: str) -> None:
    if scheme not in RELIABILITY_SCHEMES:
        raise ConfigError(f"unknown reliability {scheme!r}", f"use one of {', '.join(RELIABILITY_SCHEMES)}")


def check_weight_norm(weight_norm: str | None) -> None:
    if weight_norm is not None and weight_norm not in WEIGHT_NORMS:
        raise ConfigError(f"unknown weight_norm {weight_norm!r}", f"use one of {', '.join(WEIGHT_NORMS)}, or null")


def check_calm_settings(tau: float, tau_w: float, reliability: str, top_k: int | None, shrinkage: float,
                        weight_norm: str | None) -> None:
    """Reject settings DESIGN section 6 does not define, before any computation."""
    check_positive("tau", tau)
    check_positive("tau_w", tau_w)
    check_reliability(reliability)
    check_weight_norm(weight_norm)
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, Integral) or top_k < 0):
        raise ConfigError(f"top_k must be null or a non-negative integer, got {top_k!r}",
                          "set top_k to null (all heads) or a number of heads per class")
    if not isinstance(shrinkage, Real) or isinstance(shrinkage, bool) or shrinkage < 0:
        raise ConfigError(f"shrinkage must be a number >= 0, got {shrinkage!r}", "set shrinkage to 0 (off) or e.g. 1.0")


class CALM:
    """Class-conditional reliability-weighted vote of per-head posteriors (DESIGN section 6, steps 1-6).

    After `fit`: `reliability_` (K, C) after shrinkage, `weights_` (K, C) summing to 1 over heads per
    class, `prototypes_` (K, C, d) normalised prototypes of the whole support set, `n_classes_`.
    """

    def __init__(self, tau: float = 0.07, tau_w: float = 0.5, reliability: str = "margin_clamped",
                 top_k: int | None = None, shrinkage: float = 0.0, weight_norm: str | None = None,
                 reliability_split: str = "support", holdout_fraction: float = 0.5, seed: int = 0) -> None:
        self.tau = tau
        self.tau_w = tau_w
        self.reliability = reliability
        self.top_k = top_k
        self.shrinkage = shrinkage
        self.weight_norm = weight_norm
        self.reliability_split = reliability_split
        self.holdout_fraction = holdout_fraction
        self.seed = seed
        self._check()
        self.weights_: torch.Tensor | None = None

    def _check(self) -> None:
        check_calm_settings(self.tau, self.tau_w, self.reliability, self.top_k, self.shrinkage, self.weight_norm)
        check_split(self.reliability_split, self.holdout_fraction)

    def fit(self, features: FeaturesLike, labels: LabelsLike, *, n_classes: int | None = None) -> CALM:
        """Prototypes from the support set, reliabilities on the reliability set, and the head weights."""
        self._check()
        features, labels, n_classes = validate_support(features, labels, n_classes)
        shift = logit_shift(self.tau)
        logits, rel_labels, prototypes = reliability_similarities(
            features, labels, n_classes, self.reliability_split, self.holdout_fraction, self.seed,
            scale=1.0 / self.tau, shift=shift or 0.0)
        posteriors = softmax_classes_(logits, shifted=shift is not None)
        per_clip = clip_reliability(posteriors, rel_labels, n_classes, self.reliability, scratch=True)
        r = class_means(per_clip, rel_labels, n_classes)
        self.reliability_ = shrink(r, class_counts(rel_labels, n_classes), self.shrinkage)
        self.weights_ = calm_weights(self.reliability_, self.tau_w, self.top_k, self.weight_norm, self.reliability)
        self.prototypes_ = prototypes
        self.n_classes_ = n_classes
        self.n_heads_, self.head_dim_ = features.shape[1], features.shape[2]
        return self

    def predict_scores(self, features: FeaturesLike) -> torch.Tensor:
        """score_c(x) (m, C); heads with zero weight for every class are skipped, which changes nothing."""
        check_fitted(self, "weights_")
        features = validate_query(features, self.n_heads_, self.head_dim_)
        used = (self.weights_ > 0).any(dim=1)
        weights, prototypes = self.weights_, self.prototypes_
        if not bool(used.all()):
            heads = used.nonzero().flatten()
            features, weights, prototypes = features[:, heads.to(features.device)], weights[heads], prototypes[heads]
        shift = logit_shift(self.tau)
        logits = scaled_cosines(features, prototypes, 1.0 / self.tau, shift or 0.0)
        return calm_scores(softmax_classes_(logits, shifted=shift is not None), weights)

    def predict(self, features: FeaturesLike) -> torch.Tensor:
        """argmax_c score_c(x) (m,), ties to the lowest class index."""
        return self.predict_scores(features).argmax(dim=1)
