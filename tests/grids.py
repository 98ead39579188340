"""The paper grid as the config declares it: tests and benchmarks read grid values from
configs/protocol/paper.yaml, their one home."""

from __future__ import annotations

from pathlib import Path

import yaml

from calm.selection import CalmGrid

PROTOCOL_CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "protocol"


def protocol_grid(name: str = "paper") -> CalmGrid:
    """The `grid` block of configs/protocol/<name>.yaml."""
    return CalmGrid.from_config(yaml.safe_load((PROTOCOL_CONFIGS / f"{name}.yaml").read_text())["grid"])


PAPER_GRID = protocol_grid()
