"""CALM settings and grids as values: one setting, the Cartesian grid a config declares, and a grid's
scores; plus the two rules every grid shares: what a top_k beyond the model's heads means
(`heads_top_k`) and which setting wins (`first_best`). The scoring engine is `calm.selection.grid`; the
values come from config only (`configs/grids/<dataset>.yaml`, `CalmGrid.from_config`)."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from numbers import Real
from typing import Any

import numpy as np

from calm.config.builder import build
from calm.errors import ConfigError
from calm.methods import CALM
from calm.methods.calm_core import check_calm_settings, check_head_choice
from calm.methods.ties import check_tie_break

AXES = ("reliability", "tau", "tau_w", "top_k", "shrinkage")
ALL_HEADS = (None, "all")  # config spellings of "every head" for a top_k
# with per-label questions (`query_groups`), the score settings are ranked by: the authors' CALM runner's
QUESTION_METRIC = "exact_match_questions"


SELECTION_METRICS = ("accuracy", "macro_f1")


def check_selection_metric(metric: str) -> None:
    """`accuracy` (the default ranking: accuracy, or exact match for multi-label) or `macro_f1`."""
    if metric not in SELECTION_METRICS:
        raise ConfigError(
            f"unknown selection_metric {metric!r}",
            "use accuracy (exact match for multi-label data) or macro_f1 (the authors' spoofing choice)",
        )


def first_best(values: Sequence[float] | np.ndarray) -> int:
    """Index of the best score; ties go to the first in grid order, so every choice is reproducible."""
    return int(np.argmax(np.asarray(values)))


def heads_top_k(values: Sequence[Any], n_heads: int) -> tuple[tuple[int | None, ...], tuple[int, ...]]:
    """A top_k axis for a model with `n_heads` heads: "all"/null and every k >= n_heads become None (all
    heads; the authors' 784 / 1024 are "all" for their 7B models), repeats dropped, first kept. Returns
    the values and the ks that were clamped (to report once)."""
    clamped = tuple(int(k) for k in values if k not in ALL_HEADS and int(k) >= n_heads)
    kept = [None if k in ALL_HEADS or int(k) >= n_heads else int(k) for k in values]
    return tuple(dict.fromkeys(kept)), clamped


def uses_calm_engine(estimator: Any) -> bool:
    """CALM settings the grid engine computes exactly: reliability on the support set (or a named V), the
    paper's weight normalisation per scheme (any head choice, any arithmetic dtype). Any other CALM
    configuration is swept through the estimator API. The one rule for the paper grid and `auto`."""
    return isinstance(estimator, CALM) and estimator.weight_norm is None and estimator.reliability_split == "support"


@dataclass(frozen=True, kw_only=True)
class HeadRules:
    """How CALM chooses, ranks and masks heads: the CALM estimator's `top_k_mode`, `tie_break`, `tie_seed`,
    `head_choice` and `head_seed`. Never swept: a grid takes them from the job's `estimators.<method>` and
    every setting of it carries them, so grid and estimator choose, rank and mask heads alike (`head_seed`
    is the seed of the random draw itself, as a fit without an episode seed uses it). Keyword-only, so a
    setting's and a grid's positional arguments are their axes."""

    top_k_mode: str = "exclude"
    tie_break: str = "index"
    tie_seed: int = 0
    head_choice: str = "reliable"
    head_seed: int = 0

    def rules(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(HeadRules)}


@dataclass(frozen=True)
class CalmSetting(HeadRules):
    """One CALM setting (a value per axis, and the head rules); `weight_norm` is always the paper's
    pairing for the scheme."""

    reliability: str = "margin_clamped"
    tau: float = 0.07
    tau_w: float = 0.5
    top_k: int | None = None
    shrinkage: float = 0.0

    def __post_init__(self) -> None:
        check_calm_settings(self.tau, self.tau_w, self.reliability, self.top_k, self.shrinkage, None, self.top_k_mode)
        check_tie_break("CALM", self.tie_break, self.tie_seed)
        check_head_choice(self.head_choice, self.head_seed)

    def estimator(self) -> CALM:
        """The estimator that computes this setting from scratch (reliability on the support set)."""
        return CALM(**asdict(self))

    def as_dict(self) -> dict[str, Any]:
        """The setting's values, axes first; the head choice only when it is not CALM's own (`reliable`)."""
        values = {**{name: getattr(self, name) for name in AXES}, **self.rules()}
        if self.head_choice == "reliable":
            del values["head_choice"], values["head_seed"]
        return values


DEFAULT_SETTING = CalmSetting()


@dataclass(frozen=True)
class CalmGrid(HeadRules):
    """The Cartesian product of values per hyper-parameter; top_k None means all heads. The head rules
    are not axes: every setting carries the grid's (`HeadRules`)."""

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
            if name == "top_k":  # a top_k of null or "all" means all heads
                values = tuple(None if k in ALL_HEADS else k for k in values)
            elif name != "reliability":  # numbers as floats; anything else is refused by CalmSetting
                values = tuple(float(v) if isinstance(v, Real) and not isinstance(v, bool) else v for v in values)
            object.__setattr__(self, name, values)
            for value in values:
                CalmSetting(**{name: value})  # rejects values CALM does not accept
        CalmSetting(**self.rules())

    def __len__(self) -> int:
        return math.prod(len(getattr(self, name)) for name in AXES)

    def settings(self) -> list[CalmSetting]:
        """Every setting, ordered by reliability, tau, shrinkage, tau_w, top_k (the reuse order)."""
        rules = self.rules()
        return [
            CalmSetting(reliability=r, tau=t, tau_w=w, top_k=k, shrinkage=a, **rules)
            for r, t, a, w, k in itertools.product(self.reliability, self.tau, self.shrinkage, self.tau_w, self.top_k)
        ]

    def for_heads(self, n_heads: int) -> tuple[CalmGrid, tuple[int, ...]]:
        """This grid for a model with `n_heads` heads (`heads_top_k`), and the top_k values clamped."""
        top_k, clamped = heads_top_k(self.top_k, n_heads)
        return dataclasses.replace(self, top_k=top_k), clamped

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], *, key: str = "grids.calm", **rules: Any) -> CalmGrid:
        """From a config mapping of lists (`grids.calm`, built by `calm.config.builder.build`: exactly the
        axes, each a list; a top_k of null or "all" means all heads). `rules` are the CALM estimator's
        settings every setting shares (`top_k_mode`, `tie_break`, `tie_seed`, `head_choice`, `head_seed`)."""
        return build(cfg, "grids", cls=cls, key=key, **rules)


