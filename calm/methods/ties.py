"""Ties in head rankings, once (docs/design/formulas.md#ties): the tie rule, the seeded random tie-break
and the count of selections a tie decided.

Ranking heads by a score ties whenever scores are equal. At 1 shot every SAV head gets its single
support clip of each class right, so every head scores C and SAV's top-k is decided by the tie rule
alone; CALM's per-class top_k ties whenever reliabilities saturate (e.g. clamped margins of 1 at a
small tau). Two rules, chosen per estimator by `tie_break`:

- `index` (the default, the clean rule): a stable sort, so equal scores keep flat head order, the
  lower index first. Reproducible, but on a layer-major head order it systematically favours the
  first hook points (on Whisper tiny.en, the decoder self-attention heads).
- `random`: a permutation π of the K heads is drawn from `torch.Generator().manual_seed(tie_seed)`
  (on the CPU, so the same on every device), and the heads are stable-sorted by score in π's order:
  order = π[stable_argsort_desc(s[π])]. Heads of different scores keep score order; among equal
  scores the order is π's, so a different seed picks a different tied set. The authors'
  `np.argsort(...)[-k:]` / `torch.topk` leave tie order to the sort; a seeded draw per episode is the
  reproducible stand-in. One π serves every class of a (K, C) score matrix.

`tied_selections` counts, for a kept prefix of k < K heads, the kept heads whose score equals the
score of the first head left out: the selections another tie rule could have swapped.
"""

from __future__ import annotations

from numbers import Integral

import torch

from calm.errors import ConfigError

TIE_BREAKS = ("index", "random")
SEED_LIMIT = 2**63  # seeds are non-negative (as episode seeds are) and fit torch.Generator.manual_seed


def check_tie_seed(owner: str, tie_seed: int) -> None:
    """A tie seed is a non-negative integer below 2**63 (a bool is not one)."""
    if isinstance(tie_seed, bool) or not isinstance(tie_seed, Integral) or not 0 <= tie_seed < SEED_LIMIT:
        raise ConfigError(
            f"{owner} tie_seed must be a non-negative integer, got {tie_seed!r}",
            "set tie_seed to e.g. 0 (the pipeline passes each episode's seed)",
        )


def check_tie_break(owner: str, tie_break: str, tie_seed: int) -> None:
    """`tie_break` is `index` or `random`, and `tie_seed` a valid seed."""
    if tie_break not in TIE_BREAKS:
        raise ConfigError(
            f"{owner} tie_break must be one of {', '.join(TIE_BREAKS)}, got {tie_break!r}",
            "use tie_break=index (lower head index first) or tie_break=random (seeded by tie_seed)",
        )
    check_tie_seed(owner, tie_seed)


def tie_order(n_heads: int, tie_break: str, tie_seed: int) -> torch.Tensor | None:
    """The head order π (K,) that settles ties: None for `index` (flat head order), else a random
    permutation drawn on the CPU from a generator seeded with `tie_seed`."""
    if tie_break == "index":
        return None
    generator = torch.Generator().manual_seed(int(tie_seed))
    return torch.randperm(n_heads, generator=generator)


def descending_order(scores: torch.Tensor, order: torch.Tensor | None = None) -> torch.Tensor:
    """Head indices by score along dim 0, descending, (K,) or (K, C); ties in the order of `order`
    (a permutation of the heads; None: the flat head index)."""
    if order is None:
        return torch.sort(scores, dim=0, descending=True, stable=True).indices
    order = order.to(scores.device)
    return order[torch.sort(scores[order], dim=0, descending=True, stable=True).indices]


def ranks_from_order(order: torch.Tensor) -> torch.Tensor:
    """The rank of each head (same shape as `order`): the inverse permutation along dim 0."""
    positions = torch.arange(order.shape[0], device=order.device)
    if order.ndim == 2:
        positions = positions.unsqueeze(1).expand_as(order)
    return torch.empty_like(order).scatter_(0, order, positions)


def tied_selections(scores: torch.Tensor, order: torch.Tensor, k: int | None) -> int:
    """Selected heads chosen among ties, summed over columns: of the first k heads of `order` (per
    column), those whose score equals the score of the first head left out. 0 when k is None or keeps
    every head. The count depends on the scores only, not on the tie rule that picked among them."""
    n_heads = scores.shape[0]
    if k is None or not 0 < k < n_heads:
        return 0
    boundary = scores.gather(0, order[k : k + 1])
    return int((scores.gather(0, order[:k]) == boundary).sum())
