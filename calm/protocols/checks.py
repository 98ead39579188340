"""The checks protocols share, each raising ``ProtocolError`` with the problem, the classes concerned
and a fix, so an impossible setting fails before any model loads (docs/design/protocols.md)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from calm.errors import ProtocolError

MAX_LISTED = 10  # classes named in one error message before "and N more"

Namer = Callable[[int], str]


def is_int(value: object) -> bool:
    """An integer setting (numpy included), not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_positive(name: str, value: object) -> None:
    if not is_int(value) or value < 1:
        raise ProtocolError(
            f"`{name}` must be a positive integer, got {value!r}.",
            f"Set `{name}` to 1 or more.",
        )


def check_class_count(n_classes: int) -> None:
    if n_classes < 2:
        raise ProtocolError(
            f"The clip table has {n_classes} class(es) with clips in the support or query "
            "pool; classification needs at least 2.",
            "Check the dataset path and split settings; the pools may be empty.",
        )


def check_queries_exist(classes: np.ndarray, n_query: np.ndarray, name: Namer) -> None:
    empty = classes[n_query == 0]
    if len(empty):
        raise ProtocolError(
            f"These classes have no clips in the query (test) pool: {list_classes(empty, None, name)}.",
            "Add test clips for these classes, or remove them from the dataset table.",
        )


def check_shots(shots: int, classes: np.ndarray, n_support: np.ndarray, name: Namer, note: str) -> None:
    """Every class has `shots` support candidates; a class with none is named as empty first (lowering
    `shots` cannot help it)."""
    check_some_support(classes, n_support, name, note)
    short = n_support < shots
    if short.any():
        raise ProtocolError(
            f"shots={shots} but these classes have fewer support-pool (training) "
            f"clips{note}: {list_classes(classes[short], n_support[short], name)}.",
            f"Lower `shots` to at most {int(n_support.min())}, or add training clips for these classes.",
        )


def check_some_support(classes: np.ndarray, n_support: np.ndarray, name: Namer, note: str) -> None:
    """Every class has a support candidate (a draw that takes at most `shots`, or all, per class)."""
    empty = n_support == 0
    if empty.any():
        raise ProtocolError(
            f"These classes have no support-pool (training) clips{note}: {list_classes(classes[empty], None, name)}.",
            "Add training clips for these classes, or remove them from the dataset table.",
        )


def check_table(
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


def check_label_sets(
    label_sets: Sequence[Sequence[int]], labels: np.ndarray, in_pools: np.ndarray
) -> tuple[frozenset[int], ...]:
    """One set of integer class ids per row; rows in a pool hold their own ``labels`` entry."""
    if len(label_sets) != len(labels):
        raise ProtocolError(
            f"`label_sets` has {len(label_sets)} entries but the table has {len(labels)} clips.",
            "Pass every positive label of each clip of the same table (e.g. Clip.all_labels).",
        )
    sets = []
    for row, entry in enumerate(label_sets):
        values = [int(c) for c in entry if is_int(c)]
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


def list_classes(classes: np.ndarray, counts: np.ndarray | None, name: Namer) -> str:
    """'dog' (3), 'cat' (4), ... and N more: enough to act on without flooding the log."""
    items = [name(int(c)) for c in classes[:MAX_LISTED]]
    if counts is not None:
        items = [f"{item} ({int(n)})" for item, n in zip(items, counts[:MAX_LISTED], strict=True)]
    more = len(classes) - MAX_LISTED
    return ", ".join(items) + (f" and {more} more" if more > 0 else "")
