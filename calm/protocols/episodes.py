"""What a protocol returns: episodes of row indices, their seeds, and their label indicators."""

from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np

from calm.storage.digests import seeded_int

EPISODE_SEED_TAG = "calm.episode.v1"


def derive_seed(seed: int, dataset: str, shots: int, episode: int) -> int:
    """Seed of one episode, from (seed, dataset, shots, episode) only.

    Adding a method, a setting or more episodes never moves an earlier episode, and every method
    sees the same ones. The value is the same on every machine, process and Python version
    (``calm.storage.digests.seeded_int``): a non-negative 63-bit int, valid for numpy and torch.
    """
    return seeded_int(
        EPISODE_SEED_TAG, operator.index(seed), str(dataset), operator.index(shots), operator.index(episode)
    )


@dataclass(frozen=True, eq=False)
class Episode:
    """One support/query draw, as row indices into the clip table.

    ``classes`` holds the original class ids, sorted ascending; the episode-local
    labels (``support_labels``, ``query_labels``) are positions in ``classes``,
    so methods always see labels 0..ways-1. Arrays are read-only.
    ``query_label_sets`` and ``support_label_sets`` (multi-label only) hold every
    local label of each query and support clip. ``reliability`` and ``reliability_labels``
    name a reliability set V apart from the support set (protocol.reliability=val: the clips
    CALM measures reliabilities on, against the support's prototypes); None: V = S.
    """

    index: int
    seed: int
    classes: np.ndarray
    support: np.ndarray
    support_labels: np.ndarray
    query: np.ndarray
    query_labels: np.ndarray
    query_label_sets: tuple[tuple[int, ...], ...] | None = None
    support_label_sets: tuple[tuple[int, ...], ...] | None = None
    reliability: np.ndarray | None = None
    reliability_labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        if (self.reliability is None) != (self.reliability_labels is None):
            raise ValueError("give both reliability and reliability_labels, or neither")
        for name in (
            "classes",
            "support",
            "support_labels",
            "query",
            "query_labels",
            "reliability",
            "reliability_labels",
        ):
            if getattr(self, name) is None:
                continue
            arr = np.array(getattr(self, name), dtype=np.int64)
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        for name, rows in (("query_label_sets", self.query), ("support_label_sets", self.support)):
            given = getattr(self, name)
            if given is not None:
                sets = tuple(tuple(sorted({int(c) for c in s})) for s in given)
                if len(sets) != len(rows):
                    raise ValueError(f"{len(sets)} {name} for {len(rows)} clips")
                object.__setattr__(self, name, sets)

    @property
    def ways(self) -> int:
        """Number of classes in this episode."""
        return len(self.classes)

    @property
    def multi_label(self) -> bool:
        return self.query_label_sets is not None

    @property
    def support_counts(self) -> np.ndarray:
        """Support clips per class (local label order): ``shots`` each, unless the draw was
        ``all`` or ``at_most`` (protocol=paper), which give unequal counts."""
        return np.bincount(self.support_labels, minlength=self.ways)

    @property
    def label_sets(self) -> tuple[tuple[int, ...], ...]:
        """Every local label of each query: ``query_label_sets``, or one label each when single-label."""
        if self.query_label_sets is not None:
            return self.query_label_sets
        return tuple((int(y),) for y in self.query_labels)


def multilabel_targets(episode: Episode, split: str = "query") -> np.ndarray:
    """(clips, ways) boolean indicator of each query's (or support clip's) labels, for exact match
    and the grid; one-hot for single-label episodes."""
    if split not in ("query", "support"):
        raise ValueError(f"split must be 'query' or 'support', got {split!r}")
    if split == "query":
        sets = episode.label_sets
    elif episode.support_label_sets is not None:
        sets = episode.support_label_sets
    else:
        sets = tuple((int(y),) for y in episode.support_labels)
    targets = np.zeros((len(sets), episode.ways), dtype=bool)
    for i, labels in enumerate(sets):
        targets[i, list(labels)] = True
    return targets
