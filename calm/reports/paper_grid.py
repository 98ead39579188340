"""protocol=paper's grid report: every method of the job that has a grid (configs/grids/<dataset>.yaml)
is swept on the fixed split and reported as two labelled rows, `<method>[cv]` (the setting chosen by
cross-validation on the support set) and `<method>[oracle]` (best of grid on test), plus the notes a
reader needs about how the protocol differs from the reference code.

CALM goes through its grid engine (`calm.selection.paper_grid_report`, shared work between settings);
every other estimator, including one a user adds, through the estimator API
(`calm.selection.paper_sweep_report`): a grid point is the job's `estimators.<method>` config with the
point's values set. A choosing method (`AutoSelect`, method=auto) adds `<name>[cv]`: the method whose
own `[cv]` choice scored best in cross-validation on the same folds (`choice_across_methods`).
"""

from __future__ import annotations

import inspect
import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from omegaconf import DictConfig

from calm.cache import RowView
from calm.config.builder import build, target_class
from calm.config.schema import paper_grids
from calm.data.dataset import Dataset
from calm.data.manifest import Manifest
from calm.data.manifest_prompt import ManifestPrompt
from calm.data.prompts import ClipPrompt, PaperPrompt
from calm.data.questions import question_groups
from calm.data.table import ClipTable
from calm.methods import Estimator
from calm.methods.calm_core import fit_head_seed
from calm.methods.precision import arithmetic_dtype
from calm.protocols import Episode, PaperProtocol, multilabel_targets
from calm.reports.base import Report, ReportOutput
from calm.run.tracking import Tracker
from calm.selection import (
    AutoSelect,
    CalmGrid,
    MethodGrid,
    PaperGridReport,
    paper_grid_report,
    paper_sweep_report,
    tuned_row_names,
)
from calm.selection.auto import choice_across_methods
from calm.selection.settings import uses_calm_engine
from calm.selection.sweep import Build

if TYPE_CHECKING:
    from calm.run.job import PreparedJob

log = logging.getLogger(__name__)


def tuned_methods(cfg: DictConfig) -> list[str]:
    """The methods protocol=paper sweeps for a config not yet built (tables list a job's expected rows
    with it): those of the job's `estimators` with a grid, in `estimators` order; none under other
    protocols (a ConfigError under protocol=paper without grids)."""
    grids = paper_grids(cfg)
    if grids is None:
        return []
    return [name for name in cfg.method.get("estimators") or {} if name in grids]


def choosing_methods(cfg: DictConfig) -> list[str]:
    """The `AutoSelect` estimators (method=auto) of a config not yet built, when protocol=paper tunes methods."""
    if not tuned_methods(cfg):
        return []
    return [
        name
        for name, spec in (cfg.method.get("estimators") or {}).items()
        if spec and spec.get("_target_") and issubclass(target_class(spec, "estimator"), AutoSelect)
    ]


def tuned_rows(cfg: DictConfig) -> list[str]:
    """The result rows the sweep adds: `tuned_row_names` of every tuned method ([val] rows with a named V),
    and the `[cv]` row of every choosing method."""
    named = cfg.protocol.get("reliability", "support") != "support"
    return [row for name in tuned_methods(cfg) for row in tuned_row_names(name, named)] + [
        tuned_row_names(name)[0] for name in choosing_methods(cfg)
    ]


def grids_file(dataset: str) -> str:
    """The grid file of a dataset, for messages."""
    return f"configs/grids/{dataset}.yaml"


