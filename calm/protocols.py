"""Evaluation protocols: which clips form the support and query sets.

A protocol works on three aligned arrays describing the clip table: integer
``labels`` (original class ids), and two boolean masks saying which clips may be
drawn as support (the training pool) and which as queries (the test pool).
It only ever returns row indices, never features, so it can be validated and
run before any model is loaded (DESIGN section 8).

``EpisodicProtocol`` draws N-way K-shot episodes whose seeds are derived from
(seed, dataset, shots, episode) alone, so adding a method or a setting never
changes the episodes and every method sees the same ones. ``PaperProtocol`` is
the paper's fixed split: one support set and the whole test split, returned as
a single ``Episode``.

Multi-label datasets (AudioSet) pass ``label_sets`` (every positive class of
each row; ``labels`` stays the first one) to ``validate``/``episodes``. The
estimators are single-label, so a multi-label episode is built as follows:

- Support: for each class c, ``shots`` clips whose label set contains c, each
  labelled c. A clip is drawn for one class at most (classes are served rarest
  first, so a common class never uses up a rare class's clips): prototypes of c
  are means of clips that contain c, as in the reference's one question per
  positive label.
- Queries: drawn per class the same way (episodic) or the whole test pool
  (paper). ``query_labels`` holds one of each query's classes (the class it was
  drawn for; the clip's first label in the paper protocol), and
  ``query_label_sets`` all of them (restricted to the episode's classes).
- Scoring: exact match (``calm.metrics.exact_match``) of the true set against
  the query's top-|true set| classes by score (``calm.metrics.top_label_sets``):
  the estimator is told how many labels a clip has, and must name them all.
  ``multilabel_targets`` gives the (clips, ways) indicator matrix of either set.
"""

from __future__ import annotations

import hashlib
import json
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from calm.errors import ProtocolError

__all__ = ["Episode", "EpisodicProtocol", "PaperProtocol", "derive_seed", "multilabel_targets"]

_SEED_TAG = "calm.episode.v1"
_MAX_LISTED = 10  # classes named in one error message before "and N more"

