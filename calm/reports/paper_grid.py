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
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from calm.cache import RowView
from calm.config_objects import build, target_class
from calm.config_schema import paper_grids
from calm.data.questions import question_groups
from calm.data.table import ClipTable
from calm.methods import Estimator
from calm.methods.calm_core import fit_head_seed
from calm.methods.precision import arithmetic_dtype
from calm.protocols import Episode, multilabel_targets
from calm.reports.base import ReportOutput
from calm.reports.episodic import evaluation_device
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
from calm.tracking import Tracker

if TYPE_CHECKING:
    from calm.job import PreparedJob

log = logging.getLogger(__name__)


def tuned_methods(cfg: DictConfig) -> list[str]:
    """The methods protocol=paper sweeps: those of the job's `estimators` with a grid, in `estimators`
    order; none under other protocols (a ConfigError under protocol=paper without grids)."""
    grids = paper_grids(cfg)
    if grids is None:
        return []
    return [name for name in cfg.method.get("estimators") or {} if name in grids]


def choosing_methods(cfg: DictConfig) -> list[str]:
    """The job's `AutoSelect` estimators (method=auto) when protocol=paper tunes methods: each adds a
    `<name>[cv]` row, the [cv] choice across the tuned methods (`choice_across_methods`)."""
    if not tuned_methods(cfg):
        return []
    return [name for name, spec in (cfg.method.get("estimators") or {}).items()
            if spec and spec.get("_target_") and issubclass(target_class(spec, "estimator"), AutoSelect)]


def named_reliability(cfg: DictConfig) -> bool:
    """Whether the protocol names a reliability set V apart from the support set (protocol.reliability=val)."""
    return cfg.protocol.get("reliability", "support") != "support"


def tuned_rows(cfg: DictConfig) -> list[str]:
    """The result rows the sweep adds: `tuned_row_names` of every tuned method ([val] rows with a named V),
    and the `[cv]` row of every choosing method."""
    return ([row for name in tuned_methods(cfg) for row in tuned_row_names(name, named_reliability(cfg))]
            + [tuned_row_names(name)[0] for name in choosing_methods(cfg)])


def grids_file(cfg: DictConfig) -> str:
    """The grid file of the job's dataset, for messages."""
    return f"configs/grids/{cfg.dataset.name}.yaml"


def paper_notes(cfg: DictConfig) -> list[str]:
    """What a reader of protocol=paper results must know about how they differ from the reference."""
    manifests = str(cfg.dataset.get("_target_", "")).endswith(".Manifest")
    if manifests:
        notes = ["support, val and test are the rows of the manifests as given: a clip listed in both support (or "
                 "val) and test is used as both (the share is measured, in the rows and notes, when there is one)"]
    else:
        notes = ["support is drawn only from the training pool; no clip of the test split is ever in the support set"]
    if cfg.dataset.name == "esc50":
        notes.append("the reference code drew ESC-50 support from files that hold test clips; this job draws "
                     "from the clean pool, so its numbers can be lower than the published ones (the paper "
                     "table's replay groups run the authors' files and measure the overlap)")
    if named_reliability(cfg):
        notes.append("reliabilities (CALM, GRW) are measured on the table's val clips V with prototypes from the "
                      "support set; <method>[val] is the setting best on V (SAV and the other rankings use the "
                      "support set, as the authors' runner did)")
    if cfg.get("evaluate", {}).get("dtype", "float32") == "model":
        notes.append("evaluate.dtype=model: CALM's prototypes, cosines and softmax run in the backbone's dtype and "
                     "are cast to float32 after the softmax, as the authors' runner did")
    if not str(cfg.prompt.get("_target_", "")).endswith((".PaperPrompt", ".ManifestPrompt")):
        notes.append("prompt is not a `paper` prompt: the published protocol used multiple-choice prompts "
                     "containing the label")
    return notes


def point_builder(spec: DictConfig) -> tuple[Build, set[str]]:
    """Builds the estimator of a grid point from the method's config (`spec`) with the point's values set,
    and the names of the constructor parameters a grid may sweep."""
    base = OmegaConf.to_container(spec, resolve=True)
    parameters = set(inspect.signature(target_class(base, "estimator", Estimator)).parameters)

    def make(values: Mapping[str, Any]) -> Estimator:
        return build({**base, **values}, "estimator", base=Estimator)

    return make, parameters


