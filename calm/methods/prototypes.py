"""Class prototypes and head-wise cosines, the prototype methods' shared math (docs/design/formulas.md).

Features are (clips, heads, head_dim). Every function is batched over heads, so SAV, CALM and a
hyper-parameter sweep can share one set of cosine similarities instead of recomputing them per
setting (`Similarities`, `episode_similarities`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from calm.errors import ConfigError

NORM_FLOOR = 1e-8
RELIABILITY_SPLITS = ("support", "leave_one_out", "holdout")

FeaturesLike = torch.Tensor | np.ndarray
LabelsLike = torch.Tensor | np.ndarray | Sequence[int]


def as_features(x: FeaturesLike) -> torch.Tensor:
    """Float32 tensor on the input's device: caches store fp16, but every method computes in float32."""
    if isinstance(x, torch.Tensor):
        return x.float()
    if isinstance(x, np.ndarray):
        array = np.asarray(x, dtype=np.float32)
        if not array.flags.writeable:
            array = array.copy()
        return torch.from_numpy(array)
    raise ConfigError(
        f"features must be a torch tensor or numpy array, got {type(x).__name__}",
        "pass the cached activations as an (n_clips, n_heads, head_dim) tensor or array",
    )


def l2_normalize(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """x / max(||x||, 1e-8): the floor keeps all-zero vectors at zero instead of NaN."""
    return x / torch.linalg.vector_norm(x, dim=dim, keepdim=True).clamp_min(NORM_FLOOR)


def class_counts(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Clips per class as float32 (C,), the n_c of the prototype means and of shrinkage."""
    return torch.bincount(labels, minlength=n_classes).to(torch.float32)


def class_sums(features: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Per-class sums (K, C, d) of the raw features, as one matrix product with the one-hot labels.

    A product rather than a scatter-add: deterministic on GPUs (no atomics), and on CPUs it does not
    stall when other processes compete for the cores, as the threaded scatter kernels do.
    """
    n, n_heads, head_dim = features.shape
    one_hot = torch.nn.functional.one_hot(labels, n_classes).to(features.dtype)
    sums = one_hot.t() @ features.reshape(n, n_heads * head_dim)
    return sums.view(n_classes, n_heads, head_dim).transpose(0, 1)


def class_prototypes(features: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Class means of the raw features, (K, C, d); normalise separately with `l2_normalize`."""
    counts = class_counts(labels, n_classes).clamp_min(1.0)
    return class_sums(features, labels, n_classes) / counts[None, :, None]


def cosine_similarities(features: torch.Tensor, prototypes_normalized: torch.Tensor) -> torch.Tensor:
    """Cosines (K, m, C) of every clip and head with every class prototype (a classes-major view,
    see `prototype_dots`)."""
    return scaled_cosines(features, prototypes_normalized, 1.0)


def scaled_cosines(
    features: torch.Tensor, prototypes_normalized: torch.Tensor, scale: float, shift: float = 0.0
) -> torch.Tensor:
    """scale · cosines - shift, (K, m, C): the dot products divided by the feature norms.

    Dividing afterwards gives the same numbers as normalising the features first, without writing
    a normalised copy of the input; scale and shift (CALM's logits) ride along in the same pass.
    """
    dots = prototype_dots(features, prototypes_normalized)
    return scaled_dots(dots, reciprocal_norms(features), scale, shift, out=dots)


def reciprocal_norms(features: torch.Tensor) -> torch.Tensor:
    """1 / max(‖a_j(x)‖, 1e-8), stored heads-major (K, n): a transposed view would make every
    product with (K, n, C) dot products gather across memory."""
    return torch.linalg.vector_norm(features, dim=-1).clamp_min(NORM_FLOOR).reciprocal().t().contiguous()


def scaled_dots(
    dots: torch.Tensor, inv_norms: torch.Tensor, scale: float, shift: float, out: torch.Tensor
) -> torch.Tensor:
    """scale · ⟨a, μ̂⟩ / ‖a‖ - shift into `out` (K, n, C): the one formula for cosines and CALM's logits,
    used by the estimators (`scaled_cosines`) and by the grid, which keeps the dots across taus."""
    inv = inv_norms.mul(scale).unsqueeze(-1)
    if shift == 0.0:
        return torch.mul(dots, inv, out=out)
    return torch.addcmul(dots.new_tensor(-shift), dots, inv, out=out)


def prototype_dots(features: torch.Tensor, prototypes_normalized: torch.Tensor) -> torch.Tensor:
    """⟨a_j(x), μ̂_{c,j}⟩, (K, m, C), from one batched matrix product over heads.

    The result is stored classes-major, (K, C, m), and returned as a transposed view: that layout is
    the fast one for the product here, and `calm_scores` then reads it as one matrix-vector product
    per class. Up to the positive factor 1/‖a_j(x)‖ these are the cosines, so argmax over classes
    (SAV) needs nothing more.
    """
    return torch.bmm(prototypes_normalized, features.permute(1, 2, 0)).transpose(1, 2)


def normalized_prototypes(sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """μ̂ = μ / max(||μ||, 1e-8) from class sums, as S / max(||S||, n_c·1e-8): one pass instead of two."""
    floor = (counts.clamp_min(1.0) * NORM_FLOOR)[None, :, None]
    return sums / torch.linalg.vector_norm(sums, dim=-1, keepdim=True).maximum(floor)


def leave_one_out_similarities(features: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Cosines (K, n, C) of support clips where each clip's own-class prototype excludes that clip."""
    sums = class_sums(features, labels, n_classes)
    counts = class_counts(labels, n_classes)
    sims = cosine_similarities(features, normalized_prototypes(sums, counts))
    return _leave_one_out_(sims, features, labels, sums, counts)


def _leave_one_out_(
    sims: torch.Tensor, features: torch.Tensor, labels: torch.Tensor, sums: torch.Tensor, counts: torch.Tensor
) -> torch.Tensor:
    """Overwrite the own-class cosines in `sims` with <q̂, S_c - a> / ||S_c - a||, in closed form.

    With S_c the class sum and a the clip: <a, S_c> is recovered from the cosine already
    computed, and ||S_c - a||² = ||S_c||² - 2<a, S_c> + ||a||², so no prototype is refitted. A class
    with a single clip leaves the zero vector, whose cosine is 0.
    """
    clips = torch.arange(labels.shape[0], device=labels.device)
    a_norm = torch.linalg.vector_norm(features, dim=-1).t()
    a_floor = a_norm.clamp_min(NORM_FLOOR)
    own_counts = counts[labels]
    sum_norm = torch.linalg.vector_norm(sums, dim=-1)[:, labels]
    # μ̂_c = S_c / max(||S_c||, n_c·f), so <a, S_c> = cos · max(||a||, f) · max(||S_c||, n_c·f).
    a_dot_sum = sims[:, clips, labels] * a_floor * sum_norm.maximum(own_counts * NORM_FLOOR)
    a_sq = a_norm.square()
    rest_norm = (sum_norm.square() - 2 * a_dot_sum + a_sq).clamp_min(0.0).sqrt()
    own = (a_dot_sum - a_sq) / a_floor / rest_norm.clamp_min(NORM_FLOOR)
    sims[:, clips, labels] = own.masked_fill(own_counts <= 1, 0.0)
    return sims


def holdout_mask(labels: torch.Tensor, n_classes: int, fraction: float, seed: int) -> torch.Tensor:
    """Which support clips (bool (n,)) are held out to measure reliability in the `holdout` split.

    Per class, round(fraction · n_c) clips clipped to [1, n_c - 1], drawn with a CPU generator seeded
    by `seed` so the choice is the same on every device.
    """
    labels_cpu = labels.cpu()
    n = labels_cpu.shape[0]
    counts = torch.bincount(labels_cpu, minlength=n_classes)
    small = (counts < 2).nonzero().flatten().tolist()
    if small:
        raise ConfigError(
            f"reliability_split='holdout' needs at least 2 support clips per class; class(es) {small} have fewer",
            "use more shots, or reliability_split='support' or 'leave_one_out'",
        )
    generator = torch.Generator().manual_seed(int(seed))
    shuffled = torch.randperm(n, generator=generator)
    grouped = shuffled[torch.argsort(labels_cpu[shuffled], stable=True)]
    starts = torch.cumsum(counts, 0) - counts
    grouped_labels = labels_cpu[grouped]
    position = torch.arange(n) - starts[grouped_labels]
    n_held = torch.round(counts.double() * fraction).long().clamp(min=1).minimum(counts - 1)
    mask = torch.zeros(n, dtype=torch.bool)
    mask[grouped] = position < n_held[grouped_labels]
    return mask.to(labels.device)


def reliability_similarities(
    features: torch.Tensor,
    labels: torch.Tensor,
    n_classes: int,
    split: str = "support",
    holdout_fraction: float = 0.5,
    seed: int = 0,
    scale: float = 1.0,
    shift: float = 0.0,
    reliability_set: ReliabilitySet | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """scale · cosines - shift of the reliability set V, its labels, and the normalised prototypes of S.

    `support`: V = S against prototypes of S (the paper). `leave_one_out`: V = S, each clip against
    an own-class prototype without it. `holdout`: V = held-out clips against prototypes of the rest.
    A named `reliability_set` (validated, `validate_reliability_set`) is V itself, against the
    prototypes of all of S (the authors' val file); it needs split `support`.
    Prediction always uses the prototypes of all of S (the third value). CALM passes scale = 1/tau
    and shift = 1/tau to get shifted logits out of the same pass.
    """
    check_split(split, holdout_fraction)
    check_named_split(split, reliability_set)
    sums = class_sums(features, labels, n_classes)
    counts = class_counts(labels, n_classes)
    prototypes = normalized_prototypes(sums, counts)
    if reliability_set is not None:
        return (scaled_cosines(reliability_set.features, prototypes, scale, shift), reliability_set.labels, prototypes)
    if split == "holdout":
        held = holdout_mask(labels, n_classes, holdout_fraction, seed)
        fit_features, fit_labels = features[~held], labels[~held]
        fit_sums = class_sums(fit_features, fit_labels, n_classes)
        fit_prototypes = normalized_prototypes(fit_sums, class_counts(fit_labels, n_classes))
        return scaled_cosines(features[held], fit_prototypes, scale, shift), labels[held], prototypes
    if split == "leave_one_out":
        sims = _leave_one_out_(cosine_similarities(features, prototypes), features, labels, sums, counts)
        if scale != 1.0 or shift != 0.0:
            sims = torch.add(sims.new_tensor(-shift), sims, alpha=scale, out=sims)
        return sims, labels, prototypes
    return scaled_cosines(features, prototypes, scale, shift), labels, prototypes


@dataclass(frozen=True)
class ReliabilitySet:
    """A named reliability set V (docs/design/formulas.md#calm): labelled clips, apart from the support set
    S, on which CALM measures each head's reliability against the prototypes of S (the authors' val
    file). Without one, V = S. `features` (n_V, K, d), `labels` (n_V,) class indices of the support's
    class list."""

    features: torch.Tensor
    labels: torch.Tensor


def validate_reliability_set(
    reliability_set: ReliabilitySet | tuple[FeaturesLike, LabelsLike], n_classes: int, n_heads: int, head_dim: int
) -> ReliabilitySet:
    """V's features as float32 (n_V, K, d) of the support's heads, and its labels as int64; every
    class of the support set needs a clip in V (a reliability of a class without one is undefined)."""
    features, labels = (
        (reliability_set.features, reliability_set.labels)
        if isinstance(reliability_set, ReliabilitySet)
        else reliability_set
    )
    features = validate_query(features, n_heads, head_dim)
    return ReliabilitySet(features, reliability_labels(labels, features.shape[0], n_classes, features.device))


def reliability_labels(
    labels: LabelsLike, n_rows: int, n_classes: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """The labels of a named reliability set as int64 on `device`: one per row, each a class of the
    support's class list, and every class present (`validate_reliability_set`)."""
    labels_t = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
    if labels_t.ndim != 1 or labels_t.dtype.is_floating_point or labels_t.shape[0] != n_rows:
        raise ConfigError(
            f"the reliability set has {n_rows} clips but labels of shape "
            f"{tuple(labels_t.shape)} and dtype {labels_t.dtype}",
            "pass one integer class index per reliability clip",
        )
    labels_t = labels_t.to(device=device, dtype=torch.long)
    low, high = (int(labels_t.min()), int(labels_t.max())) if len(labels_t) else (0, -1)
    if low < 0 or high >= n_classes:
        raise ConfigError(
            f"the reliability set's labels lie in {low}..{high}, outside the support's classes 0..{n_classes - 1}",
            "label the reliability clips with the support set's class list",
        )
    missing = (torch.bincount(labels_t, minlength=n_classes) == 0).nonzero().flatten().tolist()
    if missing:
        raise ConfigError(
            f"class(es) {missing} have no clip in the reliability set V",
            "add reliability (val) clips of every class, or measure reliability on the support "
            "set (protocol.reliability=support)",
        )
    return labels_t


def check_named_split(split: str, reliability_set: ReliabilitySet | None) -> None:
    """A named reliability set replaces the support-derived splits, so it needs split `support`."""
    if reliability_set is not None and split != "support":
        raise ConfigError(
            f"a named reliability set V is given, but reliability_split={split!r} would take V from the support set",
            "use reliability_split=support with a named reliability set",
        )


@dataclass(frozen=True)
class Similarities:
    """One episode's cosines, computed once so a sweep scores every setting without new matrix products.

    reliability: (K, |V|, C) cosines of the reliability clips V (V = S for split 'support').
    reliability_labels: (|V|,) their labels. query: (K, m, C) cosines of the query clips.
    prototypes: (K, C, d) normalised prototypes of the whole support set.
    """

    reliability: torch.Tensor
    reliability_labels: torch.Tensor
    query: torch.Tensor
    prototypes: torch.Tensor
    n_classes: int
    split: str


def episode_similarities(
    support: FeaturesLike,
    labels: LabelsLike,
    query: FeaturesLike,
    *,
    n_classes: int | None = None,
    split: str = "support",
    holdout_fraction: float = 0.5,
    seed: int = 0,
) -> Similarities:
    """Validate one episode and compute all the cosines that SAV and CALM settings need."""
    support, labels, n_classes = validate_support(support, labels, n_classes)
    rel, rel_labels, prototypes = reliability_similarities(support, labels, n_classes, split, holdout_fraction, seed)
    query = validate_query(query, support.shape[1], support.shape[2])
    return Similarities(rel, rel_labels, cosine_similarities(query, prototypes), prototypes, n_classes, split)


def check_split(split: str, holdout_fraction: float) -> None:
    """Reject unknown reliability splits and holdout fractions outside (0, 1)."""
    if split not in RELIABILITY_SPLITS:
        raise ConfigError(f"unknown reliability_split {split!r}", f"use one of {', '.join(RELIABILITY_SPLITS)}")
    if split == "holdout" and not 0.0 < float(holdout_fraction) < 1.0:
        raise ConfigError(
            f"holdout_fraction must be in (0, 1), got {holdout_fraction}", "set holdout_fraction to e.g. 0.5"
        )


def validate_support(
    features: FeaturesLike, labels: LabelsLike, n_classes: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Support features as float32 (n, K, d), labels as int64 on their device, and the class count.

    Raises ConfigError when shapes disagree, a label is outside 0..C-1, or a class has no clip.
    """
    features = as_features(features)
    labels_t, n_classes = support_labels(features.shape, labels, n_classes, features.device)
    return features, labels_t, n_classes


def support_labels(
    shape: tuple[int, ...], labels: LabelsLike, n_classes: int | None, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, int]:
    """The checks of `validate_support` on the features' shape alone (no copy of the features, which
    may stay in fp16 or on disk): labels as int64 on `device`, and the class count."""
    if len(shape) != 3:
        raise ConfigError(
            f"features must be 3-D (n_clips, n_heads, head_dim), got shape {tuple(shape)}",
            "stack the per-clip (n_heads, head_dim) activations along a first clip axis",
        )
    labels_t = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
    if (
        labels_t.ndim != 1
        or labels_t.dtype.is_floating_point
        or labels_t.dtype.is_complex
        or labels_t.dtype == torch.bool
    ):
        raise ConfigError(
            f"labels must be a 1-D integer array, got dtype {labels_t.dtype} and shape {tuple(labels_t.shape)}",
            "pass one integer class index (0..C-1) per support clip",
        )
    if labels_t.shape[0] != shape[0]:
        raise ConfigError(
            f"{shape[0]} support clips but {labels_t.shape[0]} labels", "pass exactly one label per support clip"
        )
    if labels_t.shape[0] == 0:
        raise ConfigError("the support set is empty", "pass at least one labelled clip per class")
    labels_t = labels_t.to(device=device, dtype=torch.long)
    low, high = int(labels_t.min()), int(labels_t.max())
    if n_classes is None:
        n_classes = high + 1
    if low < 0 or high >= n_classes:
        raise ConfigError(
            f"labels must lie in 0..{n_classes - 1}, found {low}..{high}",
            "map class names to indices 0..C-1 (or pass the right n_classes)",
        )
    if n_classes < 2:
        raise ConfigError(f"need at least 2 classes, got {n_classes}", "add support clips of a second class")
    missing = (torch.bincount(labels_t, minlength=n_classes) == 0).nonzero().flatten().tolist()
    if missing:
        raise ConfigError(
            f"class(es) {missing} have no support clip",
            "give every class at least one support clip, or relabel the classes to 0..C-1 without gaps",
        )
    return labels_t, int(n_classes)


def validate_query(features: FeaturesLike, n_heads: int, head_dim: int) -> torch.Tensor:
    """Query features as float32 (m, K, d), checked against the fitted heads and head size."""
    features = as_features(features)
    if features.ndim != 3 or tuple(features.shape[1:]) != (n_heads, head_dim):
        raise ConfigError(
            f"query features have shape {tuple(features.shape)}, expected (m, {n_heads}, {head_dim}) as at fit",
            "score features from the same backbone and hook points as the support set",
        )
    return features


def check_fitted(estimator: object, attribute: str) -> None:
    """Raise a clear error when predict is called before fit."""
    if getattr(estimator, attribute, None) is None:
        name = type(estimator).__name__
        raise ConfigError(f"{name} is used before it was fitted", f"call {name}(...).fit(support, labels) first")
