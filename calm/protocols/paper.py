"""The paper's fixed split: one support set per class and the whole test pool, as one episode."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from calm.errors import ProtocolError
from calm.protocols.base import Protocol
from calm.protocols.checks import (
    check_class_count,
    check_positive,
    check_queries_exist,
    check_shots,
    is_int,
)
from calm.protocols.episodes import Episode, derive_seed
from calm.protocols.pools import Pools


class PaperProtocol(Protocol):
    """The paper's fixed split: one support set of ``shots`` clips per class, the whole test pool as queries.

    The support set is drawn once, from the seed derived from (seed, dataset, shots, 0), over every
    class. It comes only from clips of the support pool that are not also in the query pool: every
    query-pool clip is scored, so a clip in both pools would otherwise be scored against a prototype
    containing itself, and ESC-50's test fold could reach the support set (the reference code's
    mistake). Reliability is measured on this support set and a hyper-parameter grid is evaluated on
    the single episode (``calm.grid``).

    ``configs/protocol/paper.yaml`` names this class by ``_target_``; ``shots`` and ``dataset``
    interpolate the top-level keys. The selection settings of the split, ``folds`` and ``cv_seed``
    (support-set cross-validation) and ``grid`` (the CALM grid), do not change the draw: they are
    accepted and kept as attributes so the config group instantiates as written, with no key
    filtered out, and ``calm.grid`` reads them from the same config. None: not configured.
    ``authors_modes`` is the switch every `${calm.authors:...}` config value reads (calm.authors_modes).
    """

    n_episodes = 1

    def __init__(
        self,
        shots: int,
        seed: int = 42,
        dataset: str = "",
        folds: int | None = None,
        cv_seed: int | None = None,
        grid: Mapping[str, Any] | None = None,
        name: str = "paper",
        authors_modes: bool = True,
    ) -> None:
        self.authors_modes = authors_modes
        self.shots = shots
        self.seed = seed
        self.dataset = dataset
        self.folds = folds
        self.cv_seed = cv_seed
        self.grid = grid
        self.name = name

    def __repr__(self) -> str:
        return f"PaperProtocol(shots={self.shots}, seed={self.seed}, dataset={self.dataset!r})"

    def validate(self, pools: Pools) -> None:
        """Raise ``ProtocolError`` if the fixed split cannot be drawn; labels and masks only."""
        check_positive("shots", self.shots)
        if not is_int(self.seed) or self.seed < 0:
            raise ProtocolError(f"`seed` must be a non-negative integer, got {self.seed!r}.",
                                "Set the protocol seed to e.g. 42 (the paper's).")
        check_class_count(len(pools.classes))
        check_queries_exist(pools.classes, pools.counts(pools.query), pools.name)
        overlap = pools.support & pools.query
        note = (
            f" ({int(overlap.sum())} clips in both pools are never used as support, since every "
            "test clip is scored)"
            if overlap.any()
            else ""
        )
        check_shots(self.shots, pools.classes, pools.counts(pools.support & ~pools.query), pools.name, note)

    def episodes(self, pools: Pools) -> list[Episode]:
        """The single episode as a list, so callers can treat both protocols alike."""
        return [self.episode(pools)]

    def reported_queries(self, episodes: list[Episode]) -> int:
        """Every query-pool clip of the split."""
        return len(episodes[0].query)

    def episode(self, pools: Pools) -> Episode:
        """Validate, then draw the fixed support set; queries are every query-pool row, ascending."""
        self.validate(pools)
        seed = derive_seed(self.seed, self.dataset, self.shots, 0)
        rng = np.random.default_rng(seed)
        all_classes = np.arange(len(pools.classes))
        candidates = pools.members(pools.support & ~pools.query)
        support = pools.draw_support(rng, candidates, all_classes, self.shots, "the paper split")
        query = np.flatnonzero(pools.query)
        return Episode(
            index=0,
            seed=seed,
            classes=pools.classes,
            support=support,
            support_labels=np.repeat(all_classes, self.shots),
            query=query,
            query_labels=np.searchsorted(pools.classes, pools.labels[query]),
            query_label_sets=pools.local_sets(query, pools.classes),
            support_label_sets=pools.local_sets(support, pools.classes),
        )
