"""Evaluation protocols: which clips form the support and query sets.

A protocol works on three aligned arrays describing the clip table: integer
``labels`` (original class ids), and two boolean masks saying which clips may be
drawn as support (the training pool) and which as queries (the test pool).
It only ever returns row indices, never features, so it can be validated and
run before any model is loaded (DESIGN section 8).

``EpisodicProtocol`` draws N-way K-shot episodes whose seeds are derived from
(seed, dataset, shots, episode) alone, so adding a method or a setting never
changes the episodes and every method sees the same ones. A fixed-split
protocol (``PaperProtocol``) can sit next to it: it returns a single
``Episode`` (the whole test split as query) and reuses the pool checks below.
"""

from __future__ import annotations

import hashlib
import json
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from calm.errors import ProtocolError

__all__ = ["Episode", "EpisodicProtocol", "derive_seed"]

_SEED_TAG = "calm.episode.v1"
_MAX_LISTED = 10  # classes named in one error message before "and N more"


def derive_seed(seed: int, dataset: str, shots: int, episode: int) -> int:
    """Seed of one episode, from (seed, dataset, shots, episode) only.

    Uses SHA-256 of a canonical JSON string rather than ``hash()`` (salted per
    process), so the value is the same on every machine, process and Python
    version. Returns a non-negative 63-bit int, valid for numpy and torch.
    """
    key = json.dumps(
        [
            _SEED_TAG,
            operator.index(seed),
            str(dataset),
            operator.index(shots),
            operator.index(episode),
        ],
        separators=(",", ":"),
    )
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


@dataclass(frozen=True, eq=False)
class Episode:
    """One support/query draw, as row indices into the clip table.

    ``classes`` holds the original class ids, sorted ascending; the episode-local
    labels (``support_labels``, ``query_labels``) are positions in ``classes``,
    so methods always see labels 0..ways-1. Arrays are read-only.
    """

    index: int
    seed: int
    classes: np.ndarray
    support: np.ndarray
    support_labels: np.ndarray
    query: np.ndarray
    query_labels: np.ndarray

    def __post_init__(self) -> None:
        for name in ("classes", "support", "support_labels", "query", "query_labels"):
            arr = np.array(getattr(self, name), dtype=np.int64)
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)

    @property
    def ways(self) -> int:
        """Number of classes in this episode."""
        return len(self.classes)


class EpisodicProtocol:
    """N-way K-shot episodes: support from the support pool, queries from the query pool.

    ``ways=None`` uses every class that has clips in either pool. Support and
    query sets are always disjoint, also when the two pools overlap (a dataset
    without an official split): support is drawn first and queries come from
    the query pool minus the chosen support clips.
    """

    def __init__(
        self,
        shots: int,
        queries: int,
        episodes: int,
        seed: int,
        dataset: str,
        ways: int | None = None,
    ) -> None:
        self.shots = shots
        self.queries = queries
        self.n_episodes = episodes
        self.seed = seed
        self.dataset = dataset
        self.ways = ways

    def __repr__(self) -> str:
        return (
            f"EpisodicProtocol(shots={self.shots}, queries={self.queries}, "
            f"episodes={self.n_episodes}, seed={self.seed}, dataset={self.dataset!r}, "
            f"ways={self.ways})"
        )

    def validate(
        self,
        labels: np.ndarray,
        is_support_pool: np.ndarray,
        is_query_pool: np.ndarray,
        class_names: Sequence[str] | None = None,
    ) -> None:
        """Raise ``ProtocolError`` if these settings cannot be met by this clip table.

        Cheap (labels and masks only), so it runs before any model is loaded.
        ``class_names[i]`` names class id ``i`` in the messages.
        """
        self._check_settings()
        labels, support_pool, query_pool = _check_table(labels, is_support_pool, is_query_pool)
        classes = _classes(labels, support_pool, query_pool)
        n_classes = len(classes)
        if n_classes < 2:
            raise ProtocolError(
                f"The clip table has {n_classes} class(es) with clips in the support or query "
                "pool; classification needs at least 2.",
                "Check the dataset path and split settings; the pools may be empty.",
            )
        if self.ways is not None and self.ways > n_classes:
            raise ProtocolError(
                f"ways={self.ways} but the dataset has only {n_classes} classes.",
                f"Set `ways` to at most {n_classes}, or leave it unset (null) to use all classes.",
            )

        n_support = _count_per_class(labels, support_pool, classes)
        n_query = _count_per_class(labels, query_pool, classes)
        # Support is drawn first; in the worst case it takes min(shots, overlap)
        # clips that the query pool would otherwise offer.
        n_overlap = _count_per_class(labels, support_pool & query_pool, classes)
        n_query_free = n_query - np.minimum(self.shots, n_overlap)

        names = _namer(class_names)
        empty = classes[n_query == 0]
        if len(empty):
            raise ProtocolError(
                "These classes have no clips in the query (test) pool: "
                f"{_list_classes(empty, None, names)}.",
                "Add test clips for these classes, or remove them from the dataset table.",
            )
        short = n_support < self.shots
        if short.any():
            raise ProtocolError(
                f"shots={self.shots} but these classes have fewer support-pool (training) "
                f"clips: {_list_classes(classes[short], n_support[short], names)}.",
                f"Lower `shots` to at most {int(n_support.min())}, or add training clips "
                "for these classes.",
            )
        short = n_query_free < self.queries
        if short.any():
            overlap_note = (
                " (clips in both pools that may be drawn as support are not counted)"
                if n_overlap.any()
                else ""
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
                f"clips{overlap_note}: {_list_classes(classes[short], n_query_free[short], names)}.",
                fix,
            )

    def episodes(
        self,
        labels: np.ndarray,
        is_support_pool: np.ndarray,
        is_query_pool: np.ndarray,
        class_names: Sequence[str] | None = None,
    ) -> list[Episode]:
        """Validate, then draw every episode; each from its own derived seed."""
        self.validate(labels, is_support_pool, is_query_pool, class_names)
        labels, support_pool, query_pool = _check_table(labels, is_support_pool, is_query_pool)
        classes = _classes(labels, support_pool, query_pool)
        support_idx = _rows_per_class(labels, support_pool, classes)
        query_idx = _rows_per_class(labels, query_pool, classes)
        return [self._draw(e, classes, support_idx, query_idx) for e in range(self.n_episodes)]

    def _draw(
        self,
        e: int,
        all_classes: np.ndarray,
        support_idx: list[np.ndarray],
        query_idx: list[np.ndarray],
    ) -> Episode:
        seed = derive_seed(self.seed, self.dataset, self.shots, e)
        rng = np.random.default_rng(seed)
        if self.ways is None or self.ways >= len(all_classes):
            chosen = np.arange(len(all_classes))
        else:
            chosen = np.sort(rng.choice(len(all_classes), size=self.ways, replace=False))
        support, support_labels, query, query_labels = [], [], [], []
        for local, k in enumerate(chosen):
            s = rng.choice(support_idx[k], size=self.shots, replace=False)
            pool = np.setdiff1d(query_idx[k], s, assume_unique=True)
            q = rng.choice(pool, size=self.queries, replace=False)
            support.append(s)
            query.append(q)
            support_labels.append(np.full(self.shots, local))
            query_labels.append(np.full(self.queries, local))
        return Episode(
            index=e,
            seed=seed,
            classes=all_classes[chosen],
            support=np.concatenate(support),
            support_labels=np.concatenate(support_labels),
            query=np.concatenate(query),
            query_labels=np.concatenate(query_labels),
        )

    def _check_settings(self) -> None:
        for name, value in (
            ("shots", self.shots),
            ("queries", self.queries),
            ("episodes", self.n_episodes),
        ):
            if not _is_int(value) or value < 1:
                raise ProtocolError(
                    f"`{name}` must be a positive integer, got {value!r}.",
                    f"Set `{name}` to 1 or more.",
                )
        if self.ways is not None and (not _is_int(self.ways) or self.ways < 2):
            raise ProtocolError(
                f"`ways` must be at least 2 (or unset for all classes), got {self.ways!r}.",
                "Set `ways` to 2 or more, or leave it unset (null) to use all classes.",
            )


