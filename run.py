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
from omegaconf import DictConfig

os.environ.setdefault("CALM_ROOT", str(Path(__file__).resolve().parent))

from calm.errors import CalmError  # noqa: E402
from calm.pipeline import run_job  # noqa: E402

log = logging.getLogger("calm")


@hydra.main(version_base="1.3", config_path="configs", config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        run_job(cfg)
    except CalmError as err:
        log.error("%s", err)
        sys.exit(2)


if __name__ == "__main__":
    main()
