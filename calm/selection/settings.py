"""CALM settings and grids as values: one setting, the Cartesian grid a config declares, and a grid's
scores. The scoring engine is `calm.selection.grid`; the values come from config only
(`configs/protocol/*.yaml`, `CalmGrid.from_config`)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from calm.errors import ConfigError
from calm.methods import CALM
from calm.methods.calm_core import check_calm_settings

AXES = ("reliability", "tau", "tau_w", "top_k", "shrinkage")


@dataclass(frozen=True)
class CalmSetting:
    """One CALM setting; `weight_norm` is always the paper's pairing for the scheme."""

    reliability: str = "margin_clamped"
    tau: float = 0.07
    tau_w: float = 0.5
    top_k: int | None = None
    shrinkage: float = 0.0

    def __post_init__(self) -> None:
        check_calm_settings(self.tau, self.tau_w, self.reliability, self.top_k, self.shrinkage, None)

    def estimator(self) -> CALM:
        """The estimator that computes this setting from scratch (reliability on the support set)."""
        return CALM(tau=self.tau, tau_w=self.tau_w, reliability=self.reliability, top_k=self.top_k,
                    shrinkage=self.shrinkage)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT_SETTING = CalmSetting()


@dataclass(frozen=True)
class CalmGrid:
    """The Cartesian product of values per hyper-parameter; top_k None means all heads."""

    reliability: tuple[str, ...]
    tau: tuple[float, ...]
    tau_w: tuple[float, ...]
    top_k: tuple[int | None, ...]
    shrinkage: tuple[float, ...]

    def __post_init__(self) -> None:
        for name in AXES:
            values = tuple(getattr(self, name))
            if not values:
                raise ConfigError(f"the grid's {name} list is empty", f"give at least one {name} value")
            object.__setattr__(self, name, values)
            for value in values:
                CalmSetting(**{name: value})  # rejects values CALM does not accept

    def __len__(self) -> int:
        return math.prod(len(getattr(self, name)) for name in AXES)

    def settings(self) -> list[CalmSetting]:
        """Every setting, ordered by reliability, tau, shrinkage, tau_w, top_k (the reuse order)."""
        return [CalmSetting(reliability=r, tau=t, tau_w=w, top_k=k, shrinkage=a)
                for r, t, a, w, k in itertools.product(self.reliability, self.tau, self.shrinkage,
                                                        self.tau_w, self.top_k)]

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> CalmGrid:
        """From a config mapping of lists; a top_k of null or "all" means all heads."""
        missing = [name for name in AXES if name not in cfg]
        if missing:
            raise ConfigError(f"the grid config lacks {missing}",
                              "list values for reliability, tau, tau_w, top_k and shrinkage")
        top_k = tuple(None if k in (None, "all") else k for k in cfg["top_k"])
        return cls(tuple(cfg["reliability"]), tuple(float(t) for t in cfg["tau"]),
                   tuple(float(w) for w in cfg["tau_w"]), top_k, tuple(float(a) for a in cfg["shrinkage"]))


def grid_settings(grid: CalmGrid | Sequence[CalmSetting]) -> tuple[CalmSetting, ...]:
    """The settings of a grid, or of an explicit list, in order."""
    return tuple(grid.settings() if isinstance(grid, CalmGrid) else grid)


@dataclass(frozen=True, eq=False)
class GridResult:
    """Scores in percent per setting, aligned with `settings`; `exact_match` only for multi-label."""

    settings: tuple[CalmSetting, ...]
    accuracy: np.ndarray
    macro_f1: np.ndarray
    exact_match: np.ndarray | None
    n_queries: int

    @property
    def metric(self) -> str:
        """The score settings are ranked by: exact match for multi-label queries, else accuracy."""
        return "accuracy" if self.exact_match is None else "exact_match"

    def values(self) -> np.ndarray:
        return self.accuracy if self.exact_match is None else self.exact_match

    def best(self) -> int:
        """Index of the best setting; ties go to the first in grid order, so the choice is reproducible."""
        return int(np.argmax(self.values()))

    def scores_of(self, i: int) -> dict[str, float]:
        out = {"accuracy": float(self.accuracy[i]), "macro_f1": float(self.macro_f1[i])}
        if self.exact_match is not None:
            out["exact_match"] = float(self.exact_match[i])
        return out

    def rows(self) -> list[dict[str, Any]]:
        """One flat dict per setting, for a results table."""
        return [{**s.as_dict(), **self.scores_of(i)} for i, s in enumerate(self.settings)]
