"""What a result table holds, read from `configs/tables/<name>.yaml`.

A table is a list of row groups, each naming one experiment file under `configs/experiment/` (the
jobs' settings), the metric to show, and the numbers the paper reports for it (DESIGN.md section 8).
Everything is checked here, before any job is composed, so a typo fails in a second, not after the
first hour of extraction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from calm.assets import REPO_ROOT
from calm.errors import CalmError

CONFIGS_DIR = REPO_ROOT / "configs"
TABLES_DIR = CONFIGS_DIR / "tables"
EXPERIMENTS_DIR = CONFIGS_DIR / "experiment"
# The metrics a row group may show (results.json has `<metric>_mean` / `<metric>_ci95` per row).
METRIC_NAMES = {"accuracy": "accuracy (%)", "exact_match": "exact match (%)", "eer": "EER (%)",
                "macro_f1": "macro-F1 (%)"}


@dataclass(frozen=True)
class RowGroup:
    """One experiment file's jobs: one row per method, one column per shot count."""

    experiment: str
    label: str
    metric: str = "accuracy"
    paper: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TableSpec:
    """A table: its file name, caption, the shot counts (columns) and the row groups, in order."""

    name: str
    title: str
    shots: tuple[int, ...]
    groups: tuple[RowGroup, ...]


def table_names(folder: Path = TABLES_DIR) -> list[str]:
    """The tables that can be built: one YAML file each under `folder`."""
    return sorted(p.stem for p in Path(folder).glob("*.yaml"))


def load_table(name: str, folder: Path = TABLES_DIR, experiments: Path = EXPERIMENTS_DIR) -> TableSpec:
    """Read `<folder>/<name>.yaml`, checking every experiment it names exists and every metric is known."""
    path = Path(folder) / f"{name}.yaml"
    if not path.is_file():
        raise CalmError(f"no table named {name!r} ({path} does not exist)", f"choose from {table_names(folder)}")
    spec = yaml.safe_load(path.read_text())
    groups = []
    for raw in spec["groups"]:
        experiment = raw["experiment"]
        if not (Path(experiments) / f"{experiment}.yaml").is_file():
            raise CalmError(f"table {name!r} names experiment {experiment!r}, which has no file",
                            f"add configs/experiment/{experiment}.yaml or fix {path}")
        metric = raw.get("metric", "accuracy")
        if metric not in METRIC_NAMES:
            raise CalmError(f"table {name!r}: unknown metric {metric!r}", f"use one of {sorted(METRIC_NAMES)}")
        groups.append(RowGroup(experiment, raw.get("label", experiment), metric,
                               {k: float(v) for k, v in (raw.get("paper") or {}).items()}))
    return TableSpec(name, spec.get("title", name), tuple(int(s) for s in spec["shots"]), tuple(groups))
