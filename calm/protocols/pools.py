"""The support and query pools of one clip table, checked once and handed to every protocol.

A protocol works on the table's integer ``labels`` (original class ids) and two boolean masks:
which clips may be drawn as support (the training pool) and which as queries (the test pool). It
only ever returns row indices, never features, so it can be validated and run before any model is
loaded (docs/design/protocols.md#pools).

``Pools.build`` (or ``Pools.from_table``) returns ``Pools`` for a single-label table and
``MultiLabelPools`` when label sets are given. The two differ only in how a clip counts for a class
and how rows are drawn, so protocols never branch on the kind. The estimators are single-label, so
a multi-label (AudioSet) episode is built as follows:

- Support: for each class c, ``shots`` clips whose label set contains c, each labelled c. A clip is
  drawn for one class at most (classes are served rarest first, so a common class never uses up a
  rare class's clips): prototypes of c are means of clips that contain c, as in the reference's one
  question per positive label.
- Queries: drawn per class the same way (episodic) or the whole test pool (paper).
  ``query_labels`` holds one of each query's classes (the class it was drawn for; the clip's first
  label in the paper protocol), and ``query_label_sets`` all of them (restricted to the episode's
  classes).
- Scoring: exact match (``calm.methods.metrics.exact_match``) of the true set against the query's
  top-|true set| classes by score (``calm.methods.metrics.top_label_sets``): the estimator is told how many
  labels a clip has, and must name them all. ``multilabel_targets`` gives the indicator matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from calm.data.table import QUERY_SPLIT, RELIABILITY_SPLIT, SUPPORT_SPLIT
from calm.errors import ProtocolError
from calm.protocols.checks import check_label_sets, check_table
from calm.protocols.support_draws import pick

if TYPE_CHECKING:
    from calm.data.table import ClipTable

LocalSets = tuple[tuple[int, ...], ...]


@dataclass(frozen=True, eq=False, repr=False)
class Pools:
    """Single-label pools: ``labels``, the ``support`` and ``query`` masks, and the ``classes`` with
    clips in either pool (ascending). ``class_names[i]`` names class id ``i`` in error messages.
    ``folds`` holds each row's cross-validation fold where the table records one (ESC-50's
    ``meta["fold"]``), so a protocol can rebuild a published per-fold list; None otherwise.
    ``val`` marks the labelled clips of the table's ``val`` split, the reliability set a protocol may
    measure reliabilities on (``protocol.reliability=val``); None when the table has none."""

    labels: np.ndarray
    support: np.ndarray
    query: np.ndarray
    classes: np.ndarray
    class_names: tuple[str, ...] | None
    folds: np.ndarray | None = field(default=None, kw_only=True)
    val: np.ndarray | None = field(default=None, kw_only=True)

    multi_label: ClassVar[bool] = False

    @classmethod
    def build(
        cls,
        labels: np.ndarray,
        is_support_pool: np.ndarray,
        is_query_pool: np.ndarray,
        class_names: Sequence[str] | None = None,
        label_sets: Sequence[Sequence[int]] | None = None,
        folds: Sequence[int] | None = None,
        is_val_pool: np.ndarray | None = None,
    ) -> Pools:
        """Check the arrays (``ProtocolError`` if they do not fit together); ``MultiLabelPools`` when
        ``label_sets`` (every positive class of each row; ``labels`` holds one of them) are given.
        ``folds``: each row's fold, when the table has folds. ``is_val_pool``: the labelled reliability
        (val) clips, whose classes must be among the support and query pools' classes."""
        labels, support, query = check_table(labels, is_support_pool, is_query_pool)
        names = None if class_names is None else tuple(str(n) for n in class_names)
        fold_ids = check_folds(folds, labels)
        if label_sets is None:
            classes = np.unique(labels[support | query])
            return Pools(
                labels,
                support,
                query,
                classes,
                names,
                folds=fold_ids,
                val=check_val(is_val_pool, labels, classes, names),
            )
        sets = check_label_sets(label_sets, labels, support | query)
        in_play = [c for row in np.flatnonzero(support | query) for c in sets[row]]
        classes = np.unique(np.array(in_play, dtype=np.int64))
        return MultiLabelPools(
            labels,
            support,
            query,
            classes,
            names,
            sets,
            folds=fold_ids,
            val=check_val(is_val_pool, labels, classes, names),
        )

    @classmethod
    def from_table(cls, table: ClipTable) -> Pools:
        """A clip table's pools: its train clips as support, its test clips as queries."""
        label_sets = [c.all_labels for c in table.clips] if table.multi_label else None
        val = table.split_mask(RELIABILITY_SPLIT)
        return cls.build(
            table.labels,
            table.split_mask(SUPPORT_SPLIT),
            table.split_mask(QUERY_SPLIT),
            table.class_names,
            label_sets,
            table_folds(table),
            val if val.any() else None,
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({len(self.labels)} clips, {len(self.classes)} classes, "
            f"support={int(self.support.sum())}, query={int(self.query.sum())})"
        )

    def name(self, c: int) -> str:
        """Class id ``c`` as messages show it: its quoted name, else 'class <c>'."""
        if self.class_names is not None and 0 <= c < len(self.class_names):
            return repr(self.class_names[c])
        return f"class {c}"

    def counts(self, mask: np.ndarray) -> np.ndarray:
        """Clips in ``mask`` holding each class of ``classes``."""
        return np.bincount(np.searchsorted(self.classes, self.labels[mask]), minlength=len(self.classes))

    def members(self, mask: np.ndarray) -> list[np.ndarray]:
        """Rows in ``mask`` holding each class, each ascending; one pass, not one per class."""
        rows = np.flatnonzero(mask)
        rows = rows[np.argsort(self.labels[rows], kind="stable")]
        return np.split(rows, np.cumsum(self.counts(mask))[:-1])

    @cached_property
    def support_members(self) -> list[np.ndarray]:
        """``members(support)``, computed once for every episode."""
        return self.members(self.support)

    @cached_property
    def query_members(self) -> list[np.ndarray]:
        """``members(query)``, computed once for every episode."""
        return self.members(self.query)

    def draw_episode(
        self, rng: np.random.Generator, chosen: np.ndarray, shots: int, queries: int, where: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """Support rows (``shots`` per class of ``chosen``, in that order) and query rows
        (``queries`` per class), disjoint even when the pools overlap. Class by class: support
        first, then queries from that class's query pool minus its support."""
        support, query = [], []
        for k in chosen:
            s = rng.choice(self.support_members[k], size=shots, replace=False)
            pool = np.setdiff1d(self.query_members[k], s, assume_unique=True)
            support.append(s)
            query.append(rng.choice(pool, size=queries, replace=False))
        return np.concatenate(support), np.concatenate(query)

    def draw_support(
        self,
        rng: np.random.Generator,
        members: list[np.ndarray],
        chosen: np.ndarray,
        shots: int | np.ndarray,
        where: str,
        draw: str = "random",
        at_most: bool = False,
    ) -> list[np.ndarray]:
        """``shots`` rows (one count, or one per class of ``chosen``) of ``members[k]`` for each class
        ``k`` of ``chosen``, one array per class in that order, picked by ``draw``
        (``calm.protocols.support_draws``). ``at_most`` is for multi-label pools, where a class can run
        short once other classes drew."""
        sizes = np.broadcast_to(np.asarray(shots, dtype=np.int64), (len(chosen),))
        return [pick(rng, members[k], int(n), draw) for k, n in zip(chosen, sizes, strict=True)]

    def local_sets(self, rows: np.ndarray, episode_classes: np.ndarray) -> LocalSets | None:
        """Each row's labels among ``episode_classes``, as positions in it; None when single-label."""
        return None


@dataclass(frozen=True, eq=False, repr=False)
class MultiLabelPools(Pools):
    """Pools whose clips hold several classes (``sets``): a clip counts for each of them, and is
    drawn for one at most, rarest class first (module docstring)."""

    sets: tuple[frozenset[int], ...]

    multi_label: ClassVar[bool] = True

    def counts(self, mask: np.ndarray) -> np.ndarray:
        return np.array([len(rows) for rows in self.members(mask)], dtype=np.int64)

    def members(self, mask: np.ndarray) -> list[np.ndarray]:
        """Rows in ``mask`` holding each class among their labels, each ascending."""
        position = {int(c): i for i, c in enumerate(self.classes)}
        buckets: list[list[int]] = [[] for _ in self.classes]
        for row in np.flatnonzero(mask):
            for c in self.sets[row]:
                buckets[position[c]].append(int(row))
        return [np.array(b, dtype=np.int64) for b in buckets]

    def draw_episode(
        self, rng: np.random.Generator, chosen: np.ndarray, shots: int, queries: int, where: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """All support rows first, then the queries from the rest (no clip drawn twice)."""
        support = np.concatenate(
            self._draw_disjoint(rng, chosen, self.support_members, shots, np.empty(0, np.int64), "support", where)
        )
        query = self._draw_disjoint(rng, chosen, self.query_members, queries, support, "query", where)
        return support, np.concatenate(query)

    def draw_support(
        self,
        rng: np.random.Generator,
        members: list[np.ndarray],
        chosen: np.ndarray,
        shots: int | np.ndarray,
        where: str,
        draw: str = "random",
        at_most: bool = False,
    ) -> list[np.ndarray]:
        return self._draw_disjoint(rng, chosen, members, shots, np.empty(0, np.int64), "support", where, draw, at_most)

    def local_sets(self, rows: np.ndarray, episode_classes: np.ndarray) -> LocalSets:
        kept = set(episode_classes.tolist())
        return tuple(tuple(int(i) for i in np.searchsorted(episode_classes, sorted(self.sets[r] & kept))) for r in rows)

    def _draw_disjoint(
        self,
        rng: np.random.Generator,
        chosen: np.ndarray,
        members: list[np.ndarray],
        n: int | np.ndarray,
        taken: np.ndarray,
        what: str,
        where: str,
        draw: str = "random",
        at_most: bool = False,
    ) -> list[np.ndarray]:
        """``n`` rows (one count, or one per class of ``chosen``) per chosen class, no row twice (nor
        one in ``taken``), rarest class first; ``draw`` picks them, ``all`` and ``at_most`` settle for
        what is left (at least one).

        Returns the rows in the order of ``chosen``. A clip holds several classes, so a class can
        run short even though validation counted enough.
        """
        wanted = dict(zip(chosen.tolist(), np.broadcast_to(np.asarray(n), (len(chosen),)).tolist(), strict=True))
        drawn: dict[int, np.ndarray] = {}
        for k in sorted(chosen.tolist(), key=lambda k: (len(members[k]), k)):
            available = np.setdiff1d(members[k], taken, assume_unique=True)
            size = len(available) if draw == "all" else int(wanted[k])
            if at_most:
                size = min(size, len(available))
            if size == 0 or len(available) < size:
                raise ProtocolError(
                    f"In {where}, class {self.name(int(self.classes[k]))} has only {len(available)} {what} "
                    f"clips left once the clips drawn for other classes are removed (a multi-label "
                    f"clip is drawn for one class only); {max(size, 1)} are needed.",
                    f"Lower `{'shots' if what == 'support' else 'queries'}`, or add clips of this class.",
                )
            drawn[k] = pick(rng, available, size, draw)
            taken = np.concatenate([taken, drawn[k]])
        return [drawn[k] for k in chosen.tolist()]


def table_folds(table: ClipTable) -> np.ndarray | None:
    """Each clip's ``meta["fold"]`` as an int, when every clip of the table records one; else None."""
    folds = [clip.meta.get("fold") for clip in table.clips]
    if not folds or any(f is None or not str(f).strip().lstrip("-").isdigit() for f in folds):
        return None
    return np.array([int(f) for f in folds], dtype=np.int64)


def check_val(
    is_val_pool: np.ndarray | None, labels: np.ndarray, classes: np.ndarray, names: tuple[str, ...] | None
) -> np.ndarray | None:
    """The val mask as a read-only bool array, or None; its clips' labels must come from the classes of
    the support and query pools (one class list for S, V and the test set)."""
    if is_val_pool is None:
        return None
    mask = np.asarray(is_val_pool, dtype=bool)
    if mask.shape != labels.shape:
        raise ProtocolError(
            f"the val mask has shape {mask.shape} but the table has {labels.shape} clips.",
            "Pass one val flag per clip of the same table.",
        )
    stray = sorted(set(labels[mask].tolist()) - set(classes.tolist()))
    if stray:
        shown = ", ".join(repr(names[c]) if names and 0 <= c < len(names) else f"class {c}" for c in stray[:5])
        raise ProtocolError(
            f"{len(stray)} class(es) of the val clips have no train or test clip: {shown}.",
            "Label the val clips with the train/test class list, or drop those clips.",
        )
    mask.setflags(write=False)
    return mask


def check_folds(folds: Sequence[int] | None, labels: np.ndarray) -> np.ndarray | None:
    """``folds`` as a read-only int64 array of one entry per row, or None."""
    if folds is None:
        return None
    ids = np.array(folds, dtype=np.int64)
    if ids.shape != labels.shape:
        raise ProtocolError(
            f"`folds` has shape {ids.shape} but the table has {labels.shape} clips.",
            "Pass one fold per clip of the same table (e.g. ESC-50's meta['fold']).",
        )
    ids.setflags(write=False)
    return ids
