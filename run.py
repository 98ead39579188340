"""Hydra entry point: compose the config, run one job (calm.run.pipeline). Example:

python run.py experiment=quickstart
python run.py -m shots=1,5 method=calm,sav
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

os.environ.setdefault("CALM_ROOT", str(Path(__file__).resolve().parent))

from calm.errors import CalmError  # noqa: E402
from calm.run.sweeps import clear_failure, record_failure, sweep_exit_code  # noqa: E402  (also registers ${calm.unique:})
from calm.run.termination import JobTerminated  # noqa: E402

log = logging.getLogger("calm")


@hydra.main(version_base="1.3", config_path="configs", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """A failing job in a multirun is recorded and reported at the end; the sweep goes on, and the
    process then exits 1 (see the `__main__` block). Returns the support-set cross-validation score a
    search (hparams_search=...) optimises, else None.

    A failing Optuna trial raises TrialFailed after recording its error: the sweeper then tells
    Optuna FAIL and, with hydra.sweeper.max_failure_rate=1.0 (calm_optuna), asks for the next trial;
    the search still writes its best result from the trials that completed, then exits 1.
    Other sweepers stop at a job that raises, so there the failure is only recorded.
    """
    # imported here, not at the top: a sweep the preflight rejects (calm.run.sweep_checks) fails in a
    # second instead of after loading torch and transformers
    from calm.run.pipeline import run_job
    from calm.run.search import objective_value, optuna_sweeper, trial_failure

    hydra_cfg = HydraConfig.get()
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        value = objective_value(cfg, run_job(cfg))
        clear_failure(Path(cfg.paths.output_dir))  # an error.txt left by an earlier try in this folder
        return value
    except JobTerminated as err:  # kill or pre-emption: a sweep stops here too; its rerun resumes
        record_failure(Path(cfg.paths.output_dir), err)
        log.error("%s", err)
        sys.exit(err.exit_code)
    except CalmError as err:
        if not in_sweep:
            log.error("%s", err)
            sys.exit(2)
        failed: Exception = err
    except Exception as err:
        if not in_sweep:
            raise
        failed = err
    out_dir = Path(cfg.paths.output_dir)
    record_failure(out_dir, failed)
    if optuna_sweeper(hydra_cfg.sweeper):
        failure = trial_failure(hydra_cfg.job.num, failed, out_dir)
        log.error("%s", failure)
        raise failure from failed
    if isinstance(failed, CalmError):
        log.error("%s", failed)
    else:
        log.error("job failed; the sweep goes on", exc_info=failed)
    return None


if __name__ == "__main__":
    main()
    # Hydra returns normally after a sweep whatever its jobs did; SweepReport remembered the failed ones
    sys.exit(sweep_exit_code())
