"""N-way K-shot episodes, each from a seed of its own (docs/design/protocols.md#episodic)."""

from __future__ import annotations

import numpy as np

from calm.errors import ProtocolError
from calm.protocols.base import Protocol
from calm.protocols.checks import (
    check_class_count,
    check_positive,
    check_queries_exist,
    check_shots,
    is_int,
    list_classes,
)
from calm.protocols.episodes import Episode, derive_seed
from calm.protocols.pools import Pools


class EpisodicProtocol(Protocol):
    """N-way K-shot episodes: support from the support pool, queries from the query pool.

    ``ways=None`` uses every class that has clips in either pool. Support and query sets are always
    disjoint, also when the two pools overlap (a dataset without an official split): support is
    drawn first and queries come from the query pool minus the chosen support clips. Episode ``e``
    depends only on ``derive_seed(seed, dataset, shots, e)``, so adding a method, a setting or more
    episodes never changes an earlier one.

    ``configs/protocol/episodic.yaml`` names this class by ``_target_`` and interpolates every
    argument from the top-level keys (``shots: ${shots}``, ``dataset: ${dataset.name}``, ...), so
    ``shots=5`` on the command line keeps working; ``name`` is the config's name, kept for reports.
    """

    def __init__(
        self,
        shots: int,
        queries: int,
        episodes: int,
        seed: int,
        dataset: str,
        ways: int | None = None,
        name: str = "episodic",
        authors_modes: bool = False,
    ) -> None:
        self.authors_modes = authors_modes
        self.shots = shots
        self.queries = queries
        self.n_episodes = episodes
        self.seed = seed
        self.dataset = dataset
        self.ways = ways
        self.name = name

    def __repr__(self) -> str:
        return (
            f"EpisodicProtocol(shots={self.shots}, queries={self.queries}, "
            f"episodes={self.n_episodes}, seed={self.seed}, dataset={self.dataset!r}, "
            f"ways={self.ways})"
        )

    def validate(self, pools: Pools) -> None:
        """Raise ``ProtocolError`` if these settings cannot be met by these pools.

        Cheap (labels and masks only), so it runs before any model is loaded. A multi-label clip
        counts for every class it holds (a necessary condition: a multi-label draw that still runs
        short raises from ``episodes``).
        """
        self._check_settings()
        n_classes = len(pools.classes)
        check_class_count(n_classes)
        if self.ways is not None and self.ways > n_classes:
            raise ProtocolError(
                f"ways={self.ways} but the dataset has only {n_classes} classes.",
                f"Set `ways` to at most {n_classes}, or leave it unset (null) to use all classes.",
            )

        n_support = pools.counts(pools.support)
        n_query = pools.counts(pools.query)
        # Support is drawn first; in the worst case it takes min(shots, overlap)
        # clips that the query pool would otherwise offer.
        n_overlap = pools.counts(pools.support & pools.query)
        n_query_free = n_query - np.minimum(self.shots, n_overlap)

        check_queries_exist(pools.classes, n_query, pools.name)
        check_shots(self.shots, pools.classes, n_support, pools.name, "")
        short = n_query_free < self.queries
        if short.any():
            overlap_note = (
                " (clips in both pools that may be drawn as support are not counted)" if n_overlap.any() else ""
            )
            most = int(n_query_free.min())
            fix = (
                f"Lower `queries` to at most {most}, or add test clips for these classes."
                if most >= 1
                else "Lower `shots` (support clips are taken from the shared pool first), "
                "or add test clips for these classes."
            )
            raise ProtocolError(
                f"queries={self.queries} but these classes have fewer query-pool (test) "
                f"clips{overlap_note}: {list_classes(pools.classes[short], n_query_free[short], pools.name)}.",
                fix,
            )

    def episodes(self, pools: Pools) -> list[Episode]:
        """Validate, then draw every episode; each from its own derived seed."""
        self.validate(pools)
        return [self._draw(e, pools) for e in range(self.n_episodes)]

    def reported_queries(self, episodes: list[Episode]) -> int:
        """Queries per class, as configured."""
        return self.queries

    def _draw(self, e: int, pools: Pools) -> Episode:
        seed = derive_seed(self.seed, self.dataset, self.shots, e)
        rng = np.random.default_rng(seed)
        chosen = self._choose_classes(rng, len(pools.classes))
        classes = pools.classes[chosen]
        support, query = pools.draw_episode(rng, chosen, self.shots, self.queries, f"episode {e}")
        return Episode(
            index=e,
            seed=seed,
            classes=classes,
            support=support,
            support_labels=np.repeat(np.arange(len(chosen)), self.shots),
            query=query,
            query_labels=np.repeat(np.arange(len(chosen)), self.queries),
            query_label_sets=pools.local_sets(query, classes),
            support_label_sets=pools.local_sets(support, classes),
        )

    def _choose_classes(self, rng: np.random.Generator, n_classes: int) -> np.ndarray:
        if self.ways is None or self.ways >= n_classes:
            return np.arange(n_classes)
        return np.sort(rng.choice(n_classes, size=self.ways, replace=False))

    def _check_settings(self) -> None:
        for name, value in (
            ("shots", self.shots),
            ("queries", self.queries),
            ("episodes", self.n_episodes),
        ):
            check_positive(name, value)
        if self.ways is not None and (not is_int(self.ways) or self.ways < 2):
            raise ProtocolError(
                f"`ways` must be at least 2 (or unset for all classes), got {self.ways!r}.",
                "Set `ways` to 2 or more, or leave it unset (null) to use all classes.",
            )
