"""The paper grids as the config declares them: tests and benchmarks read grid values from
configs/grids/<name>.yaml, their one home."""

from __future__ import annotations

from pathlib import Path

import yaml

from calm.selection import CalmGrid

GRID_CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "grids"


def config_grids(name: str = "generic") -> dict:
    """Every method's grid of configs/grids/<name>.yaml (its own entries, not those of its defaults list)."""
    return yaml.safe_load((GRID_CONFIGS / f"{name}.yaml").read_text())


def calm_grid(name: str = "generic") -> CalmGrid:
    """The CALM grid of configs/grids/<name>.yaml."""
    return CalmGrid.from_config(config_grids(name)["calm"])


PAPER_GRID = calm_grid()