def grid_settings(grid: CalmGrid | Sequence[CalmSetting]) -> tuple[CalmSetting, ...]:
    """The settings of a grid, or of an explicit list, in order."""
    return tuple(grid.settings() if isinstance(grid, CalmGrid) else grid)


@dataclass(frozen=True, eq=False)
class GridResult:
    """Scores in percent per setting, aligned with `settings` (CalmSetting, or any value with
    `as_dict()`); `exact_match` only for multi-label; `by_clip` holds `exact_match_questions` and
    `exact_match_sets` when the queries are per-label questions grouped by clip."""

    settings: tuple[Any, ...]
    accuracy: np.ndarray
    macro_f1: np.ndarray
    exact_match: np.ndarray | None
    n_queries: int
    by_clip: Mapping[str, np.ndarray] = field(default_factory=dict)

    @property
    def metric(self) -> str:
        """The score settings are ranked by: all of a clip's questions right for per-label questions,
        exact match for multi-label queries, else accuracy."""
        return self.metric_for("accuracy")

    def metric_for(self, selection_metric: str) -> str:
        """The score a choice by `selection_metric` ranks by: `accuracy` is the default ranking
        (`metric`), `macro_f1` the macro-F1 of single-label queries (the authors' spoofing runner)."""
        check_selection_metric(selection_metric)
        if selection_metric == "macro_f1":
            if self.exact_match is not None or QUESTION_METRIC in self.by_clip:
                raise ConfigError(
                    f"selection_metric=macro_f1 ranks single-label results, but these are scored by {self.metric}",
                    "use selection_metric=accuracy for multi-label data",
                )
            return "macro_f1"
        if QUESTION_METRIC in self.by_clip:
            return QUESTION_METRIC
        return "accuracy" if self.exact_match is None else "exact_match"

    def values(self, selection_metric: str = "accuracy") -> np.ndarray:
        """Each setting's score under `metric_for(selection_metric)`."""
        metric = self.metric_for(selection_metric)
        if metric in self.by_clip:
            return self.by_clip[metric]
        return {"accuracy": self.accuracy, "macro_f1": self.macro_f1, "exact_match": self.exact_match}[metric]

    def best(self, selection_metric: str = "accuracy") -> int:
        """Index of the best setting by `selection_metric` (`first_best`)."""
        return first_best(self.values(selection_metric))

    def scores_of(self, i: int) -> dict[str, float]:
        out = {"accuracy": float(self.accuracy[i]), "macro_f1": float(self.macro_f1[i])}
        if self.exact_match is not None:
            out["exact_match"] = float(self.exact_match[i])
        out.update({name: float(values[i]) for name, values in self.by_clip.items()})
        return out

    def rows(self) -> list[dict[str, Any]]:
        """One flat dict per setting, for a results table."""
        return [{**s.as_dict(), **self.scores_of(i)} for i, s in enumerate(self.settings)]
