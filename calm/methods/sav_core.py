"""SAV's math, once (Sparse Attention Vectors, Mitra et al. 2024; docs/design/formulas.md#sav).

Heads are scored by how many support clips their nearest prototype gets right, the top_k heads are
kept, and each query is the majority vote of their nearest-prototype guesses. These functions work
on precomputed cosines so a sweep over top_k reuses them; the `SAV` estimator, the SAV-ranked
ablations and the linear probe call them.
"""

from __future__ import annotations

import torch

from calm.errors import ConfigError
from calm.methods.checks import check_top_k
from calm.methods.prototypes import (
    Similarities,
)
from calm.methods.ties import descending_order


def sav_head_scores(support_sims: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per head (K,), the number of support clips whose argmax cosine is their label (ties: lowest class).

    `support_sims` (K, n, C) may be any positive per-clip multiple of the cosines (e.g. the raw dot
    products with the normalised prototypes): the argmax is the same.
    """
    return (sav_head_votes(support_sims) == labels).sum(dim=1)


def sav_rank(head_scores: torch.Tensor, tie_order: torch.Tensor | None = None) -> torch.Tensor:
    """Head indices by score, descending; a stable sort sends ties to the lower flat head index, or,
    given `tie_order` (a head permutation from `calm.methods.ties.tie_order`), to its order.

    At 1 shot every head scores C (each gets its own support clip right), so the top_k is the tie
    rule's choice alone: the first k flat indices, or the first k of the permutation.
    """
    return descending_order(head_scores, tie_order)


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


def sav_predict_from(sims: Similarities, top_k: int | None, tie_order: torch.Tensor | None = None) -> torch.Tensor:
    """SAV predictions (m,) from an episode's precomputed cosines, for sweeps over top_k (None: all
    heads); `tie_order` as in `sav_rank`."""
    check_top_k("SAV", top_k)
    if sims.split != "support":
        raise ConfigError(
            f"SAV scores heads on the support set, but these similarities use split {sims.split!r}",
            "compute the similarities with split='support'",
        )
    order = sav_rank(sav_head_scores(sims.reliability, sims.reliability_labels), tie_order)[:top_k]  # None: all
    return sav_decide(sav_head_votes(sims.query[order]), sims.n_classes)
