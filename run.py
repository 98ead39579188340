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
from calm.pipeline import run_job  # noqa: E402
from calm.sweeps import record_failure  # noqa: E402

log = logging.getLogger("calm")


@hydra.main(version_base="1.3", config_path="configs", config_name="config")
def main(cfg: DictConfig) -> None:
    """A failing job in a multirun is recorded and reported at the end; the sweep goes on."""
    in_sweep = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        run_job(cfg)
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