LabelSets = Sequence[Sequence[int]]


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
    ``query_label_sets`` and ``support_label_sets`` (multi-label only) hold every
    local label of each query and support clip.
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

    def __post_init__(self) -> None:
        for name in ("classes", "support", "support_labels", "query", "query_labels"):
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
        label_sets: LabelSets | None = None,
    ) -> None:
        """Raise ``ProtocolError`` if these settings cannot be met by this clip table.

        Cheap (labels and masks only), so it runs before any model is loaded.
        ``class_names[i]`` names class id ``i`` in the messages. With ``label_sets``
        a clip counts for every class it holds (a necessary condition: a multi-label
        draw that still runs short raises from ``episodes``).
        """
        self._check_settings()
        pools = _Pools.build(labels, is_support_pool, is_query_pool, label_sets)
        n_classes = len(pools.classes)
        _check_class_count(n_classes)
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

        names = _namer(class_names)
        _check_queries_exist(pools.classes, n_query, names)
        _check_shots(self.shots, pools.classes, n_support, names, "")
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
                f"clips{overlap_note}: {_list_classes(pools.classes[short], n_query_free[short], names)}.",
                fix,
            )

    def episodes(
        self,
        labels: np.ndarray,
        is_support_pool: np.ndarray,
        is_query_pool: np.ndarray,
        class_names: Sequence[str] | None = None,
        label_sets: LabelSets | None = None,
    ) -> list[Episode]:
        """Validate, then draw every episode; each from its own derived seed."""
        self.validate(labels, is_support_pool, is_query_pool, class_names, label_sets)
        pools = _Pools.build(labels, is_support_pool, is_query_pool, label_sets)
        support_idx = pools.members(pools.support)
        query_idx = pools.members(pools.query)
        if pools.sets is None:
            return [self._draw(e, pools.classes, support_idx, query_idx) for e in range(self.n_episodes)]
        names = _namer(class_names)
        return [self._draw_multi(e, pools, support_idx, query_idx, names) for e in range(self.n_episodes)]

    def _choose_classes(self, rng: np.random.Generator, n_classes: int) -> np.ndarray:
        if self.ways is None or self.ways >= n_classes:
            return np.arange(n_classes)
        return np.sort(rng.choice(n_classes, size=self.ways, replace=False))

    def _draw(
        self,
        e: int,
        all_classes: np.ndarray,
        support_idx: list[np.ndarray],
        query_idx: list[np.ndarray],
    ) -> Episode:
        seed = derive_seed(self.seed, self.dataset, self.shots, e)
        rng = np.random.default_rng(seed)
        chosen = self._choose_classes(rng, len(all_classes))
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

    def _draw_multi(
        self,
        e: int,
        pools: _Pools,
        support_idx: list[np.ndarray],
        query_idx: list[np.ndarray],
        names: Callable[[int], str],
    ) -> Episode:
        """A multi-label episode: disjoint per-class draws, rarest class first (module docstring)."""
        seed = derive_seed(self.seed, self.dataset, self.shots, e)
        rng = np.random.default_rng(seed)
        chosen = self._choose_classes(rng, len(pools.classes))
        where = f"episode {e}"
        support = _draw_disjoint(rng, chosen, support_idx, self.shots, np.empty(0, np.int64),
                                 pools.classes, names, "support", where)
        taken = np.concatenate(support)
        query = _draw_disjoint(rng, chosen, query_idx, self.queries, taken, pools.classes, names, "query", where)
        query_rows = np.concatenate(query)
        return Episode(
            index=e,
            seed=seed,
            classes=pools.classes[chosen],
            support=taken,
            support_labels=np.repeat(np.arange(len(chosen)), self.shots),
            query=query_rows,
            query_labels=np.repeat(np.arange(len(chosen)), self.queries),
            query_label_sets=pools.local_sets(query_rows, pools.classes[chosen]),
            support_label_sets=pools.local_sets(taken, pools.classes[chosen]),
        )

    def _check_settings(self) -> None:
        for name, value in (
            ("shots", self.shots),
            ("queries", self.queries),
            ("episodes", self.n_episodes),
        ):
            _check_positive(name, value)
        if self.ways is not None and (not _is_int(self.ways) or self.ways < 2):
            raise ProtocolError(
                f"`ways` must be at least 2 (or unset for all classes), got {self.ways!r}.",
                "Set `ways` to 2 or more, or leave it unset (null) to use all classes.",
            )


