"""hparams_search=calm_optuna: Optuna tunes CALM by cross-validation on the support set only. Each
trial's objective is the support-CV score of its settings; the query/test clips never move it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
import yaml
from omegaconf import OmegaConf

from calm.errors import ConfigError
from calm.methods import CALM
from calm.protocols import Episode
from calm.run.search import check_objective, search_record, search_settings
from calm.run.sweeps import job_key
from calm.selection.cross_validation import fold_seed, stratified_folds, support_cv_scores
from calm.testing.synthetic import synthetic_split
from tests.cli import compose_config
from tests.sweep_runs import TINY_ARGS, run_sweep, tiny_data


def _search_config(tmp_path: Path, *overrides: str):
    return compose_config(["hparams_search=calm_optuna", "method=calm", "shots=3", *overrides], tmp_path)


def _synthetic_episode(seed: int = 1) -> tuple[torch.Tensor, Episode]:
    """3-shot 4-way support and 3 queries per class, hard enough that CV accuracy is below 100 %."""
    split = synthetic_split(heads=16, dim=8, classes=4, support_per_class=3, queries=3, signal=0.25, seed=seed)
    n, m = len(split.labels), len(split.query_labels)
    episode = Episode(
        index=0,
        seed=11,
        classes=np.arange(4),
        support=np.arange(n),
        support_labels=split.labels.numpy(),
        query=np.arange(n, n + m),
        query_labels=split.query_labels.numpy(),
    )
    return torch.cat([split.support, split.query]), episode


def _with(episode: Episode, **changes) -> Episode:
    fields = {
        name: getattr(episode, name)
        for name in ("index", "seed", "classes", "support", "support_labels", "query", "query_labels")
    }
    return Episode(**{**fields, **changes})


def test_the_objective_ignores_query_clips_and_labels(tmp_path: Path) -> None:
    search = search_settings(_search_config(tmp_path))
    features, episode = _synthetic_episode()
    before = search_record(search, [episode], features)
    assert 0 < before["support_cv_accuracy"] < 100

    scrambled = features.clone()
    queries = torch.tensor(episode.query)
    scrambled[queries] = torch.randn_like(scrambled[queries]) * 50
    other_queries = _with(episode, query=episode.query[::-1].copy(), query_labels=(episode.query_labels + 1) % 4)
    assert search_record(search, [other_queries], scrambled) == before

    swapped = episode.support_labels.copy()
    swapped[[0, -1]] = swapped[[-1, 0]]
    assert search_record(search, [_with(episode, support_labels=swapped)], features) != before


class _Spy:
    """Records what each fit and predict sees, then behaves as CALM."""

    def __init__(self) -> None:
        self.fits: list[np.ndarray] = []
        self.predicted: list[torch.Tensor] = []
        self.calm = CALM()

    def fit(self, features: torch.Tensor, labels: torch.Tensor, *, n_classes: int) -> _Spy:
        self.fits.append(np.asarray(labels))
        self.calm.fit(features, labels, n_classes=n_classes)
        return self

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        self.predicted.append(features)
        return self.calm.predict(features)


def test_few_shots_hold_out_one_clip_per_class_and_predict_each_support_clip_once() -> None:
    features, episode = _synthetic_episode()
    support = features[torch.tensor(episode.support)]
    spy = _Spy()
    scores = support_cv_scores(spy, support, episode.support_labels, 4, folds=5, seed=0)
    assert scores["folds"] == 3
    assert [np.bincount(labels, minlength=4).tolist() for labels in spy.fits] == [[2, 2, 2, 2]] * 3
    predicted = torch.cat(spy.predicted)
    assert predicted.shape[0] == len(episode.support)
    assert sorted(map(tuple, predicted.flatten(1).tolist())) == sorted(map(tuple, support.flatten(1).tolist()))


@pytest.mark.parametrize("metric", ["accuracy_mean", "calm/accuracy", "macro_f1_mean"])
def test_test_metrics_are_refused_as_objectives(tmp_path: Path, metric: str) -> None:
    with pytest.raises(ConfigError, match="not a support-set cross-validation metric") as err:
        check_objective(_search_config(tmp_path, f"optimized_metric={metric}"))
    assert "support_cv_accuracy" in err.value.fix


def test_search_needs_two_shots_and_the_tuned_estimator(tmp_path: Path) -> None:
    assert check_objective(_search_config(tmp_path)) == "support_cv_accuracy"
    assert check_objective(compose_config(["method=calm"], tmp_path)) is None
    with pytest.raises(ConfigError, match="shots=1"):
        check_objective(_search_config(tmp_path, "shots=1"))
    with pytest.raises(ConfigError, match="method=sav"):
        check_objective(_search_config(tmp_path, "method=sav"))


def test_the_search_fits_only_calm_unless_a_method_is_named(tmp_path: Path) -> None:
    """SAV rows would be refitted in every trial for nothing: the objective reads CALM only."""
    assert compose_config(["hparams_search=calm_optuna"], tmp_path).method.name == "calm"
    assert compose_config(["hparams_search=calm_optuna", "method=calm_vs_sav"], tmp_path).method.name == "calm_vs_sav"


def _support_cv_by_hand(job: dict) -> float:
    """Recompute a job's objective from its config: its episodes, the cached features, and CALM fitted
    fold by fold on the support clips."""
    from calm.backbones import build_backbone
    from calm.data.prompts import build_prompt
    from calm.data.registry import read_dataset
    from calm.protocols import Pools
    from calm.run.job import build_protocol, open_cache

    cfg = OmegaConf.create(job["config"])
    table = read_dataset(cfg.dataset, cfg.paths.data_dir).table
    cache = open_cache(
        Path(cfg.paths.cache_dir),
        build_backbone(cfg.backbone, str(cfg.trainer.precision)),
        build_prompt(OmegaConf.to_container(cfg.prompt, resolve=True)),
    )
    features = cache.rows(table.ids)  # only the clips the episodes use are cached
    settings = {k: v for k, v in job["config"]["method"]["estimators"]["calm"].items() if k != "_target_"}
    scores = []
    for episode in build_protocol(cfg).episodes(Pools.from_table(table)):
        labels = np.array(episode.support_labels)
        support = features[torch.tensor(episode.support)]
        fold = stratified_folds(labels, min(cfg.search.folds, cfg.shots), fold_seed(cfg.search.seed, episode.seed))
        correct = 0
        for f in np.unique(fold):
            held = torch.from_numpy(fold == f)
            fitted = CALM(**settings).fit(support[~held], torch.from_numpy(labels)[~held], n_classes=episode.ways)
            correct += int((fitted.predict(support[held]).numpy() == labels[held.numpy()]).sum())
        scores.append(100.0 * correct / len(labels))
    return float(np.mean(scores))


def test_optuna_trials_score_their_settings_by_support_cross_validation(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, fsdd_root: Path
) -> None:
    data, cache = tiny_data(tmp_path_factory, fsdd_root)
    db, sweep = tmp_path / "optuna.db", tmp_path / "sweep"
    done = run_sweep(
        [
            "hparams_search=calm_optuna",
            f"dataset.root={data}",
            *TINY_ARGS,
            "shots=2",
            "method=calm",
            "hydra.sweeper.n_trials=4",
            f"hydra.sweeper.storage=sqlite:///{db}",
            "method.estimators.calm.tau=choice(0.0001,0.05)",
            "method.estimators.calm.top_k=choice(5,100000)",
            "method.estimators.calm.tau_w=0.5",
            "method.estimators.calm.reliability=margin_clamped",
        ],
        sweep,
        tmp_path / "finished",
        cache,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    trials = optuna.load_study(study_name="calm_fsdd_2shot", storage=f"sqlite:///{db}").trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 4
    for trial in trials:
        job = json.loads((sweep / str(trial.number) / "results.json").read_text())
        calm = job["config"]["method"]["estimators"]["calm"]
        assert (calm["tau"], calm["top_k"]) == (
            float(trial.params["method.estimators.calm.tau"]),
            int(trial.params["method.estimators.calm.top_k"]),
        )
        assert trial.value == pytest.approx(_support_cv_by_hand(job), abs=1e-9)
        assert job["search"]["support_cv_accuracy"] == trial.value
        assert {row["method"] for row in job["results"]} == {"calm"}  # the test metrics, kept apart
    values = [t.value for t in trials]
    assert len(set(values)) > 1, "the tiny data must tell settings apart for this check to mean anything"
    assert yaml.safe_load((sweep / "optimization_results.yaml").read_text())["best_value"] == max(values)


def test_a_failed_trial_is_told_to_optuna_as_failed_and_the_search_goes_on(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, fsdd_root: Path
) -> None:
    """Trials whose estimator explodes are FAIL in the study and listed by the sweep report; the others
    complete, keep their results, and the best value comes from them."""
    data, cache = tiny_data(tmp_path_factory, fsdd_root)
    db, sweep = tmp_path / "optuna.db", tmp_path / "sweep"
    exploding = "tests.exploding.ExplodingEstimator"
    done = run_sweep(
        [
            "hparams_search=calm_optuna",
            f"dataset.root={data}",
            *TINY_ARGS,
            "shots=2",
            "hydra.sweeper.n_trials=3",
            f"hydra.sweeper.storage=sqlite:///{db}",
            f"method.estimators.calm._target_=choice({exploding},calm.methods.CALM)",
            "method.estimators.calm.tau=choice(0.0001,0.05)",
            "method.estimators.calm.top_k=null",
            "method.estimators.calm.tau_w=0.5",
            "method.estimators.calm.reliability=margin_clamped",
        ],
        sweep,
        tmp_path / "finished",
        cache,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-3000:]  # failed trials make the search exit 1; the others' results stay
    assert "float-castable" not in output
    trials = optuna.load_study(study_name="calm_fsdd_2shot", storage=f"sqlite:///{db}").trials
    failed = [t for t in trials if t.params["method.estimators.calm._target_"] == exploding]
    completed = [t for t in trials if t not in failed]
    assert failed and completed, "the sampler must draw both estimators for this check to mean anything"
    assert {t.state for t in failed} == {optuna.trial.TrialState.FAIL}
    assert {t.state for t in completed} == {optuna.trial.TrialState.COMPLETE}
    for trial in failed:
        job = sweep / str(trial.number)
        assert (job / "error.txt").read_text().startswith("RuntimeError: boom")
        assert not (job / "results.json").exists()
        assert output.count(f"trial {trial.number} failed: RuntimeError: boom") >= 1
        assert str(job) in output.split("failed job(s)")[1]
    assert f"sweep finished with {len(failed)} failed job(s)" in output
    for trial in completed:
        job = json.loads((sweep / str(trial.number) / "results.json").read_text())
        assert job["search"]["support_cv_accuracy"] == trial.value
        run_name = job["config"]["logger"]["run_name"]  # logger=none keeps it; ${hydra:job.num} resolved
        assert run_name == f"fsdd-whisper_tiny-calm-search-2shot-trial{trial.number}"
        renamed = OmegaConf.create(job["config"])
        renamed.logger.run_name = "another-trial"
        assert job_key(renamed) == job_key(OmegaConf.create(job["config"]))
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())["best_value"]
    assert best == max(t.value for t in completed)
