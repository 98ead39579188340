"""Synthetic head activations with class structure, for benchmarks shaped like a real cache.

Real heads' cosines are all high (a large shared offset per head); each head carries a class signal
of its own strength; clips add noise. Speed does not depend on the values, but the methods'
agreement checks need non-trivial accuracy, which this gives.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SyntheticSplit:
    support: torch.Tensor  # (n, K, d) float32
    labels: torch.Tensor  # (n,)
    query: torch.Tensor  # (m, K, d)
    query_labels: torch.Tensor  # (m,)
    n_classes: int


def synthetic_split(
    heads: int,
    dim: int,
    classes: int,
    support_per_class: int,
    queries: int,
    balanced_queries: bool = True,
    signal: float = 0.2,
    seed: int = 0,
) -> SyntheticSplit:
    """`support_per_class` clips per class; `queries` query clips (per class when balanced, else in
    total with random labels); `signal` sets how hard the split is."""
    g = torch.Generator().manual_seed(seed)
    offset = 3.0 * torch.randn(heads, dim, generator=g)
    centers = torch.randn(classes, heads, dim, generator=g)
    strength = signal * torch.rand(heads, 1, generator=g) ** 2
    labels = torch.arange(classes).repeat_interleave(support_per_class)
    if balanced_queries:
        query_labels = torch.arange(classes).repeat_interleave(queries)
    else:
        query_labels = torch.randint(0, classes, (queries,), generator=g)

    def clips(y: torch.Tensor) -> torch.Tensor:
        return offset + strength * centers[y] + 0.6 * torch.randn(len(y), heads, dim, generator=g)

    return SyntheticSplit(clips(labels), labels, clips(query_labels), query_labels, classes)
