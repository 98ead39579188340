"""CALM's math, once (docs/design/formulas.md#calm, steps 1-6): the only home of every CALM formula.

The `CALM` estimator, the ablations that share its steps (GRW, the soft votes), the paper grid and
the search all call these functions; the estimator is the grid of one setting. Every function is
batched over heads, clips and classes, and `weight_sets` over many (tau_w, top_k) pairs at once, so a
grid of thousands of settings reuses one set of cosines, posteriors per tau and reliabilities per
scheme.

Layouts: cosines, logits and posteriors are (K, n, C) (heads, clips, classes), usually a
classes-major view (see `calm.methods.prototypes.prototype_dots`); reliabilities, ranks and weights
are (K, C); a stack of weight sets is (S, K, C).

Two opt-in departures from docs/design/formulas.md#calm's defaults, for the authors' runs: a seeded
random tie order for the per-class top_k (`tie_order`, see `calm.methods.ties`) and the authors'
top-k masking of power weights (`top_k_mode="epsilon_leak"`, see `weight_sets`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from numbers import Real

import torch

from calm.errors import ConfigError
from calm.methods.checks import check_positive, check_top_k
from calm.methods.prototypes import class_counts
from calm.methods.ties import descending_order, ranks_from_order
from calm.storage.digests import seeded_int

RELIABILITY_SCHEMES = ("margin_clamped", "margin", "prob", "brier")
HEAD_CHOICES = ("reliable", "random", "random_heads")
RANDOM_HEADS_TAG = "calm.random_heads.v1"
WEIGHT_NORMS = ("power", "softmax")
TOP_K_MODES = ("exclude", "epsilon_leak")
EPSILON = torch.finfo(torch.float32).tiny  # ε of docs/design/formulas.md#calm: the smallest normal float32
WEIGHT_SUM_FLOOR = 1e-12  # a class whose power weights sum to at most this gets uniform weights
LOGIT_RANGE = 80.0  # exp(-80) is still a normal float32 number


def default_weight_norm(reliability: str) -> str:
    """The paper's pairing: power weights for margin_clamped, softmax weights for the other schemes."""
    return "power" if reliability == "margin_clamped" else "softmax"


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


def calm_posteriors(sims: torch.Tensor, tau: float) -> torch.Tensor:
    """Per-head posteriors p_j(c|x) = softmax_c(s_{j,c}(x) / tau), shape and layout as `sims` (K, m, C)."""
    return softmax_classes_(sims * (1.0 / tau), shifted=False)


def clip_reliabilities(
    posteriors: torch.Tensor, labels: torch.Tensor, schemes: Iterable[str], scratch: bool
) -> dict[str, torch.Tensor]:
    """Per scheme, head and clip (K, n): the clip's own-class score (docs/design/formulas.md#calm, step 2).

    margin_clamped: max(0, p(y) - max_{c≠y} p(c)); margin: without the clamp; prob: p(y);
    brier: 2·p(y) - Σ_c p(c)². With `scratch` the caller gives up `posteriors`, and the margins
    overwrite its own-class entries instead of copying the whole (K, n, C) tensor to mask them.
    """
    schemes = list(dict.fromkeys(schemes))
    for scheme in schemes:
        check_reliability(scheme)
    clips = torch.arange(labels.shape[0], device=labels.device)
    own = posteriors[:, clips, labels]
    per_clip = {"prob": own}
    if "brier" in schemes:
        per_clip["brier"] = 2 * own - torch.linalg.vector_norm(posteriors, dim=-1).square()
    if {"margin", "margin_clamped"} & set(schemes):
        others = posteriors if scratch else posteriors.clone()
        others[:, clips, labels] = -math.inf
        per_clip["margin"] = own - others.amax(dim=-1)
        per_clip["margin_clamped"] = per_clip["margin"].clamp_min(0.0)
    return {scheme: per_clip[scheme] for scheme in schemes}