class PaperProtocol:
    """The paper's fixed split: one support set of ``shots`` clips per class, the whole test pool as queries.

    The support set is drawn once, from the seed derived from (seed, dataset,
    shots, 0), over every class. It comes only from clips of the support pool
    that are not also in the query pool: every query-pool clip is scored, so a
    clip in both pools would otherwise be scored against a prototype containing
    itself, and ESC-50's test fold could reach the support set (the reference
    code's mistake). Reliability is measured on this support set and a
    hyper-parameter grid is evaluated on the single episode (``calm.grid``).
    """

    n_episodes = 1

    def __init__(self, shots: int, seed: int = 42, dataset: str = "") -> None:
        self.shots = shots
        self.seed = seed
        self.dataset = dataset

    def __repr__(self) -> str:
        return f"PaperProtocol(shots={self.shots}, seed={self.seed}, dataset={self.dataset!r})"

    def validate(
        self,
        labels: np.ndarray,
        is_support_pool: np.ndarray,
        is_query_pool: np.ndarray,
        class_names: Sequence[str] | None = None,
        label_sets: LabelSets | None = None,
    ) -> None:
        """Raise ``ProtocolError`` if the fixed split cannot be drawn; labels and masks only."""
        _check_positive("shots", self.shots)
        if not _is_int(self.seed) or self.seed < 0:
            raise ProtocolError(f"`seed` must be a non-negative integer, got {self.seed!r}.",
                                "Set the protocol seed to e.g. 42 (the paper's).")
        pools = _Pools.build(labels, is_support_pool, is_query_pool, label_sets)
        _check_class_count(len(pools.classes))
        names = _namer(class_names)
        _check_queries_exist(pools.classes, pools.counts(pools.query), names)
        overlap = pools.support & pools.query
        note = (
            f" ({int(overlap.sum())} clips in both pools are never used as support, since every "
            "test clip is scored)"
            if overlap.any()
            else ""
        )
        _check_shots(self.shots, pools.classes, pools.counts(pools.support & ~pools.query), names, note)

    def episodes(
        self,
        labels: np.ndarray,
        is_support_pool: np.ndarray,
        is_query_pool: np.ndarray,
        class_names: Sequence[str] | None = None,
        label_sets: LabelSets | None = None,
    ) -> list[Episode]:
        """The single episode as a list, so callers can treat both protocols alike."""
        return [self.episode(labels, is_support_pool, is_query_pool, class_names, label_sets)]

    def episode(
        self,
        labels: np.ndarray,
        is_support_pool: np.ndarray,
        is_query_pool: np.ndarray,
        class_names: Sequence[str] | None = None,
        label_sets: LabelSets | None = None,
    ) -> Episode:
        """Validate, then draw the fixed support set; queries are every query-pool row, ascending."""
        self.validate(labels, is_support_pool, is_query_pool, class_names, label_sets)
        pools = _Pools.build(labels, is_support_pool, is_query_pool, label_sets)
        seed = derive_seed(self.seed, self.dataset, self.shots, 0)
        rng = np.random.default_rng(seed)
        candidates = pools.members(pools.support & ~pools.query)
        all_classes = np.arange(len(pools.classes))
        if pools.sets is None:
            support = [rng.choice(rows, size=self.shots, replace=False) for rows in candidates]
        else:
            support = _draw_disjoint(rng, all_classes, candidates, self.shots, np.empty(0, np.int64),
                                     pools.classes, _namer(class_names), "support", "the paper split")
        query = np.flatnonzero(pools.query)
        support_rows = np.concatenate(support)
        return Episode(
            index=0,
            seed=seed,
            classes=pools.classes,
            support=support_rows,
            support_labels=np.repeat(all_classes, self.shots),
            query=query,
            query_labels=np.searchsorted(pools.classes, pools.labels[query]),
            query_label_sets=None if pools.sets is None else pools.local_sets(query, pools.classes),
            support_label_sets=None if pools.sets is None else pools.local_sets(support_rows, pools.classes),
        )


# --- pool checks shared by protocols ------------------------------------------------


@dataclass(frozen=True)
class _Pools:
    """The checked table: labels, pool masks, label sets (multi-label) and the classes in play."""

    labels: np.ndarray
    support: np.ndarray
    query: np.ndarray
    sets: tuple[frozenset[int], ...] | None
    classes: np.ndarray

    @classmethod
    def build(
        cls,
        labels: np.ndarray,
        is_support_pool: np.ndarray,
        is_query_pool: np.ndarray,
        label_sets: LabelSets | None,
    ) -> _Pools:
        labels, support, query = _check_table(labels, is_support_pool, is_query_pool)
        if label_sets is None:
            return cls(labels, support, query, None, _classes(labels, support, query))
        sets = _check_label_sets(label_sets, labels, support | query)
        in_play = [c for row in np.flatnonzero(support | query) for c in sets[row]]
        return cls(labels, support, query, sets, np.unique(np.array(in_play, dtype=np.int64)))

    def members(self, mask: np.ndarray) -> list[np.ndarray]:
        """Rows in ``mask`` holding each class (its label, or any of its labels), each ascending."""
        if self.sets is None:
            return _rows_per_class(self.labels, mask, self.classes)
        position = {int(c): i for i, c in enumerate(self.classes)}
        buckets: list[list[int]] = [[] for _ in self.classes]
        for row in np.flatnonzero(mask):
            for c in self.sets[row]:
                buckets[position[c]].append(int(row))
        return [np.array(b, dtype=np.int64) for b in buckets]

    def counts(self, mask: np.ndarray) -> np.ndarray:
        if self.sets is None:
            return _count_per_class(self.labels, mask, self.classes)
        return np.array([len(rows) for rows in self.members(mask)], dtype=np.int64)

    def local_sets(self, rows: np.ndarray, episode_classes: np.ndarray) -> tuple[tuple[int, ...], ...]:
        """Each row's labels among ``episode_classes``, as positions in it."""
        sets = self.sets or ()
        kept = set(episode_classes.tolist())
        return tuple(
            tuple(int(i) for i in np.searchsorted(episode_classes, sorted(sets[r] & kept)))
            for r in rows
        )


