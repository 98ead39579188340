"""A hyper-parameter search blind to the test set (docs/design/formulas.md#support-set-cross-validation).

`hparams_search=calm_optuna` lets Optuna tune CALM's settings; the score each trial hands back is
cross-validation accuracy on the support set alone. Per episode the support clips are dealt into
stratified folds (`calm.selection.cross_validation`, the paper grid's rule; with `shots` ≤ `search.folds` every fold
holds out
exactly one clip per class, leave-one-per-class-out); the estimator with the trial's settings is
fitted on the other folds and predicts the held-out ones; the pooled held-out accuracy (and
macro-F1) per episode is averaged over the episodes. Query clips and their labels are never read,
so the test metrics each job still reports stay an honest estimate of the chosen setting.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from calm.errors import ConfigError
from calm.run.sweeps import ERROR_FILE

if TYPE_CHECKING:
    import torch

    from calm.protocols import Episode

# Objectives a search may optimise (all computed on support clips only), and the metric each pools.
SEARCH_METRICS = ("support_cv_accuracy", "support_cv_macro_f1")
NOTE = (
    "stratified cross-validation within each episode's support set, averaged over episodes; "
    "query/test clips are never used (the test metrics are in `results`)"
)


def check_objective(cfg: DictConfig) -> str | None:
    """The metric a search optimises, or None when the config asks for no search.

    Raises ConfigError for a test metric (choosing settings by their test score is what the
    paper's oracle did), for an estimator the method lacks, and for settings cross-validation
    cannot run with.
    """
    metric = cfg.get("optimized_metric")
    if metric is None:
        return None
    if metric not in SEARCH_METRICS:
        raise ConfigError(
            f"optimized_metric={metric!r} is not a support-set cross-validation metric; a search that "
            "optimises a test metric (accuracy_mean, calm/accuracy, ...) chooses settings by their test "
            "score, which then overstates how well they do",
            f"set optimized_metric to one of {list(SEARCH_METRICS)} (hparams_search=calm_optuna does); "
            "every trial's test metrics are still written to its results.json",
        )
    search = cfg.get("search")
    if search is None:
        raise ConfigError(
            f"optimized_metric={metric} is set but the config has no `search` block",
            "use hparams_search=calm_optuna, which sets search.estimator, search.folds and search.seed",
        )
    estimators = cfg.method.get("estimators") or {}
    if search.get("estimator") not in estimators:
        raise ConfigError(
            f"the search tunes estimator {search.get('estimator')!r}, but method={cfg.method.name} has "
            f"{sorted(estimators) or 'no estimators'}",
            "pick a method that includes it (method=calm or method=calm_vs_sav), or set search.estimator",
        )
    if int(search.get("folds", 0)) < 2:
        raise ConfigError(
            f"search.folds={search.get('folds')}: cross-validation needs at least 2 folds",
            "set search.folds=5 (fewer shots than folds already means one clip per class out)",
        )
    if int(cfg.shots) < 2:
        raise ConfigError(
            f"shots={cfg.shots}: support-set cross-validation needs at least 2 support clips per class "
            "(holding out the only clip of a class leaves it without a prototype)",
            "search with shots=2 or more; the chosen settings can then be run at shots=1",
        )
    return metric


class TrialFailed(RuntimeError):
    """A search trial that failed, raised so the Optuna sweeper tells Optuna FAIL (a None return would
    only be refused as not float-castable). One plain message, so it pickles back from joblib and
    submitit workers."""


def optuna_sweeper(sweeper: Mapping[str, Any] | None) -> bool:
    """Whether `hydra.sweeper` is the Optuna sweeper (the one that reads the objective a job returns)."""
    return "optuna" in str((sweeper or {}).get("_target_", "")).lower()


def trial_failure(job_num: int, err: BaseException, out_dir: Path) -> TrialFailed:
    """One line naming the trial (the sweep's job number, its folder's name) and the error; the full
    traceback is in the folder's error.txt."""
    text = " ".join(str(err).split()) or "(no message)"
    return TrialFailed(f"trial {job_num} failed: {type(err).__name__}: {text} (details: {out_dir / ERROR_FILE})")


def episode_cv_scores(spec: Any, support: torch.Tensor, episode: Episode, folds: int, cv_seed: int) -> dict[str, Any]:
    """Support-set cross-validation of the estimator `spec` on one episode's support clips, with the
    episode's own fold seed (`fold_seed(cv_seed, episode.seed)`)."""
    from calm.methods.base import build_estimator
    from calm.selection.cross_validation import fold_seed, support_cv_scores, too_few_clips

    scores = support_cv_scores(
        build_estimator(spec), support, episode.support_labels, episode.ways, folds, fold_seed(cv_seed, episode.seed)
    )
    if scores is None:
        smallest = int(np.bincount(np.asarray(episode.support_labels), minlength=episode.ways).min())
        raise ConfigError(f"{too_few_clips(smallest)} for cross-validation", "use shots=2 or more for a search")
    return scores


@dataclass(frozen=True)
class SearchSettings:
    """An active search, resolved once when the job is prepared: the metric it optimises, the estimator it
    tunes (its name and resolved config, `_target_` included) and the cross-validation folds and seed."""

    metric: str
    estimator: str
    spec: dict[str, Any]
    folds: int
    seed: int


def search_settings(cfg: DictConfig) -> SearchSettings | None:
    """The job's search (checked by `check_objective`), or None when the config asks for none."""
    metric = check_objective(cfg)
    if metric is None:
        return None
    search = cfg.search
    return SearchSettings(
        metric,
        str(search.estimator),
        OmegaConf.to_container(cfg.method.estimators[search.estimator], resolve=True),
        int(search.folds),
        int(search.seed),
    )


def search_record(search: SearchSettings, episodes: Sequence[Episode], features: torch.Tensor) -> dict[str, Any]:
    """The search objective of one job, for results.json. Reads each episode's support rows and support
    labels only."""
    import torch

    from calm.methods.metrics import mean_ci95

    per_episode = []
    for episode in episodes:
        support = features[torch.tensor(episode.support)]
        per_episode.append(episode_cv_scores(search.spec, support, episode, search.folds, search.seed))
    record: dict[str, Any] = {
        "optimized_metric": search.metric,
        "estimator": search.estimator,
        "settings": {k: v for k, v in search.spec.items() if k != "_target_"},
        "folds": sorted({s["folds"] for s in per_episode}),
        "episodes": len(per_episode),
        "note": NOTE,
    }
    for name in SEARCH_METRICS:
        record[name], record[f"{name}_ci95"] = mean_ci95([s[name] for s in per_episode])
    return record


def objective_value(cfg: DictConfig, result: Mapping[str, Any] | None) -> float | None:
    """What `run.py` hands the sweeper: the job's support-CV score, or None outside a search."""
    metric = cfg.get("optimized_metric")
    record = (result or {}).get("search")
    if metric is None or record is None:
        return None
    return float(record[metric])
