"""The paper's fixed split: one support set per class and the whole test pool, as one episode."""

from __future__ import annotations

import numpy as np

from calm.data.table import RELIABILITY_SPLIT
from calm.errors import ProtocolError
from calm.protocols.base import Protocol
from calm.protocols.checks import (
    check_class_count,
    check_positive,
    check_queries_exist,
    check_shots,
    check_some_support,
    is_int,
    list_classes,
)
from calm.protocols.episodes import Episode, derive_seed
from calm.protocols.pools import Pools
from calm.protocols.support_draws import check_support_draw, support_sizes

RELIABILITY_SETS = ("support", "val")


class PaperProtocol(Protocol):
    """The paper's fixed split: one support set of ``shots`` clips per class, the whole test pool as queries.

    The support set is drawn once, from the seed derived from (seed, dataset, shots, 0), over every
    class. It comes only from clips of the support pool that are not also in the query pool: every
    query-pool clip is scored, so a clip in both pools would otherwise be scored against a prototype
    containing itself, and ESC-50's test fold could reach the support set (the reference code's
    mistake). Reliability is measured on this support set and every method's grid
    (``configs/grids/<dataset>.yaml``) is evaluated on the single episode (``calm.reports.paper_grid``).

    ``configs/protocol/paper.yaml`` names this class by ``_target_``; ``shots`` and ``dataset``
    interpolate the top-level keys. The selection settings of the split, ``folds`` and ``cv_seed``
    (support-set cross-validation), do not change the draw: they are accepted and kept as attributes
    so the config group instantiates as written, with no key filtered out, and the grid report reads
    them from the same config.
    ``authors_modes`` is the switch every `${calm.authors:...}` config value reads (calm.config.authors_modes).
    ``selection_metric`` (accuracy | macro_f1), like ``folds``, is read by the grid report, not the draw.

    ``reliability`` names the reliability set V: ``support`` (V = S, the default) or ``val``: every
    clip of the table's ``val`` split (the authors' val file), labelled with the same class list;
    every class needs a val clip (``ProtocolError`` naming those without). CALM (and GRW) measure
    reliabilities on V with prototypes from S, and the grid report adds a ``[val]`` choice.

    The reference code's support sets (docs/fidelity.md), each an opt-in:
    ``support_draw`` (``calm.protocols.support_draws``): ``random`` (default), ``file_order`` (the
    first ``shots`` candidates of each class in table order) or ``all`` (every candidate; ``shots``
    ignored); ``at_most``: a class short of ``shots`` gives what it has. Either can leave unequal
    counts per class (``Episode.support_counts``). Candidates are the training pool minus the test
    pool; the authors' own support files, test clips among them, are replayed with dataset=manifest
    (the shared files are measured and marked, calm.protocols.row_marks).
    """

    n_episodes = 1

    def __init__(
        self,
        shots: int,
        seed: int = 42,
        dataset: str = "",
        folds: int = 5,
        cv_seed: int = 0,
        name: str = "paper",
        authors_modes: bool = True,
        support_draw: str = "random",
        at_most: bool = False,
        reliability: str = "support",
        selection_metric: str = "accuracy",
    ) -> None:
        if reliability not in RELIABILITY_SETS:
            raise ProtocolError(
                f"`reliability` must be one of {', '.join(RELIABILITY_SETS)}, got {reliability!r}.",
                "Set protocol.reliability=support (V = S) or val (the table's val split).",
            )
        self.reliability = reliability
        self.selection_metric = selection_metric
        check_support_draw(support_draw, at_most)
        self.authors_modes = authors_modes
        self.support_draw = support_draw
        self.at_most = at_most
        self.shots = shots
        self.seed = seed
        self.dataset = dataset
        self.folds = folds
        self.cv_seed = cv_seed
        self.name = name

    def __repr__(self) -> str:
        return (
            f"PaperProtocol(shots={self.shots}, seed={self.seed}, dataset={self.dataset!r}, "
            f"support_draw={self.support_draw!r}, at_most={self.at_most})"
        )

    def candidates(self, pools: Pools) -> list[np.ndarray]:
        """Per class, the rows a support set is drawn from, in draw order: the support pool minus the
        query pool."""
        return pools.members(pools.support & ~pools.query)

    def validate(self, pools: Pools) -> None:
        """Raise ``ProtocolError`` if the fixed split cannot be drawn; labels and masks only."""
        check_positive("shots", self.shots)
        if not is_int(self.seed) or self.seed < 0:
            raise ProtocolError(
                f"`seed` must be a non-negative integer, got {self.seed!r}.",
                "Set the protocol seed to e.g. 42 (the paper's).",
            )
        check_class_count(len(pools.classes))
        check_queries_exist(pools.classes, pools.counts(pools.query), pools.name)
        overlap = pools.support & pools.query
        note = (
            f" ({int(overlap.sum())} clips in both pools are never used as support, since every test clip is scored)"
            if overlap.any()
            else ""
        )
        if self.reliability == "val":
            check_val_pool(pools)
        available = np.array([len(rows) for rows in self.candidates(pools)], dtype=np.int64)
        if self.at_most or self.support_draw == "all":
            check_some_support(pools.classes, available, pools.name, note)
        else:
            check_shots(self.shots, pools.classes, available, pools.name, note)

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
        candidates = self.candidates(pools)
        sizes = support_sizes(self.support_draw, self.shots, self.at_most, [len(rows) for rows in candidates])
        per_class = pools.draw_support(
            rng, candidates, all_classes, sizes, "the paper split", self.support_draw, self.at_most
        )
        support = np.concatenate(per_class)
        query = np.flatnonzero(pools.query)
        reliability = np.flatnonzero(pools.val) if self.reliability == "val" else None
        return Episode(
            index=0,
            seed=seed,
            classes=pools.classes,
            support=support,
            support_labels=np.repeat(all_classes, [len(rows) for rows in per_class]),
            query=query,
            query_labels=np.searchsorted(pools.classes, pools.labels[query]),
            query_label_sets=pools.local_sets(query, pools.classes),
            support_label_sets=pools.local_sets(support, pools.classes),
            reliability=reliability,
            reliability_labels=None
            if reliability is None
            else np.searchsorted(pools.classes, pools.labels[reliability]),
        )


def check_val_pool(pools: Pools) -> None:
    """protocol.reliability=val needs val clips of every class (a class's reliability is a mean over its
    clips in V)."""
    if pools.val is None:
        raise ProtocolError(
            f"protocol.reliability=val, but the table has no clip in the {RELIABILITY_SPLIT!r} split.",
            "Use a table with val clips (e.g. dataset=manifest with a val file), or protocol.reliability=support.",
        )
    missing = pools.counts(pools.val) == 0
    if missing.any():
        raise ProtocolError(
            f"protocol.reliability=val, but these classes have no val clip: "
            f"{list_classes(pools.classes[missing], None, pools.name)}.",
            "Add val clips of these classes, or use protocol.reliability=support.",
        )
