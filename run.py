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
    support-set cross-validation score a search (hparams_search=...) optimises, else None."""
    # imported here, not at the top: a sweep the preflight rejects (calm.sweep_checks) fails in a
    # second instead of after loading torch and transformers
    from calm.pipeline import run_job
    from calm.search import objective_value

    in_sweep = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        return objective_value(cfg, run_job(cfg))
    except CalmError as err:
        log.error("%s", err)
        if not in_sweep:
            sys.exit(2)
        record_failure(Path(cfg.paths.output_dir), err)
    except Exception as err:
        if not in_sweep:
            raise
        log.exception("job failed; the sweep goes on")
        record_failure(Path(cfg.paths.output_dir), err)


if __name__ == "__main__":
    main()
