"""The estimators on the protocol's episodes, and the metric policy of a results row.

Every method is fitted and scored on the same episodes; a row reports accuracy (mean, 95 % CI),
macro-F1, exact match for multi-label episodes (the predicted set is the top-|true set| classes) and
EER for two-class episodes, and the paired difference against the baseline method.

Per-label questions (`calm.data.questions`, AudioSet under protocol=paper): each query row is one
question, predicted on its own, and a clip is scored as a whole by `exact_match_questions` (every
question right) and `exact_match_sets` (predicted label set = true label set). Both need every question
of each query clip among the queries, which holds when the protocol scores the whole test split
(protocol=paper); a sampled episode draws questions, not clips, so for such episodes they are left out
(clip-level exact match is undefined on part of a clip) and the row reports per-question accuracy only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from calm.data.questions import covers_whole_clips, question_groups
from calm.data.table import ClipTable
from calm.figures import HeadCollector, HeadGrid, write_job_figures
from calm.methods.base import fit_estimator
from calm.methods.metrics import (
    accuracy,
    detector_scores,
    eer,
    exact_match,
    macro_f1,
    mean_ci95,
    question_exact_match,
    set_exact_match,
    summarize,
    top_label_sets,
)
from calm.methods.prototypes import ReliabilitySet
from calm.protocols import Episode, multilabel_targets
from calm.reports.base import Report, ReportOutput
from calm.reports.selections import selection_fields, selection_notes, selection_shares
from calm.run.tracking import Tracker

if TYPE_CHECKING:
    from calm.run.job import PreparedJob


def score_method(
    estimator: Any,
    support: torch.Tensor,
    episode: Episode,
    query: torch.Tensor,
    groups: np.ndarray | None = None,
    reliability: torch.Tensor | None = None,
) -> dict[str, float]:
    """One method on one episode: accuracy and macro-F1; exact match for multi-label episodes (the
    predicted set is the top-|true set| classes); EER for two-class episodes (detection); with `groups`
    (the clip of each query question, every question of each clip present) both clip-level exact matches.
    `reliability`: the features of the episode's named reliability set V (`episode.reliability`), for
    the estimators that measure reliabilities on labelled clips."""
    support_labels = torch.tensor(episode.support_labels)
    query_labels = torch.tensor(episode.query_labels)
    named = None if reliability is None else ReliabilitySet(reliability, torch.tensor(episode.reliability_labels))
    # each episode breaks head-score ties (and draws random heads) with its own seed
    pred = fit_estimator(
        estimator, support, support_labels, n_classes=episode.ways, tie_seed=episode.seed, reliability_set=named
    ).predict(query)
    metrics = {"accuracy": accuracy(pred, query_labels), "macro_f1": macro_f1(pred, query_labels, episode.ways)}
    if episode.query_label_sets is not None or episode.ways == 2:
        scores = estimator.predict_scores(query)
    if episode.query_label_sets is not None:
        targets = multilabel_targets(episode, "query")
        true_sets = [frozenset(np.flatnonzero(row).tolist()) for row in targets]
        metrics["exact_match"] = exact_match(top_label_sets(scores, targets.sum(axis=1)), true_sets)
    if groups is not None:
        metrics["exact_match_questions"] = question_exact_match(pred, query_labels, groups)
        metrics["exact_match_sets"] = set_exact_match(pred, query_labels, groups)
    if episode.ways == 2 and len(set(episode.query_labels.tolist())) == 2:
        metrics["eer"] = eer(detector_scores(scores, 1), episode.query_labels == 1)
    tied = getattr(estimator, "tied_selections_", None)  # selected heads that tied with the first left out
    metrics["tied_selections"] = float("nan") if tied is None else float(tied)
    return metrics


def tied_selections(episode_rows: list[dict[str, Any]]) -> dict[str, float]:
    """Per method, the mean number of selected heads chosen among ties (only methods that select heads):
    at 1 shot every SAV head ties, so its top_k is the tie rule's choice (docs/design/formulas.md#ties)."""
    counts: dict[str, list[float]] = {}
    for row in episode_rows:
        if np.isfinite(row.get("tied_selections", float("nan"))):
            counts.setdefault(row["method"], []).append(row["tied_selections"])
    return {name: float(np.mean(values)) for name, values in counts.items()}