def paper_notes(dataset: Dataset, prompt: ClipPrompt, protocol: PaperProtocol, evaluation_dtype: str) -> list[str]:
    """What a reader of protocol=paper results must know about how they differ from the reference."""
    if isinstance(dataset, Manifest):
        notes = [
            "support, val and test are the rows of the manifests as given: a clip listed in both support (or "
            "val) and test is used as both (the share is measured, in the rows and notes, when there is one)"
        ]
    else:
        notes = ["support is drawn only from the training pool; no clip of the test split is ever in the support set"]
    if dataset.name == "esc50":
        notes.append(
            "the reference code drew ESC-50 support from files that hold test clips; this job draws "
            "from the clean pool, so its numbers can be lower than the published ones (the paper "
            "table's replay groups run the authors' files and measure the overlap)"
        )
    if protocol.reliability != "support":
        notes.append(
            "reliabilities (CALM, GRW) are measured on the table's val clips V with prototypes from the "
            "support set; <method>[val] is the setting best on V (SAV and the other rankings use the "
            "support set, as the authors' runner did)"
        )
    if evaluation_dtype == "model":
        notes.append(
            "evaluate.dtype=model: CALM's prototypes, cosines and softmax run in the backbone's dtype and "
            "are cast to float32 after the softmax, as the authors' runner did"
        )
    if not isinstance(prompt, (PaperPrompt, ManifestPrompt)):
        notes.append(
            "prompt is not a `paper` prompt: the published protocol used multiple-choice prompts containing the label"
        )
    return notes


@dataclass(frozen=True)
class GridSettings:
    """How the paper grid scores its split, resolved when the job is prepared: the support-set
    cross-validation folds and seed and the ranking metric (from the built `PaperProtocol`), the test clips
    scored at a time and the memory the streamed rows may take, and where the arithmetic runs."""

    folds: int | None
    cv_seed: int | None
    selection_metric: str
    query_chunk: int
    memory_budget_mb: int
    device: torch.device


def point_builder(spec: Mapping[str, Any]) -> tuple[Build, set[str]]:
    """Builds the estimator of a grid point from the method's resolved config (`spec`) with the point's
    values set, and the names of the constructor parameters a grid may sweep."""
    base = dict(spec)
    parameters = set(inspect.signature(target_class(base, "estimator", Estimator)).parameters)

    def make(values: Mapping[str, Any]) -> Estimator:
        return build({**base, **values}, "estimator", base=Estimator)

    return make, parameters