class Split:
    """The paper protocol's one episode as the sweeps read it: the CALM grid reads support, test and V
    rows as lazy views (`evaluate.query_chunk` clips at a time, streamed under `evaluate.memory_budget_mb`);
    the other estimators, which fit on tensors, get the support and V rows in float16 (`fit_rows`)."""

    def __init__(self, cfg: DictConfig, episode: Episode, features: RowView, groups: np.ndarray | None,
                 support_groups: np.ndarray) -> None:
        self.episode, self.features = episode, features
        self.support = features.subset(episode.support)
        self.query = features.subset(episode.query)
        self.reliability = None if episode.reliability is None else (
            features.subset(episode.reliability), torch.tensor(episode.reliability_labels))
        self.n_heads = int(self.support.shape[1])
        self.memory_budget = int(cfg.evaluate.get("memory_budget_mb", 128)) * 2**20
        multi = episode.query_label_sets is not None
        self.common = {
            "n_classes": episode.ways, "folds": cfg.protocol.folds, "seed": cfg.protocol.cv_seed,
            "query_targets": multilabel_targets(episode, "query") if multi else None,
            "support_targets": multilabel_targets(episode, "support") if multi else None,
            "query_groups": groups, "support_groups": support_groups,
            "positive_class": 1 if episode.ways == 2 else None,
            "query_chunk": int(cfg.evaluate.query_chunk), "device": evaluation_device(cfg.evaluate.device),
            "reliability": self.reliability, "selection_metric": cfg.protocol.get("selection_metric", "accuracy"),
        }

    def fit_rows(self) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """The support rows and the named V (rows, labels) in float16, for estimators fitted on tensors."""
        gather = self.features.gather
        support = gather(torch.tensor(self.episode.support), torch.float16)
        return support, None if self.reliability is None else (
            gather(torch.tensor(self.episode.reliability), torch.float16), self.reliability[1])

    def labels(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tensor(self.episode.support_labels), torch.tensor(self.episode.query_labels)

    def tie_seed(self, estimator: Any) -> int | None:
        """The seed of this episode's fits: the episode's seed under random tie-breaks or random heads
        (as the episodic reports), else None (the estimator's own)."""
        random_ties = getattr(estimator, "tie_break", "index") == "random"
        random_heads = getattr(estimator, "head_choice", "reliable") != "reliable"
        return self.episode.seed if random_ties or random_heads else None


def sweep_method(cfg: DictConfig, name: str, estimator: Any, grid_cfg: Mapping[str, Any],
                 split: Split) -> tuple[PaperGridReport, tuple[int, ...]]:
    """One method's grid on the split, and the top_k values that meant all heads."""
    support_labels, query_labels = split.labels()
    if uses_calm_engine(estimator):
        tie_seed = split.tie_seed(estimator)
        grid, clamped = CalmGrid.from_config(
            grid_cfg, top_k_mode=estimator.top_k_mode, tie_break=estimator.tie_break,
            tie_seed=estimator.tie_seed if tie_seed is None else tie_seed, head_choice=estimator.head_choice,
            head_seed=fit_head_seed(estimator.head_seed, tie_seed)).for_heads(split.n_heads)
        return paper_grid_report(split.support, support_labels, split.query, query_labels, grid,
                                 dtype=arithmetic_dtype(estimator.arithmetic_dtype),
                                 memory_budget=split.memory_budget, **split.common), clamped
    make, parameters = point_builder(cfg.method.estimators[name])
    grid, clamped = MethodGrid.from_config(name, grid_cfg, parameters, grids_file(cfg)).for_heads(split.n_heads)
    support, reliability = split.fit_rows()
    return paper_sweep_report(make, grid.points(), support, support_labels, split.query, query_labels,
                              tie_seed=split.tie_seed(estimator), memory_budget=split.memory_budget,
                              **{**split.common, "reliability": reliability}), clamped


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


def tuned_row(cfg: DictConfig, episode: Episode, method: str, record: dict[str, Any],
              setting: dict[str, Any]) -> dict[str, Any]:
    """The results row of one labelled choice (`[cv]`, `[oracle]`): its test scores and setting."""
    test = record["test"]
    row = {"method": method, "shots": cfg.shots, "ways": episode.ways, "queries": len(episode.query),
           "episodes": 1, "accuracy_mean": test["accuracy"], "accuracy_ci95": float("nan"),
           "macro_f1_mean": test["macro_f1"], "selection": selection_label(record), "setting": setting}
    row.update({f"{k}_mean": v for k, v in test.items() if k not in ("accuracy", "macro_f1")})
    return row


def grid_rows(job: PreparedJob, episode: Episode, features: RowView) -> tuple[list[dict[str, Any]], dict, list[str]]:
    """Two labelled rows per tuned method, one `[cv]` row per choosing method (`choosing_methods`), the
    JSON summary per method, and notes on clamped top_k."""
    cfg = job.cfg
    grids = paper_grids(cfg)
    split = Split(cfg, episode, features, question_groups(job.table, episode.query),
                  source_clips(job.table, episode.support))
    rows, summary, notes, cv_choices = [], {}, [], {}
    for name in tuned_methods(cfg):
        report, clamped = sweep_method(cfg, name, job.methods[name], grids[name], split)
        if clamped:
            note = (f"{name}: top_k {', '.join(map(str, clamped))} at or above the model's {split.n_heads} heads "
                    "mean all heads")
            log.info(note)
            notes.append(note)
        summary[name] = report.summary()
        cv_choices[name] = report.cv_choice
        configured = {key: cfg.method.estimators[name].get(key) for key in grids[name]}
        records = report.records()
        for method, record in zip(tuned_row_names(name, len(records) == 3), records, strict=True):
            rows.append(tuned_row(cfg, episode, method, record, record["setting"] or configured))
    for name in choosing_methods(cfg):
        record = choice_across_methods(cv_choices)
        summary[name] = record
        rows.append(tuned_row(cfg, episode, tuned_row_names(name)[0], record, record["setting"]))
    return rows, summary, notes


class PaperGrid:
    """The tuned rows of protocol=paper (its single episode is the fixed split)."""

    def run(self, job: PreparedJob, features: RowView | None, episodes: list[Episode],
            tracker: Tracker) -> ReportOutput:
        rows, summary, notes = grid_rows(job, episodes[0], features)
        return ReportOutput(rows=rows, extra={"paper_grid": summary, "notes": paper_notes(job.cfg) + notes})
