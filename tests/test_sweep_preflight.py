"""A sweep that cannot run as asked is rejected before any job starts: a clear message naming the
problem and the fix, exit code 2, and no job folder or result anywhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.sweep_runs import rejected_sweep, run_sweep

EXPERIMENTS = {
    "unknown_group": "# @package _global_\ndefaults:\n  - override /dataset: nosuch\n",
    "unknown_name": "# @package _global_\ndataset:\n  name: nosuch\n",
}


@pytest.fixture
def experiments(tmp_path: Path) -> str:
    """A config search path holding experiment files that name a dataset calm does not have."""
    folder = tmp_path / "extra_configs" / "experiment"
    folder.mkdir(parents=True)
    for name, text in EXPERIMENTS.items():
        (folder / f"{name}.yaml").write_text(text)
    return f"hydra.searchpath=[file://{folder.parent}]"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["shots=1,5", "shotz=1,5"], ["`shotz`, which is not a setting", "did you mean `shots`?"]),
        (
            ["method=calm", "method.estimators.calm.tauu=1,2"],
            ["`method.estimators.calm.tauu`, which is not a setting", "did you mean `method.estimators.calm.tau`?"],
        ),
        (["dataset=fsdd,nosuch"], ["no configs/dataset/nosuch.yaml", "use one of ['asvspoof2019_la'"]),
        (["seed=range(0,40)", "dataset.name=fsdd,nosuch"], ["dataset.name='nosuch' is not a dataset", "'esc50'"]),
    ],
    ids=["misspelt-key", "misspelt-estimator-key", "unknown-dataset-config", "unknown-name-in-a-large-sweep"],
)
def test_a_bad_sweep_is_rejected_before_any_job(tmp_path: Path, args: list[str], expected: list[str]) -> None:
    output = rejected_sweep(tmp_path, args)
    for text in expected:
        assert text in output


def test_an_experiment_naming_an_unknown_dataset_config_is_rejected(tmp_path: Path, experiments: str) -> None:
    output = rejected_sweep(tmp_path, [experiments, "experiment=quickstart,unknown_group"])
    assert "the config picked by `experiment=unknown_group` names `dataset: nosuch`" in output
    assert "'fsdd'" in output


def test_an_experiment_naming_an_unknown_dataset_is_rejected(tmp_path: Path, experiments: str) -> None:
    output = rejected_sweep(tmp_path, [experiments, "experiment=unknown_name", "seed=0,1"])
    assert "dataset.name='nosuch' is not a dataset calm can read (experiment=unknown_name" in output
    assert "dataset=folder dataset.root=PATH" in output


@pytest.mark.parametrize("metric", ["accuracy_mean", "calm/accuracy"])
def test_a_search_on_a_test_metric_is_rejected(tmp_path: Path, metric: str) -> None:
    output = rejected_sweep(tmp_path, ["hparams_search=calm_optuna", f"optimized_metric={metric}"])
    assert f"optimized_metric={metric!r} is not a support-set cross-validation metric" in output
    assert "support_cv_accuracy" in output


def test_an_unswept_experiment_naming_an_unknown_config_stops_before_any_job(tmp_path: Path, experiments: str) -> None:
    """Not swept, the experiment is part of the sweep's own config: Hydra rejects it while composing
    that, before the preflight or any job runs, with its own message (exit code 1)."""
    sweep = tmp_path / "sweep"
    done = run_sweep(
        ["backbone=whisper_tiny", "logger=none", experiments, "experiment=unknown_group", "seed=0,1"],
        sweep,
        tmp_path / "finished",
        tmp_path / "cache",
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "Could not find 'dataset/nosuch'" in output and "fsdd" in output
    assert not sweep.exists()


def test_a_search_that_never_changes_the_scored_estimator_is_rejected(tmp_path: Path) -> None:
    """calm_optuna searches CALM's settings; scoring SAV instead, every trial would score the same SAV."""
    output = rejected_sweep(tmp_path, ["hparams_search=calm_optuna", "method=calm_vs_sav", "search.estimator=sav"])
    assert "search.estimator=sav is the estimator whose support-set score Optuna optimises" in output
    assert "no searched setting lies under `method.estimators.sav.`" in output
    assert "method.estimators.calm.tau" in output and "set search.estimator" in output
