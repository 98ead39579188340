"""How a fixed split picks its support rows from each class's candidates (protocol=paper's `support_draw`).

The candidates of a class are rows in table order (or, for a published list, in that list's order,
duplicates kept). The rule is one of:

- ``random``: ``shots`` rows drawn without replacement by a seeded generator (the clean protocol);
- ``file_order``: the first ``shots`` candidates, as the reference code took its first questions of
  each label in file order (AudioSet);
- ``all``: every candidate, ``shots`` ignored, as the reference code used a whole training list as
  support (ASVspoof).

``at_most`` lets a class with fewer than ``shots`` candidates give all it has, instead of failing;
a class with none always fails. Support sets then hold unequal counts per class.
"""

from __future__ import annotations

import numpy as np

from calm.errors import ConfigError

SUPPORT_DRAWS = ("random", "file_order", "all")


def check_support_draw(draw: str, at_most: object) -> None:
    """``ConfigError`` for an unknown ``support_draw`` or a non-boolean ``at_most``."""
    if draw not in SUPPORT_DRAWS:
        raise ConfigError(
            f"protocol.support_draw={draw!r} is not one of {list(SUPPORT_DRAWS)}",
            "set protocol.support_draw=random (the default), file_order or all",
        )
    if not isinstance(at_most, bool):
        raise ConfigError(
            f"protocol.at_most must be true or false, got {at_most!r}",
            "set protocol.at_most=false (every class needs `shots` clips) or true",
        )


def support_sizes(draw: str, shots: int, at_most: bool, available: np.ndarray) -> np.ndarray:
    """Rows to take per class, given how many candidates (``available``) each class has."""
    available = np.asarray(available, dtype=np.int64)
    if draw == "all":
        return available
    wanted = np.full(len(available), int(shots), dtype=np.int64)
    return np.minimum(wanted, available) if at_most else wanted


def pick(rng: np.random.Generator, candidates: np.ndarray, n: int, draw: str) -> np.ndarray:
    """``n`` of one class's ``candidates``: seeded without replacement (random), else the first ``n``.

    Without replacement means by position, so a row listed twice (a published list with duplicates)
    can be picked twice, as the reference code's shuffled list could.
    """
    if draw == "random":
        return rng.choice(candidates, size=n, replace=False)
    return np.asarray(candidates[:n], dtype=np.int64)
