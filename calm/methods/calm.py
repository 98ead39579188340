"""CALM, Class-Conditional Sparse Attention Vectors (Mehta et al. 2026; docs/design/formulas.md#calm).

Every head gives a soft posterior over classes; each head gets a reliability per class measured
on a reliability set V; the class score is the reliability-weighted sum of the heads' posteriors.
The formulas live in `calm.methods.calm_core`, shared with the paper grid and the ablations; this
module wires them into the scikit-learn style estimator, and `calm_scores_from` scores one setting
from an episode's precomputed cosines.
"""

from __future__ import annotations

from typing import Any

import torch

from calm.errors import ConfigError
from calm.methods.base import Estimator
from calm.methods.calm_core import (
    calm_posteriors,
    calm_reliability,
    calm_scores,
    calm_weights,
    check_calm_settings,
    check_head_choice,
    class_means,
    clip_reliability,
    default_weight_norm,
    fit_head_seed,
    head_choice_scores,
    logit_shift,
    shrink,
    softmax_classes_,
    weight_sets,
)
from calm.methods.precision import (
    arithmetic_dtype,
    check_arithmetic_dtype,
    low_precision_posteriors,
    low_precision_prototypes,
)
from calm.methods.prototypes import (
    FeaturesLike,
    LabelsLike,
    ReliabilitySet,
    Similarities,
    check_named_split,
    check_split,
    class_counts,
    reliability_similarities,
    scaled_cosines,
    validate_reliability_set,
)
from calm.methods.ties import descending_order, ranks_from_order, tied_selections

# the CALM settings a score from precomputed cosines depends on (the reliability split is the cosines')
SCORE_SETTINGS = ("tau", "tau_w", "reliability", "top_k", "shrinkage", "weight_norm", "top_k_mode")


def calm_scores_from(sims: Similarities, *, tie_order: torch.Tensor | None = None, **settings: Any) -> torch.Tensor:
    """CALM scores (m, C) for one setting from an episode's precomputed cosines (sweeps).

    `settings`: any of the CALM estimator's SCORE_SETTINGS, with its defaults and checks. For many settings
    at one tau, compute the posteriors once with `calm_posteriors` and call `calm_reliability`, `shrink`,
    `calm_weights` and `calm_scores` directly. `tie_order` (from `calm.methods.ties.tie_order`) as in
    `head_ranks`.
    """
    other = sorted(set(settings) - set(SCORE_SETTINGS))
    if other:
        raise ConfigError(
            f"calm_scores_from takes no setting(s) {other}",
            f"use only {list(SCORE_SETTINGS)} (the cosines fix the rest)",
        )
    s = CALM(**settings)
    labels, n_classes = sims.reliability_labels, sims.n_classes
    r = calm_reliability(calm_posteriors(sims.reliability, s.tau), labels, n_classes, s.reliability)
    r = shrink(r, class_counts(labels, n_classes), s.shrinkage)
    weights = calm_weights(
        r, s.tau_w, s.top_k, s.weight_norm, s.reliability, top_k_mode=s.top_k_mode, tie_order=tie_order
    )
    return calm_scores(calm_posteriors(sims.query, s.tau), weights)