class Split:
    """The paper protocol's one episode as the sweeps read it: the CALM grid reads support, test and V
    rows as lazy views (`evaluate.query_chunk` clips at a time, streamed under `evaluate.memory_budget_mb`);
    the other estimators, which fit on tensors, get the support and V rows in float16 (`fit_rows`)."""

    def __init__(
        self,
        settings: GridSettings,
        episode: Episode,
        features: RowView,
        groups: np.ndarray | None,
        support_groups: np.ndarray,
    ) -> None:
        self.episode, self.features = episode, features
        self.support = features.subset(episode.support)
        self.query = features.subset(episode.query)
        self.reliability = (
            None
            if episode.reliability is None
            else (features.subset(episode.reliability), torch.tensor(episode.reliability_labels))
        )
        self.n_heads = int(self.support.shape[1])
        self.memory_budget = settings.memory_budget_mb * 2**20
        multi = episode.query_label_sets is not None
        self.common = {
            "n_classes": episode.ways,
            "folds": settings.folds,
            "seed": settings.cv_seed,
            "query_targets": multilabel_targets(episode, "query") if multi else None,
            "support_targets": multilabel_targets(episode, "support") if multi else None,
            "query_groups": groups,
            "support_groups": support_groups,
            "positive_class": 1 if episode.ways == 2 else None,
            "query_chunk": settings.query_chunk,
            "device": settings.device,
            "reliability": self.reliability,
            "selection_metric": settings.selection_metric,
        }

    def fit_rows(self) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """The support rows and the named V (rows, labels) in float16, for estimators fitted on tensors."""
        gather = self.features.gather
        support = gather(torch.tensor(self.episode.support), torch.float16)
        return support, None if self.reliability is None else (
            gather(torch.tensor(self.episode.reliability), torch.float16),
            self.reliability[1],
        )

    def labels(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tensor(self.episode.support_labels), torch.tensor(self.episode.query_labels)

    def tie_seed(self, estimator: Any) -> int | None:
        """The seed of this episode's fits: the episode's seed under random tie-breaks or random heads
        (as the episodic reports), else None (the estimator's own)."""
        random_ties = getattr(estimator, "tie_break", "index") == "random"
        random_heads = getattr(estimator, "head_choice", "reliable") != "reliable"
        return self.episode.seed if random_ties or random_heads else None


class GridScorer(ABC):
    """One method's grid on the split: which settings the grid holds for the model's heads, and the
    report that scores them. CALM's engine and the estimator API are the two scorers (`scorer_for`)."""

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator

    @abstractmethod
    def grid(self, grid_cfg: Mapping[str, Any], split: Split) -> tuple[Any, tuple[int, ...]]:
        """The grid for the split's heads, and the top_k values that meant all heads."""

    @abstractmethod
    def score(self, grid: Any, split: Split) -> PaperGridReport:
        """Every setting of `grid` on the split."""


class CalmEngineScorer(GridScorer):
    """CALM through its grid engine (shared work between settings, rows streamed)."""

    def grid(self, grid_cfg: Mapping[str, Any], split: Split) -> tuple[CalmGrid, tuple[int, ...]]:
        estimator, tie_seed = self.estimator, split.tie_seed(self.estimator)
        return CalmGrid.from_config(
            grid_cfg,
            top_k_mode=estimator.top_k_mode,
            tie_break=estimator.tie_break,
            tie_seed=estimator.tie_seed if tie_seed is None else tie_seed,
            head_choice=estimator.head_choice,
            head_seed=fit_head_seed(estimator.head_seed, tie_seed),
        ).for_heads(split.n_heads)

    def score(self, grid: CalmGrid, split: Split) -> PaperGridReport:
        support_labels, query_labels = split.labels()
        return paper_grid_report(
            split.support,
            support_labels,
            split.query,
            query_labels,
            grid,
            dtype=arithmetic_dtype(self.estimator.arithmetic_dtype),
            memory_budget=split.memory_budget,
            **split.common,
        )


class EstimatorScorer(GridScorer):
    """Any other estimator through the estimator API: a grid point is the method's config with the point's
    values set."""

    def __init__(self, estimator: Any, name: str, spec: Mapping[str, Any], grids_file: str) -> None:
        super().__init__(estimator)
        self.name, self.grids_file = name, grids_file
        self.make, self.parameters = point_builder(spec)

    def grid(self, grid_cfg: Mapping[str, Any], split: Split) -> tuple[MethodGrid, tuple[int, ...]]:
        return MethodGrid.from_config(self.name, grid_cfg, self.parameters, self.grids_file).for_heads(split.n_heads)

    def score(self, grid: MethodGrid, split: Split) -> PaperGridReport:
        support_labels, query_labels = split.labels()
        support, reliability = split.fit_rows()
        return paper_sweep_report(
            self.make,
            grid.points(),
            support,
            support_labels,
            split.query,
            query_labels,
            tie_seed=split.tie_seed(self.estimator),
            memory_budget=split.memory_budget,
            **{**split.common, "reliability": reliability},
        )


def scorer_for(name: str, estimator: Any, spec: Mapping[str, Any], grids_file: str) -> GridScorer:
    """CALM's engine for the estimators it covers (`uses_calm_engine`), the estimator API for the rest."""
    if uses_calm_engine(estimator):
        return CalmEngineScorer(estimator)
    return EstimatorScorer(estimator, name, spec, grids_file)


def source_clips(table: ClipTable, rows: np.ndarray) -> np.ndarray:
    """One id per support row naming the clip it came from: a question's source clip, else the row itself
    (a clip drawn twice, as the leaking ESC-50 pool does, gives two rows with one id). Cross-validation
    holds each clip out whole, so a held-out clip is never also fitted on."""
    groups = question_groups(table, rows)
    return np.asarray(rows) if groups is None else groups


def selection_label(record: dict[str, Any]) -> str:
    """How a row's setting was chosen; a `[cv]` row whose support set was too small to cross-validate
    says so instead of claiming a cross-validated choice."""
    if record.get("selected_by") == "default":
        return f"not cross-validated: {record['note']}"
    return record["label"]


def tuned_row(
    shots: int, episode: Episode, method: str, record: dict[str, Any], setting: dict[str, Any]
) -> dict[str, Any]:
    """The results row of one labelled choice (`[cv]`, `[oracle]`): its test scores and setting."""
    test = record["test"]
    row = {
        "method": method,
        "shots": shots,
        "ways": episode.ways,
        "queries": len(episode.query),
        "episodes": 1,
        "accuracy_mean": test["accuracy"],
        "accuracy_ci95": float("nan"),
        "macro_f1_mean": test["macro_f1"],
        "selection": selection_label(record),
        "setting": setting,
    }
    row.update({f"{k}_mean": v for k, v in test.items() if k not in ("accuracy", "macro_f1")})
    return row


class PaperGrid(Report):
    """The tuned rows of protocol=paper (its single episode is the fixed split): two labelled rows per
    tuned method, a `[val]` row with a named V, and one `[cv]` row per choosing method."""

    def __init__(
        self,
        grids: Mapping[str, Mapping[str, Any]],
        tuned: list[str],
        choosing: list[str],
        settings: GridSettings,
        notes: list[str],
    ) -> None:
        self.grids, self.tuned, self.choosing = grids, tuned, choosing
        self.settings, self.notes = settings, notes

    @classmethod
    def applies(cls, job: PreparedJob) -> bool:
        return isinstance(job.protocol, PaperProtocol) and bool(cls.tuned_methods(job))

    @staticmethod
    def tuned_methods(job: PreparedJob) -> list[str]:
        """The job's estimators with a grid, in `estimators` order."""
        return [name for name in job.methods if name in (job.grids or {})]

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], job: PreparedJob, key: str) -> PaperGrid:
        protocol: PaperProtocol = job.protocol
        evaluation = job.evaluation
        tuned = cls.tuned_methods(job)
        choosing = [name for name, estimator in job.methods.items() if isinstance(estimator, AutoSelect)]
        return cls(
            {name: job.grids[name] for name in tuned},
            tuned,
            choosing,
            GridSettings(
                protocol.folds,
                protocol.cv_seed,
                protocol.selection_metric,
                evaluation.query_chunk,
                evaluation.memory_budget_mb,
                job.devices.evaluation,
            ),
            paper_notes(job.dataset, job.prompt, protocol, evaluation.dtype),
        )

    def grid_rows(
        self, job: PreparedJob, episode: Episode, features: RowView
    ) -> tuple[list[dict[str, Any]], dict, list[str]]:
        """The rows, the JSON summary per method, and notes on clamped top_k."""
        split = Split(
            self.settings,
            episode,
            features,
            question_groups(job.table, episode.query),
            source_clips(job.table, episode.support),
        )
        rows, summary, notes, cv_choices = [], {}, [], {}
        for name in self.tuned:
            scorer = scorer_for(name, job.methods[name], job.estimator_specs[name], grids_file(job.dataset.name))
            grid, clamped = scorer.grid(self.grids[name], split)
            report = scorer.score(grid, split)
            if clamped:
                note = (
                    f"{name}: top_k {', '.join(map(str, clamped))} at or above the model's {split.n_heads} heads "
                    "mean all heads"
                )
                log.info(note)
                notes.append(note)
            summary[name] = report.summary()
            cv_choices[name] = report.cv_choice
            configured = {key: job.estimator_specs[name].get(key) for key in self.grids[name]}
            records = report.records()
            for method, record in zip(tuned_row_names(name, len(records) == 3), records, strict=True):
                rows.append(tuned_row(job.shots, episode, method, record, record["setting"] or configured))
        for name in self.choosing:
            record = choice_across_methods(cv_choices)
            summary[name] = record
            rows.append(tuned_row(job.shots, episode, tuned_row_names(name)[0], record, record["setting"]))
        return rows, summary, notes

    def run(
        self, job: PreparedJob, features: RowView | None, episodes: list[Episode], tracker: Tracker
    ) -> ReportOutput:
        rows, summary, notes = self.grid_rows(job, episodes[0], features)
        return ReportOutput(rows=rows, extra={"paper_grid": summary, "notes": self.notes + notes})