def evaluation_device(setting: str) -> torch.device:
    """`evaluate.device`: auto is the GPU when there is one, else the CPU."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def clip_groups(table: ClipTable | None, episodes: list[Episode]) -> list[np.ndarray | None]:
    """Per episode, the clip of each query question (`question_groups`), when `table` holds per-label
    questions and every episode's queries hold every question of their clips; else None for all, so
    every episode row has the same metrics."""
    groups = [question_groups(table, e.query) if table is not None else None for e in episodes]
    if any(g is None for g in groups) or not all(covers_whole_clips(table, e.query) for e in episodes):
        return [None] * len(episodes)
    return groups


def evaluate(
    episodes: list[Episode],
    features: torch.Tensor,
    methods: dict[str, Any],
    tracker: Tracker,
    collector: HeadCollector | None = None,
    device: torch.device | None = None,
    table: ClipTable | None = None,
) -> tuple[dict[str, list[float]], list[dict[str, Any]]]:
    """Every method on the same episodes; returns per-method accuracies and the per-episode rows.
    Each episode's rows are gathered (and upcast) on their own and moved to `device` (default: where
    `features` are). `collector` reads each fit's head weights / selected heads (for the figures).
    `table` (the job's) lets per-label questions be scored per clip too (`clip_groups`)."""
    per_method: dict[str, list[float]] = {name: [] for name in methods}
    rows = []
    groups = clip_groups(table, episodes)
    for episode, episode_groups in zip(episodes if methods else [], groups, strict=False):
        support = features[torch.tensor(episode.support)].to(device).float()
        query = features[torch.tensor(episode.query)].to(device).float()
        reliability = (
            None if episode.reliability is None else features[torch.tensor(episode.reliability)].to(device).float()
        )
        logged = {}
        for name, estimator in methods.items():
            metrics = score_method(estimator, support, episode, query, episode_groups, reliability)
            if collector is not None:
                collector.add(name, estimator, episode.classes)
            per_method[name].append(metrics["accuracy"])
            logged.update({f"{name}/{key}": value for key, value in metrics.items()})
            rows.append(
                {
                    "episode": episode.index,
                    "seed": episode.seed,
                    "method": name,
                    **metrics,
                    **selection_fields(estimator),
                }
            )
        tracker.log_episode(episode.index, logged)
    return per_method, rows


def result_rows(
    shots: int,
    per_method: dict[str, list[float]],
    episode_rows: list[dict[str, Any]],
    ways: int,
    queries: int,
    baseline: str | None,
) -> list[dict[str, Any]]:
    """One row per method: accuracy mean and 95 % CI, macro-F1, the metrics only some episodes have
    (exact matches, EER) when the method's episodes have them, and the paired difference vs baseline."""
    summary = summarize(per_method, baseline if baseline in per_method else None)
    rows = []
    for name, stats in summary.items():
        mine = [r for r in episode_rows if r["method"] == name]
        row = {
            "method": name,
            "shots": shots,
            "ways": ways,
            "queries": queries,
            "episodes": stats["episodes"],
            "accuracy_mean": stats["mean"],
            "accuracy_ci95": stats["ci95"],
            "macro_f1_mean": float(np.mean([r["macro_f1"] for r in mine])),
        }
        for extra in ("exact_match", "exact_match_questions", "exact_match_sets", "eer"):
            if extra in mine[0]:
                row[f"{extra}_mean"], row[f"{extra}_ci95"] = mean_ci95([r[extra] for r in mine])
        if "diff_mean" in stats:
            row.update(
                baseline=baseline, diff_vs_baseline_mean=stats["diff_mean"], diff_vs_baseline_ci95=stats["diff_ci95"]
            )
        rows.append(row)
    return rows


class EpisodicMethods(Report):
    """The configured estimators on every episode; with `figures`, the heads they weight or select."""

    def __init__(self, reads_features: bool) -> None:
        self.reads_features = reads_features

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], job: PreparedJob, key: str) -> EpisodicMethods:
        return cls(reads_features=bool(job.methods))

    def run(
        self, job: PreparedJob, features: torch.Tensor | None, episodes: list[Episode], tracker: Tracker
    ) -> ReportOutput:
        collector = HeadCollector(job.cache.n_heads, len(job.table.class_names)) if job.figures else None
        per_method, episode_rows = evaluate(
            episodes, features, job.methods, tracker, collector, job.devices.evaluation, job.table
        )
        if collector is not None:
            tracker.log_figures(
                write_job_figures(
                    collector,
                    HeadGrid.from_names(job.cache.head_names, job.cache.n_heads),
                    job.table.class_names,
                    job.out_dir,
                    f"{job.dataset.name} · {job.backbone.name} · {job.shots}-shot",
                )
            )
        extra = {"tied_selections": tied_selections(episode_rows)}
        shares = selection_shares(episode_rows, job.methods)
        if shares:  # method=auto: which candidate each episode chose
            extra.update(selections=shares, notes=selection_notes(shares))
        return ReportOutput(per_method=per_method, episode_rows=episode_rows, extra=extra)