def _draw_disjoint(
    rng: np.random.Generator,
    chosen: np.ndarray,
    members: list[np.ndarray],
    n: int,
    taken: np.ndarray,
    classes: np.ndarray,
    names: Callable[[int], str],
    what: str,
    where: str,
) -> list[np.ndarray]:
    """``n`` rows per chosen class, no row twice (nor one in ``taken``), rarest class first.

    Returns the rows in the order of ``chosen``. Multi-label clips hold several
    classes, so a class can run short even though validation counted enough.
    """
    drawn: dict[int, np.ndarray] = {}
    for k in sorted(chosen.tolist(), key=lambda k: (len(members[k]), k)):
        available = np.setdiff1d(members[k], taken, assume_unique=True)
        if len(available) < n:
            raise ProtocolError(
                f"In {where}, class {names(int(classes[k]))} has only {len(available)} {what} "
                f"clips left once the clips drawn for other classes are removed (a multi-label "
                f"clip is drawn for one class only); {n} are needed.",
                f"Lower `{'shots' if what == 'support' else 'queries'}`, or add clips of this class.",
            )
        drawn[k] = rng.choice(available, size=n, replace=False)
        taken = np.concatenate([taken, drawn[k]])
    return [drawn[k] for k in chosen.tolist()]


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_positive(name: str, value: object) -> None:
    if not _is_int(value) or value < 1:
        raise ProtocolError(
            f"`{name}` must be a positive integer, got {value!r}.",
            f"Set `{name}` to 1 or more.",
        )


def _check_class_count(n_classes: int) -> None:
    if n_classes < 2:
        raise ProtocolError(
            f"The clip table has {n_classes} class(es) with clips in the support or query "
            "pool; classification needs at least 2.",
            "Check the dataset path and split settings; the pools may be empty.",
        )


def _check_queries_exist(classes: np.ndarray, n_query: np.ndarray, names: Callable[[int], str]) -> None:
    empty = classes[n_query == 0]
    if len(empty):
        raise ProtocolError(
            "These classes have no clips in the query (test) pool: "
            f"{_list_classes(empty, None, names)}.",
            "Add test clips for these classes, or remove them from the dataset table.",
        )


def _check_shots(
    shots: int, classes: np.ndarray, n_support: np.ndarray, names: Callable[[int], str], note: str
) -> None:
    short = n_support < shots
    if short.any():
        raise ProtocolError(
            f"shots={shots} but these classes have fewer support-pool (training) "
            f"clips{note}: {_list_classes(classes[short], n_support[short], names)}.",
            f"Lower `shots` to at most {int(n_support.min())}, or add training clips "
            "for these classes.",
        )


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


def _check_label_sets(
    label_sets: LabelSets, labels: np.ndarray, in_pools: np.ndarray
) -> tuple[frozenset[int], ...]:
    """One set of integer class ids per row; rows in a pool hold their own ``labels`` entry."""
    if len(label_sets) != len(labels):
        raise ProtocolError(
            f"`label_sets` has {len(label_sets)} entries but the table has {len(labels)} clips.",
            "Pass every positive label of each clip of the same table (e.g. Clip.all_labels).",
        )
    sets = []
    for row, entry in enumerate(label_sets):
        values = [int(c) for c in entry if _is_int(c)]
        if len(values) != len(entry):
            raise ProtocolError(
                f"`label_sets[{row}]` must hold integer class ids, got {list(entry)!r}.",
                "Pass class ids (Clip.all_labels), not class names.",
            )
        sets.append(frozenset(values))
    bad = [row for row in np.flatnonzero(in_pools) if int(labels[row]) not in sets[row]]
    if bad:
        raise ProtocolError(
            f"{len(bad)} clips' `labels` entry is not among their `label_sets` (first: row {bad[0]}).",
            "Build labels and label_sets from the same clips: labels[i] is one of label_sets[i].",
        )
    return tuple(sets)


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
