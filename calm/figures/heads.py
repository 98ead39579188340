"""What the fitted estimators say about heads, gathered during evaluation and laid out for plotting.

`HeadGrid` places each flat head index on a (hook point, layer, head) grid parsed from the cache's
head names ("point.L{layer}.H{head}"). `HeadCollector` reads, after each episode's fit, the
quantities the estimators already expose (CALM's `weights_` (K, ways), SAV's `selected_heads_`) and
accumulates them per global class, so figures never refit or recompute the methods' math.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

HEAD_NAME = re.compile(r"^(?P<point>.+)\.L(?P<layer>\d+)\.H(?P<head>\d+)$")
UNNAMED_POINT = "heads"


@dataclass(frozen=True)
class HeadGrid:
    """Flat head j sits in panel `point[j]`, row `row[j]` (a layer) and column `col[j]` (a head).

    `layers[p]` are the layer numbers of point p's rows (not always 0..L-1: a backbone may hook a
    subset of layers); `width[p]` is its number of head columns.
    """

    points: tuple[str, ...]
    layers: tuple[tuple[int, ...], ...]
    width: tuple[int, ...]
    point: np.ndarray
    row: np.ndarray
    col: np.ndarray
    names: tuple[str, ...]

    @classmethod
    def from_names(cls, names: Sequence[str] | None, n_heads: int) -> HeadGrid:
        """Parse the head names; without (parsable) names, one panel with a single row of all heads."""
        parsed = [HEAD_NAME.match(name) for name in names or ()]
        if len(parsed) != n_heads or not all(parsed):
            return cls(
                (UNNAMED_POINT,),
                ((0,),),
                (n_heads,),
                np.zeros(n_heads, int),
                np.zeros(n_heads, int),
                np.arange(n_heads),
                tuple(f"H{j}" for j in range(n_heads)),
            )
        points = tuple(dict.fromkeys(m["point"] for m in parsed))
        layers = tuple(tuple(sorted({int(m["layer"]) for m in parsed if m["point"] == p})) for p in points)
        width = tuple(1 + max(int(m["head"]) for m in parsed if m["point"] == p) for p in points)
        point = np.array([points.index(m["point"]) for m in parsed])
        row = np.array([layers[p].index(int(m["layer"])) for p, m in zip(point, parsed, strict=True)])
        col = np.array([int(m["head"]) for m in parsed])
        return cls(points, layers, width, point, row, col, tuple(names))

    @property
    def n_heads(self) -> int:
        return len(self.names)

    def panels(self, values: np.ndarray) -> list[np.ndarray]:
        """One (layers, heads) array per hook point from per-head `values` (K,); NaN where no head is."""
        grids = [np.full((len(layers), width), np.nan) for layers, width in zip(self.layers, self.width, strict=True)]
        for j, value in enumerate(np.asarray(values, dtype=float)):
            grids[self.point[j]][self.row[j], self.col[j]] = value
        return grids


def _numpy(value: Any) -> np.ndarray:
    """A fitted attribute (torch tensor on any device, or array) as a numpy array."""
    if hasattr(value, "detach"):
        value = value.detach().float().cpu().numpy()
    return np.asarray(value)


class HeadCollector:
    """Per method, sums of what each episode's fit says about heads, indexed by global class.

    - Class-conditional weights (an estimator with a 2-D `weights_`, heads × episode classes, e.g.
      CALM): summed per global class, with the number of episodes each class appeared in.
    - Head selection (an estimator whose `selected_heads_` keeps fewer than all heads, e.g. SAV):
      how many episodes selected each head.
    """

    def __init__(self, n_heads: int, n_classes: int) -> None:
        self.n_heads = n_heads
        self.n_classes = n_classes
        self.weight_sums: dict[str, np.ndarray] = {}
        self.class_episodes: dict[str, np.ndarray] = {}
        self.selection_counts: dict[str, np.ndarray] = {}
        self.episodes: dict[str, int] = {}

    def add(self, method: str, estimator: Any, classes: Sequence[int]) -> None:
        """Read `estimator` right after it was fitted on an episode whose local class i is `classes[i]`."""
        classes = np.asarray(classes, dtype=int)
        weights = getattr(estimator, "weights_", None)
        weights = None if weights is None else _numpy(weights)
        if weights is not None and weights.ndim == 2:
            sums = self.weight_sums.setdefault(method, np.zeros((self.n_heads, self.n_classes)))
            sums[:, classes] += weights
            seen = self.class_episodes.setdefault(method, np.zeros(self.n_classes, int))
            seen[classes] += 1
        selected = getattr(estimator, "selected_heads_", None)
        if selected is not None and len(selected) < self.n_heads:
            counts = self.selection_counts.setdefault(method, np.zeros(self.n_heads, int))
            counts[_numpy(selected).astype(int)] += 1
            self.episodes[method] = self.episodes.get(method, 0) + 1

    def mean_weights(self, method: str) -> np.ndarray:
        """(K, C): each class's head weights averaged over the episodes it appeared in; NaN if none."""
        seen = self.class_episodes[method]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(seen > 0, self.weight_sums[method] / seen, np.nan)

    def selection_rate(self, method: str) -> np.ndarray:
        """(K,): the fraction of episodes in which each head was among the selected ones."""
        return self.selection_counts[method] / self.episodes[method]


def top_heads(mean_weights: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class, its `n` heaviest heads (C, n) and their weights (C, n); ties to the lower head index.

    Classes never seen (NaN weights) get NaN weights and head -1.
    """
    n = min(n, mean_weights.shape[0])
    filled = np.nan_to_num(mean_weights, nan=-np.inf)
    order = np.argsort(-filled, axis=0, kind="stable")[:n].T
    values = np.take_along_axis(mean_weights.T, order, axis=1)
    return np.where(np.isnan(values), -1, order), values
