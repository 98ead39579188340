"""ESC-50's support pool as the reference code built it: protocol=paper with `support_pool=ast_leaky`.

The reference drew its 40 ESC-50 support clips per class from the concatenation of two AST-style
training lists (the list of fold f holds every clip whose fold is not f, in metadata order); their
data (esc50_mcq_40shot_train.json) holds folds 1 and 2 about half as often as folds 3-5, which is
the lists of folds 1 and 2. Test fold 1 is then in the pool (the list of fold 2 holds it), and the
clips of folds 3-5 are listed twice, so about 5 of 40 support clips per class are test clips and
some clips appear twice. This mode reproduces that pool, duplicates kept, for comparison with the
published numbers only; the clean pool (folds other than the test fold, each clip once) is the default.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from calm.errors import ConfigError, ProtocolError
from calm.protocols.pools import Pools

SUPPORT_POOLS = ("clean", "ast_leaky")
LEAKY_DATASET = "esc50"  # the only dataset whose reference support pool held test clips


def check_support_pool(support_pool: str, dataset: str, train_lists: Sequence[int]) -> None:
    """``ConfigError`` for an unknown pool, the leaky pool outside ESC-50, or no training lists."""
    if support_pool not in SUPPORT_POOLS:
        raise ConfigError(f"protocol.support_pool={support_pool!r} is not one of {list(SUPPORT_POOLS)}",
                          "set protocol.support_pool=clean (the default) or ast_leaky (ESC-50 only)")
    if support_pool == "ast_leaky" and dataset != LEAKY_DATASET:
        raise ConfigError(f"protocol.support_pool=ast_leaky rebuilds ESC-50's reference support pool; "
                          f"the dataset is {dataset!r}",
                          "use support_pool=clean for this dataset, or dataset=esc50")
    if support_pool == "ast_leaky" and not len(train_lists):
        raise ConfigError("protocol.ast_train_lists is empty: the leaky pool concatenates these folds' training lists",
                          "set protocol.ast_train_lists=[1,2] (the reference's lists)")


def ast_leaky_members(pools: Pools, train_lists: Sequence[int]) -> list[np.ndarray]:
    """Per class, the rows of the concatenated training lists of ``train_lists`` (the list of fold f:
    every row of either pool whose fold is not f, in table order), duplicates kept, in that order."""
    if pools.folds is None:
        raise ProtocolError("support_pool=ast_leaky needs each clip's fold, and this clip table records none.",
                            "Use dataset=esc50 (its clips carry meta['fold']), or support_pool=clean.")
    in_play = pools.support | pools.query
    rows = np.concatenate([np.flatnonzero(in_play & (pools.folds != int(f))) for f in train_lists])
    position = np.searchsorted(pools.classes, pools.labels[rows])
    return [rows[position == k] for k in range(len(pools.classes))]