class CALM(Estimator):
    """Class-conditional reliability-weighted vote of head posteriors (docs/design/formulas.md#calm).

    The reliability set V is S unless `fit` is given a named one (`reliability_set`: the authors' val
    file); the prototypes are always those of S.

    Opt-in settings reproduce the authors' runs (defaults: the clean rules of docs/design/formulas.md#calm):
    - `top_k_mode`: "exclude" (excluded heads get weight 0) or "epsilon_leak" (the authors' masking:
      with power weights at tau_w ≠ 1 every excluded head keeps w ∝ ε^(1/tau_w), ε the smallest
      normal float32; see `calm_core.weight_sets`).
    - `tie_break` / `tie_seed`: the order among heads of equal reliability in each class's top_k
      ("index": lower head index first; "random": seeded, see `calm.methods.base`).
    - `head_choice` / `head_seed`: "reliable" (CALM), or the random-heads control: "random" (the
      authors': seeded random scores replace r) or "random_heads" (random top_k heads, CALM's weights);
      see `calm_core.head_choice_scores`. Each fit's draw is seeded by (head_seed, the fit's seed).
    - `arithmetic_dtype`: "float32" (default), or the backbone's "bfloat16" / "float16": prototypes,
      cosines and posteriors in that dtype, cast to float32 after the softmax (`calm.methods.precision`).

    After `fit`: `reliability_` (K, C) after shrinkage, `weights_` (K, C) summing to 1 over heads per
    class, `prototypes_` (K, C, d) normalised prototypes of the whole support set, `n_classes_`,
    `tied_selections_` (kept heads chosen among ties, summed over classes; 0 unless 0 < top_k < K),
    `tie_seed_`, `head_seed_` (the seed of this fit's random heads; None under "reliable").
    """

    def __init__(
        self,
        tau: float = 0.07,
        tau_w: float = 0.5,
        reliability: str = "margin_clamped",
        top_k: int | None = None,
        shrinkage: float = 0.0,
        weight_norm: str | None = None,
        reliability_split: str = "support",
        holdout_fraction: float = 0.5,
        seed: int = 0,
        top_k_mode: str = "exclude",
        tie_break: str = "index",
        tie_seed: int = 0,
        head_choice: str = "reliable",
        head_seed: int = 0,
        arithmetic_dtype: str = "float32",
    ) -> None:
        self.tau = tau
        self.tau_w = tau_w
        self.reliability = reliability
        self.top_k = top_k
        self.shrinkage = shrinkage
        self.weight_norm = weight_norm
        self.reliability_split = reliability_split
        self.holdout_fraction = holdout_fraction
        self.seed = seed
        self.top_k_mode = top_k_mode
        self.tie_break = tie_break
        self.tie_seed = tie_seed
        self.head_choice = head_choice
        self.head_seed = head_seed
        self.arithmetic_dtype = arithmetic_dtype
        self._check()
        self.weights_: torch.Tensor | None = None

    fitted_attribute = "weights_"
    uses_reliability_set = True

    def _check(self) -> None:
        check_calm_settings(
            self.tau, self.tau_w, self.reliability, self.top_k, self.shrinkage, self.weight_norm, self.top_k_mode
        )
        check_split(self.reliability_split, self.holdout_fraction)
        check_head_choice(self.head_choice, self.head_seed)
        check_arithmetic_dtype(self.arithmetic_dtype)
        if self.arithmetic_dtype != "float32" and self.reliability_split != "support":
            raise ConfigError(
                f"arithmetic_dtype={self.arithmetic_dtype} is the authors' arithmetic, which measured "
                f"reliability on the support set or a val file, not reliability_split="
                f"{self.reliability_split!r}",
                "use reliability_split=support, or arithmetic_dtype=float32",
            )
        self._check_ties()

    def fit(
        self,
        features: FeaturesLike,
        labels: LabelsLike,
        *,
        n_classes: int | None = None,
        tie_seed: int | None = None,
        reliability_set: ReliabilitySet | None = None,
    ) -> CALM:
        """Prototypes from the support set, reliabilities on the reliability set (`reliability_set`, a
        named V, else S), and the head weights; `tie_seed` (the episode's seed) replaces the tie seed
        for this fit (tie_break="random" only) and seeds its random heads (head_choice random*)."""
        self._check()
        features, labels, n_classes = self._support(features, labels, n_classes)
        named = (
            None
            if reliability_set is None
            else validate_reliability_set(reliability_set, n_classes, self.n_heads_, self.head_dim_)
        )
        check_named_split(self.reliability_split, named)
        if self.arithmetic_dtype != "float32":
            prototypes = low_precision_prototypes(features, labels, n_classes, arithmetic_dtype(self.arithmetic_dtype))
            rel_features, rel_labels = (features, labels) if named is None else (named.features, named.labels)
            posteriors = low_precision_posteriors(rel_features, prototypes, self.tau)
        else:
            shift = logit_shift(self.tau)
            logits, rel_labels, prototypes = reliability_similarities(
                features,
                labels,
                n_classes,
                self.reliability_split,
                self.holdout_fraction,
                self.seed,
                scale=1.0 / self.tau,
                shift=shift or 0.0,
                reliability_set=named,
            )
            posteriors = softmax_classes_(logits, shifted=shift is not None)
        per_clip = clip_reliability(posteriors, rel_labels, self.reliability, scratch=True)
        r = class_means(per_clip, rel_labels, n_classes)
        self.reliability_ = shrink(r, class_counts(rel_labels, n_classes), self.shrinkage)
        self.head_seed_ = None if self.head_choice == "reliable" else fit_head_seed(self.head_seed, tie_seed)
        weighted, ranked = head_choice_scores(self.reliability_, self.head_choice, self.head_seed_ or 0)
        order = descending_order(ranked, self._tie_order(self.n_heads_, tie_seed))
        norm = self.weight_norm or default_weight_norm(self.reliability)
        self.weights_ = weight_sets(
            weighted, ranks_from_order(order), norm, [self.tau_w], [self.top_k], top_k_mode=self.top_k_mode
        )[0]
        self.tied_selections_ = tied_selections(ranked, order, self.top_k)
        self.prototypes_ = prototypes
        return self

    def predict_scores(self, features: FeaturesLike) -> torch.Tensor:
        """score_c(x) (m, C); heads with zero weight for every class are skipped, which changes nothing."""
        features = self._query(features)
        used = (self.weights_ > 0).any(dim=1)
        weights, prototypes = self.weights_, self.prototypes_
        if not bool(used.all()):
            heads = used.nonzero().flatten()
            features, weights, prototypes = features[:, heads.to(features.device)], weights[heads], prototypes[heads]
        if self.arithmetic_dtype != "float32":
            return calm_scores(low_precision_posteriors(features, prototypes, self.tau), weights)
        shift = logit_shift(self.tau)
        logits = scaled_cosines(features, prototypes, 1.0 / self.tau, shift or 0.0)
        return calm_scores(softmax_classes_(logits, shifted=shift is not None), weights)