def clip_reliability(posteriors: torch.Tensor, labels: torch.Tensor, scheme: str, scratch: bool) -> torch.Tensor:
    """`clip_reliabilities` of one scheme, (K, n)."""
    return clip_reliabilities(posteriors, labels, [scheme], scratch)[scheme]


def class_totals(per_clip: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Sum over the clips of each class, (K, n) -> (K, C), as one small matrix product: totals of
    chunks of clips add up to the whole set's."""
    return per_clip @ torch.nn.functional.one_hot(labels, n_classes).to(per_clip.dtype)


def class_means(per_clip: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Mean over the clips of each class, (K, n) -> (K, C); 0 for no clip."""
    return class_totals(per_clip, labels, n_classes) / class_counts(labels, n_classes).clamp_min(1.0)


def calm_reliability(posteriors: torch.Tensor, labels: torch.Tensor, n_classes: int, scheme: str) -> torch.Tensor:
    """Reliability r (K, C): the per-clip score of `scheme` averaged over the clips of each class."""
    return class_means(clip_reliability(posteriors, labels, scheme, scratch=False), labels, n_classes)


def shrink(r: torch.Tensor, counts: torch.Tensor, alpha: float) -> torch.Tensor:
    """Shrink r (K, C) toward its grand mean: r ← n_c/(n_c+α)·r + α/(n_c+α)·r̄, steadier at few shots."""
    if alpha == 0:
        return r
    keep = counts / (counts + alpha)
    return keep * r + (1 - keep) * r.mean()


def head_choice_scores(r: torch.Tensor, head_choice: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(the scores the weights are computed from, the scores that rank the heads for top_k), both (K, C).

    `reliable` (CALM): r for both. `random` (the authors' random-heads control, their `--random_topk`):
    r is replaced by uniform random scores U[0, 1) drawn from `seed`, so the kept heads and their weights
    are both random (the weight formula of step 5 applied to them). `random_heads`: the kept heads are
    drawn at random, but weighted by their measured reliabilities as CALM weights its own. The scores
    are drawn on the CPU (the same on every device; the authors drew theirs on the GPU, so their exact
    draw is not reproduced) and with top_k None every head is kept, so `random_heads` is then CALM.
    """
    if head_choice == "reliable":
        return r, r
    generator = torch.Generator().manual_seed(int(seed))
    scores = torch.rand(tuple(r.shape), generator=generator, dtype=torch.float32).to(r.device, r.dtype)
    return (scores, scores) if head_choice == "random" else (r, scores)


def fit_head_seed(head_seed: int, fit_seed: int | None) -> int:
    """The seed of one fit's random heads: `head_seed`, mixed with the episode's seed when the fit is
    given one, so every episode draws its own heads and the draw stays reproducible."""
    return int(head_seed) if fit_seed is None else seeded_int(RANDOM_HEADS_TAG, int(head_seed), int(fit_seed))


def head_ranks(r: torch.Tensor, tie_order: torch.Tensor | None = None) -> torch.Tensor:
    """Rank (K, C) of each head within its class by r, descending; ties to the lower head index, or
    in the order of `tie_order` (a head permutation from `calm.methods.ties.tie_order`).

    One sort serves every top_k: the kept heads of a class are those with rank < top_k.
    """
    return ranks_from_order(descending_order(r, tie_order))


def kept_heads(ranks: torch.Tensor, top_ks: Sequence[int | None]) -> torch.Tensor:
    """Kept heads (T, K, C) bool per top_k; all when top_k is None or >= K (docs/design/formulas.md#calm;
    the estimators refuse 0 through `check_top_k`, which this low-level helper does not repeat)."""
    n_heads = ranks.shape[0]
    limits = [k if k is not None and 0 < k < n_heads else n_heads for k in top_ks]
    return ranks.unsqueeze(0) < torch.tensor(limits, device=ranks.device)[:, None, None]


def top_k_mask(r: torch.Tensor, top_k: int | None, tie_order: torch.Tensor | None = None) -> torch.Tensor:
    """Kept heads (K, C) bool: per class the top_k heads by r, ties as in `head_ranks`."""
    return kept_heads(head_ranks(r, tie_order), [top_k])[0]


def weight_sets(
    r: torch.Tensor,
    ranks: torch.Tensor,
    weight_norm: str,
    tau_ws: Sequence[float],
    top_ks: Sequence[int | None],
    out: torch.Tensor | None = None,
    top_k_mode: str = "exclude",
) -> torch.Tensor:
    """Head weights of every (tau_w, top_k) pair, tau_w-major, (W·T, K, C), summing to 1 per class.

    `power`: w ∝ (max(r, 0) + ε)^(1/tau_w) over the kept heads (the power is skipped at tau_w = 1),
    uniform over the kept heads when a class's weights sum to ≤ 1e-12. `softmax`: softmax of
    r / tau_w over the kept heads. Excluded heads get 0. The power (or exponential) of r is taken
    once per tau_w and masked per top_k; the best head by r is always kept, so the softmax's maximum
    over the kept heads is its maximum over all heads. `out` (any strides) receives the result.

    `top_k_mode="epsilon_leak"` is the authors' masking of power weights (their
    `calm_build_weights_from_r`): r is set to 0 on the excluded heads and ε added after the mask,
    so at tau_w ≠ 1 an excluded head keeps w ∝ ε^(1/tau_w), ε = finfo(r.dtype).tiny (their
    reliabilities are float32, as here): ≈ 1.6e-4 at tau_w = 10 against (r + ε)^0.1 for a kept head,
    a visible share over ~1,000 excluded heads, while ε^2 underflows to 0 at tau_w = 0.5. At
    tau_w = 1 they add no ε, so excluded heads get 0 as with `exclude`; softmax weights mask with
    finfo.min there and so leak nothing either. The uniform fallback (total ≤ 1e-12) is unchanged.
    """
    check_weight_norm(weight_norm)
    check_top_k_mode(top_k_mode)
    for tau_w in tau_ws:
        check_positive("tau_w", tau_w)
    kept = kept_heads(ranks, top_ks)  # (T, K, C)
    shape = (len(tau_ws), len(top_ks), *r.shape)
    target = torch.empty(shape, dtype=r.dtype, device=r.device) if out is None else out.unflatten(0, shape[:2])
    if weight_norm == "softmax":
        z = r / torch.tensor(tau_ws, dtype=r.dtype, device=r.device)[:, None, None]
        # written out: torch.softmax over the heads axis goes multi-threaded even for a (K, C) matrix
        # and then stalls for milliseconds whenever other processes hold the cores
        e = (z - z.amax(dim=1, keepdim=True)).exp_().unsqueeze(1) * kept
        torch.div(e, e.sum(dim=2, keepdim=True), out=target)
    else:
        raw = r.clamp_min(0.0) + EPSILON
        raw = torch.stack([raw if tau_w == 1 else raw.pow(1.0 / tau_w) for tau_w in tau_ws]).unsqueeze(1) * kept
        if top_k_mode == "epsilon_leak":
            tiny = torch.tensor(torch.finfo(r.dtype).tiny, dtype=r.dtype, device=r.device)
            leaks = torch.stack([torch.zeros_like(tiny) if tau_w == 1 else tiny.pow(1.0 / tau_w) for tau_w in tau_ws])
            raw = torch.where(kept, raw, leaks[:, None, None, None])
        total = raw.sum(dim=2, keepdim=True)
        uniform = kept / kept.sum(dim=1, keepdim=True)
        torch.where(total > WEIGHT_SUM_FLOOR, raw / total.clamp_min(EPSILON), uniform, out=target)
    return target.flatten(0, 1) if out is None else out


def calm_weights(
    r: torch.Tensor,
    tau_w: float,
    top_k: int | None = None,
    weight_norm: str | None = None,
    scheme: str = "margin_clamped",
    *,
    top_k_mode: str = "exclude",
    tie_order: torch.Tensor | None = None,
) -> torch.Tensor:
    """Head weights (K, C) of one setting: `weight_sets` of one (tau_w, top_k) pair.

    `weight_norm` None: the paper's pairing for `scheme`. `top_k_mode` as in `weight_sets`,
    `tie_order` as in `head_ranks`.
    """
    norm = weight_norm or default_weight_norm(scheme)
    return weight_sets(r, head_ranks(r, tie_order), norm, [tau_w], [top_k], top_k_mode=top_k_mode)[0]


def calm_scores(query_posteriors: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Class scores (m, C) of one setting, score_c(x) = Σ_j w_{j,c} p_j(c|x) (docs/design/formulas.md#calm).

    Classes-major posteriors (as `scaled_cosines` makes them) are read once by a matrix-vector
    product per class; other layouts use a product and a sum over heads (BLAS would copy them).
    """
    if query_posteriors.stride(1) == 1:
        return torch.einsum("kmc,kc->mc", query_posteriors, weights)
    return (query_posteriors * weights[:, None, :]).sum(dim=0)


def setting_scores(weights: torch.Tensor, posteriors: torch.Tensor) -> torch.Tensor:
    """Class scores of many settings at once, (C, S, m), from weights (C, S, K) and posteriors (C, K, m).

    The same sum as `calm_scores`, as one batched product per class; only the order of the sum over
    heads differs, so scores can differ from `calm_scores` by float32 rounding.
    """
    return torch.bmm(weights, posteriors)


def check_reliability(scheme: str) -> None:
    if scheme not in RELIABILITY_SCHEMES:
        raise ConfigError(f"unknown reliability {scheme!r}", f"use one of {', '.join(RELIABILITY_SCHEMES)}")


def check_weight_norm(weight_norm: str | None) -> None:
    if weight_norm is not None and weight_norm not in WEIGHT_NORMS:
        raise ConfigError(f"unknown weight_norm {weight_norm!r}", f"use one of {', '.join(WEIGHT_NORMS)}, or null")


def check_head_choice(head_choice: str, head_seed: int) -> None:
    if head_choice not in HEAD_CHOICES:
        raise ConfigError(
            f"unknown head_choice {head_choice!r}",
            "use reliable (CALM), random (the authors' control: random scores replace the "
            "reliabilities) or random_heads (random top_k heads weighted by their reliabilities)",
        )
    if isinstance(head_seed, bool) or not isinstance(head_seed, int) or head_seed < 0:
        raise ConfigError(f"head_seed must be a non-negative integer, got {head_seed!r}", "set head_seed to e.g. 0")


def check_top_k_mode(top_k_mode: str) -> None:
    if top_k_mode not in TOP_K_MODES:
        raise ConfigError(
            f"unknown top_k_mode {top_k_mode!r}",
            "use exclude (excluded heads get 0) or epsilon_leak (the authors' masking)",
        )


def check_calm_settings(
    tau: float,
    tau_w: float,
    reliability: str,
    top_k: int | None,
    shrinkage: float,
    weight_norm: str | None,
    top_k_mode: str = "exclude",
) -> None:
    """Reject settings docs/design/formulas.md#calm does not define, before any computation."""
    check_top_k_mode(top_k_mode)
    check_positive("tau", tau)
    check_positive("tau_w", tau_w)
    check_reliability(reliability)
    check_weight_norm(weight_norm)
    check_top_k("CALM", top_k)
    if not isinstance(shrinkage, Real) or isinstance(shrinkage, bool) or shrinkage < 0:
        raise ConfigError(f"shrinkage must be a number >= 0, got {shrinkage!r}", "set shrinkage to 0 (off) or e.g. 1.0")
