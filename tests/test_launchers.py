"""Launchers: joblib runs a sweep's jobs in parallel worker processes (failures recorded, finished
jobs skipped on a rerun), submitit runs each job as a submitit job, and the SLURM config turns the
trainer settings into the sbatch request."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate

from tests.cli import REPO
from tests.sweep_runs import TINY_ARGS, run_sweep, tiny_data


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, fsdd_root: Path) -> tuple[Path, Path]:
    return tiny_data(tmp_path_factory, fsdd_root)


def _results(job: Path) -> dict:
    return json.loads((job / "results.json").read_text())


JOBLIB = [
    "hydra/launcher=joblib",
    "hydra.launcher.n_jobs=2",
    *TINY_ARGS,
    "shots=2",
    "method=calm",
    "method.estimators.calm._target_=tests.exploding.ExplodingEstimator,calm.methods.CALM",
]


def _joblib_sweep(tmp_path: Path, tiny: tuple[Path, Path], name: str) -> tuple[str, Path]:
    """A 2-job joblib sweep whose job 0 fails and job 1 succeeds: (its output, its folder)."""
    data, cache = tiny
    done = run_sweep([f"dataset.root={data}", *JOBLIB], tmp_path / name, tmp_path / "finished", cache)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-3000:]  # a sweep with a failed job exits 1 after the others finish
    return output, tmp_path / name


@pytest.mark.slow  # worker processes each start Python, torch and Hydra: `make test-slow`
def test_joblib_runs_jobs_in_worker_processes_records_failures_and_resumes(
    tmp_path: Path, tiny: tuple[Path, Path]
) -> None:
    output, sweep = _joblib_sweep(tmp_path, tiny, "sweep1")
    assert "Joblib.Parallel(n_jobs=2" in output and "is launching 2 jobs" in output
    failed, ok = sweep / "0", sweep / "1"
    assert (failed / "error.txt").read_text().startswith("RuntimeError: boom")
    assert not (failed / "results.json").exists()
    result = _results(ok)["results"][0]
    assert result["method"] == "calm" and 0 <= result["accuracy_mean"] <= 100
    assert "1 failed job(s)" in output and str(failed) in output

    output, rerun = _joblib_sweep(tmp_path, tiny, "sweep2")
    assert output.count("an identical job already finished") == 1
    assert _results(rerun / "1")["resumed_from"] == str(ok)
    assert _results(rerun / "1")["results"] == _results(ok)["results"]
    assert (rerun / "0" / "error.txt").read_text().startswith("RuntimeError: boom")


@pytest.mark.slow  # worker processes each start Python, torch and Hydra: `make test-slow`
def test_submitit_local_runs_each_job_as_a_submitit_job(tmp_path: Path, tiny: tuple[Path, Path]) -> None:
    data, cache = tiny
    sweep = tmp_path / "sweep"
    done = run_sweep(
        [
            "hydra/launcher=submitit_local",
            "hydra.launcher.timeout_min=10",
            f"dataset.root={data}",
            *TINY_ARGS,
            "shots=2",
            "method=calm",
            "seed=0,1",
        ],
        sweep,
        tmp_path / "finished",
        cache,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert {_results(sweep / str(i))["config"]["seed"] for i in (0, 1)} == {0, 1}
    for i in (0, 1):
        assert _results(sweep / str(i))["results"][0]["method"] == "calm"
    assert len(list((sweep / ".submitit").glob("*/*_result.pkl"))) == 2


class _Submitted(Exception):
    """Stops the launcher once submitit has written the sbatch script (there is no cluster here)."""


def _sbatch_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: list[str]) -> str:
    """The sbatch script the real launcher writes for a 2-job sweep with these overrides."""
    from submitit.slurm.slurm import SlurmExecutor

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 1\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    written = []
    real = SlurmExecutor._make_submission_file_text

    def capture(self: SlurmExecutor, command: str, uid: str) -> str:
        written.append(real(self, command, uid))
        raise _Submitted

    monkeypatch.setattr(SlurmExecutor, "_make_submission_file_text", capture)
    monkeypatch.setenv("CALM_ROOT", str(REPO))
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=["hydra/launcher=slurm", f"hydra.sweep.dir={tmp_path / 'sweep'}", *overrides],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    launcher = instantiate(cfg.hydra.launcher)
    launcher.config = cfg
    with pytest.raises(_Submitted):
        launcher.launch([["seed=0"], ["seed=1"]], initial_job_idx=0)
    return written[0]


def test_slurm_config_requests_what_the_trainer_settings_need(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = _sbatch_script(
        tmp_path, monkeypatch, ["trainer.devices=4", "trainer.num_nodes=2", "hydra.launcher.partition=gpu"]
    )
    lines = set(script.splitlines())
    for expected in (
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --nodes=2",
        "#SBATCH --partition=gpu",
        "#SBATCH --time=240",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --array=0-1%2",
        "export OMP_NUM_THREADS=8",
    ):
        assert expected in lines, f"{expected!r} missing from:\n{script}"


def test_slurm_config_defaults_to_one_gpu_and_the_cluster_partition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = _sbatch_script(tmp_path, monkeypatch, [])
    assert "#SBATCH --gpus-per-node=1" in script and "#SBATCH --nodes=1" in script
    assert "--partition" not in script
