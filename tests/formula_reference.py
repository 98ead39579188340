"""docs/design/formulas.md written out literally: plain scalar loops over heads, classes and clips.

Deliberately slow and obvious, in float64 Python numbers, so the vectorised estimators can be checked
against a version whose every line can be read next to the formulas.
"""

from __future__ import annotations

import math

FLOOR = 1e-8
EPSILON = 1.1754943508222875e-38  # torch.finfo(torch.float32).tiny
WEIGHT_SUM_FLOOR = 1e-12


def norm(v):
    return math.sqrt(sum(x * x for x in v))


def cosine(a, b):
    """⟨a/max(‖a‖, f), b/max(‖b‖, f)⟩."""
    return sum(x * y for x, y in zip(a, b, strict=True)) / (max(norm(a), FLOOR) * max(norm(b), FLOOR))


def mean(vectors, dim):
    if not vectors:
        return [0.0] * dim
    return [sum(v[i] for v in vectors) / len(vectors) for i in range(dim)]


def prototypes(features, labels, n_classes, clips=None):
    """protos[j][c] = mean of head j's features over the listed clips of class c."""
    clips = range(len(labels)) if clips is None else clips
    n_heads, dim = len(features[0]), len(features[0][0])
    return [
        [mean([features[i][j] for i in clips if labels[i] == c], dim) for c in range(n_classes)] for j in range(n_heads)
    ]


def similarities(clip, protos):
    """s[j][c] for one clip (list over heads of feature vectors)."""
    return [[cosine(clip[j], protos[j][c]) for c in range(len(protos[j]))] for j in range(len(protos))]


def argmax(values):
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:
            best = i
    return best


def softmax(values):
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def tie_position(n_heads, tie_order):
    """position[j]: where head j stands in the tie order (the flat index when None)."""
    order = list(range(n_heads)) if tie_order is None else list(tie_order)
    return {j: order.index(j) for j in range(n_heads)}


def sav(support, labels, query, n_classes, top_k, tie_order=None):
    n_heads = len(support[0])
    position = tie_position(n_heads, tie_order)
    protos = prototypes(support, labels, n_classes)
    scores = [0] * n_heads
    for i, clip in enumerate(support):
        s = similarities(clip, protos)
        for j in range(n_heads):
            if argmax(s[j]) == labels[i]:
                scores[j] += 1
    ranking = sorted(range(n_heads), key=lambda j: (-scores[j], position[j]))
    selected = ranking[: min(top_k, n_heads)]
    votes, predictions = [], []
    for clip in query:
        s = similarities(clip, protos)
        count = [0] * n_classes
        first_rank = [None] * n_classes
        for rank, j in enumerate(selected):
            c = argmax(s[j])
            count[c] += 1
            if first_rank[c] is None:
                first_rank[c] = rank
        best = max(count)
        tied = [c for c in range(n_classes) if count[c] == best]
        predictions.append(min(tied, key=lambda c: first_rank[c]))
        votes.append(count)
    return {"head_scores": scores, "ranking": ranking, "selected": selected, "votes": votes, "predictions": predictions}


def reliability_set(support, labels, n_classes, split, held, named=None):
    """(label, s[j][c]) for every clip of the reliability set V; `named` = (features, labels) of a
    named V, scored against the prototypes of the whole support set."""
    n = len(labels)
    if named is not None:
        protos = prototypes(support, labels, n_classes)
        return [(y, similarities(clip, protos)) for clip, y in zip(named[0], named[1], strict=True)]
    if split == "support":
        protos = prototypes(support, labels, n_classes)
        return [(labels[i], similarities(support[i], protos)) for i in range(n)]
    if split == "holdout":
        protos = prototypes(support, labels, n_classes, clips=[i for i in range(n) if not held[i]])
        return [(labels[i], similarities(support[i], protos)) for i in range(n) if held[i]]
    out = []
    for i in range(n):
        rest = [k for k in range(n) if k != i]
        own = prototypes(support, labels, n_classes, clips=rest)
        full = prototypes(support, labels, n_classes)
        protos = [[own[j][c] if c == labels[i] else full[j][c] for c in range(n_classes)] for j in range(len(full))]
        out.append((labels[i], similarities(support[i], protos)))
    return out


def clip_reliability(p, c, scheme):
    if scheme == "prob":
        return p[c]
    if scheme == "brier":
        return 2 * p[c] - sum(x * x for x in p)
    margin = p[c] - max(p[k] for k in range(len(p)) if k != c)
    return max(0.0, margin) if scheme == "margin_clamped" else margin


def calm(
    support,
    labels,
    query,
    n_classes,
    *,
    tau=0.07,
    tau_w=0.5,
    reliability="margin_clamped",
    top_k=None,
    shrinkage=0.0,
    weight_norm=None,
    split="support",
    held=None,
    top_k_mode="exclude",
    tie_order=None,
    named=None,
):
    n_heads = len(support[0])
    position = tie_position(n_heads, tie_order)
    v = reliability_set(support, labels, n_classes, split, held, named)
    # step 2: reliability averaged over the clips of each class in V
    r = [[0.0] * n_classes for _ in range(n_heads)]
    counts = [sum(1 for label, _ in v if label == c) for c in range(n_classes)]
    for j in range(n_heads):
        for c in range(n_classes):
            values = [
                clip_reliability(softmax([x / tau for x in s[j]]), c, reliability) for label, s in v if label == c
            ]
            r[j][c] = sum(values) / len(values) if values else 0.0
    # step 3: shrinkage toward the grand mean
    if shrinkage:
        grand = sum(r[j][c] for j in range(n_heads) for c in range(n_classes)) / (n_heads * n_classes)
        for j in range(n_heads):
            for c in range(n_classes):
                lam = counts[c] / (counts[c] + shrinkage)
                r[j][c] = lam * r[j][c] + (1 - lam) * grand
    # steps 4-5: per-class top_k and weights
    norm_name = weight_norm or ("power" if reliability == "margin_clamped" else "softmax")
    w = [[0.0] * n_classes for _ in range(n_heads)]
    for c in range(n_classes):
        kept = list(range(n_heads))
        if top_k is not None and 0 < top_k < n_heads:
            kept = sorted(range(n_heads), key=lambda j: (-r[j][c], position[j]))[:top_k]
        if norm_name == "softmax":
            top = max(r[j][c] / tau_w for j in kept)
            raw = {j: math.exp(r[j][c] / tau_w - top) for j in kept}
        else:
            raw = {j: max(r[j][c], 0.0) + EPSILON for j in kept}
            if top_k_mode == "epsilon_leak" and tau_w != 1:  # the authors: mask to 0, then add ε
                raw.update({j: EPSILON for j in range(n_heads) if j not in kept})
            if tau_w != 1:
                raw = {j: x ** (1.0 / tau_w) for j, x in raw.items()}
        total = sum(raw.values())
        for j in range(n_heads):
            if total > WEIGHT_SUM_FLOOR:
                w[j][c] = raw.get(j, 0.0) / total
            else:
                w[j][c] = 1.0 / len(kept) if j in kept else 0.0
    # step 6: scores
    protos = prototypes(support, labels, n_classes)
    scores = []
    for clip in query:
        s = similarities(clip, protos)
        p = [softmax([x / tau for x in s[j]]) for j in range(n_heads)]
        scores.append([sum(w[j][c] * p[j][c] for j in range(n_heads)) for c in range(n_classes)])
    return {"reliability": r, "weights": w, "scores": scores, "predictions": [argmax(x) for x in scores]}