# --- pool checks shared by protocols ------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_table(
    labels: np.ndarray, is_support_pool: np.ndarray, is_query_pool: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return labels and masks as 1-D int64 / bool arrays of one length, or raise."""
    labels = np.asarray(labels)
    support_pool = np.asarray(is_support_pool)
    query_pool = np.asarray(is_query_pool)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ProtocolError(
            f"Protocol labels must be a 1-D array of integer class ids, got shape "
            f"{labels.shape} and dtype {labels.dtype}.",
            "Pass the clip table's integer label ids (one per clip), not class names.",
        )
    for name, mask in (("is_support_pool", support_pool), ("is_query_pool", query_pool)):
        if mask.shape != labels.shape or mask.dtype != np.bool_:
            raise ProtocolError(
                f"`{name}` must be a boolean array with one entry per clip ({labels.shape}), "
                f"got shape {mask.shape} and dtype {mask.dtype}.",
                "Build the pool masks from the same clip table as the labels.",
            )
    return labels.astype(np.int64, copy=False), support_pool, query_pool


def _classes(labels: np.ndarray, support_pool: np.ndarray, query_pool: np.ndarray) -> np.ndarray:
    """Class ids with at least one clip in either pool, ascending."""
    return np.unique(labels[support_pool | query_pool])


def _count_per_class(labels: np.ndarray, mask: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Clips of each class in ``classes`` that lie in ``mask`` (mask rows must be in ``classes``)."""
    return np.bincount(np.searchsorted(classes, labels[mask]), minlength=len(classes))


def _rows_per_class(labels: np.ndarray, mask: np.ndarray, classes: np.ndarray) -> list[np.ndarray]:
    """Row indices in ``mask`` for each class in ``classes``, each ascending; one pass, not C."""
    rows = np.flatnonzero(mask)
    rows = rows[np.argsort(labels[rows], kind="stable")]
    return np.split(rows, np.cumsum(_count_per_class(labels, mask, classes))[:-1])


def _namer(class_names: Sequence[str] | None) -> Callable[[int], str]:
    def name(c: int) -> str:
        if class_names is not None and 0 <= c < len(class_names):
            return repr(str(class_names[c]))
        return f"class {c}"

    return name


def _list_classes(
    classes: np.ndarray, counts: np.ndarray | None, name: Callable[[int], str]
) -> str:
    """'dog' (3), 'cat' (4), ... and N more: enough to act on without flooding the log."""
    items = [name(int(c)) for c in classes[:_MAX_LISTED]]
    if counts is not None:
        items = [f"{item} ({int(n)})" for item, n in zip(items, counts[:_MAX_LISTED], strict=True)]
    more = len(classes) - _MAX_LISTED
    return ", ".join(items) + (f" and {more} more" if more > 0 else "")
