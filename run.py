"""Hydra entry point: compose the config, run one job (calm.pipeline). Example:

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
from calm.sweeps import record_failure  # noqa: E402

log = logging.getLogger("calm")


@hydra.main(version_base="1.3", config_path="configs", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """A failing job in a multirun is recorded and reported at the end; the sweep goes on. Returns the
    support-set cross-validation score a search (hparams_search=...) optimises, else None.

    A failing Optuna trial raises TrialFailed after recording its error: the sweeper then tells
    Optuna FAIL and, with hydra.sweeper.max_failure_rate=1.0 (calm_optuna), asks for the next trial.
    Other sweepers stop at a job that raises, so there the failure is only recorded.
    """
    # imported here, not at the top: a sweep the preflight rejects (calm.sweep_checks) fails in a
    # second instead of after loading torch and transformers
    from calm.pipeline import run_job
    from calm.search import objective_value, optuna_sweeper, trial_failure

    hydra_cfg = HydraConfig.get()
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        return objective_value(cfg, run_job(cfg))
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
