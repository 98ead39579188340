"""Every number a table shows, ours and the paper's, each with where it came from: the one list the
Markdown and LaTeX tables are rendered from and `numbers.csv` is written from, so a cell can always
be traced to a job folder and its job key. `shots` is the column's key ("20", "<=20", "all"); the
paper's numbers have none (one per row, whatever shots the paper used).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from calm.tables.jobs import OK, JobOutcome
from calm.tables.spec import TableSpec

CSV_NAME = "numbers.csv"
CSV_COLUMNS = ("table", "group", "experiment", "method", "shots", "metric", "source", "mean", "ci95", "episodes",
               "status", "job_dir", "job_key")
OURS = "ours"
PAPER = "paper"


@dataclass(frozen=True)
class Number:
    """One number of a table, as written to numbers.csv."""

    table: str
    group: str
    experiment: str
    method: str
    shots: str | None
    metric: str
    source: str  # OURS or PAPER
    mean: float
    ci95: float
    episodes: int | None
    status: str
    job_dir: str
    job_key: str


def numbers_of(spec: TableSpec, outcomes: list[JobOutcome]) -> list[Number]:
    """Every number the table shows: ours per (group, method, shot setting), and the paper's per (group, method)."""
    numbers = []
    for outcome in outcomes:
        group = outcome.group
        for method in outcome.methods:
            row = outcome.rows.get(method)
            mean = float(row.get(f"{group.metric}_mean", math.nan)) if row else math.nan
            ci = float(row.get(f"{group.metric}_ci95", math.nan)) if row else math.nan
            if outcome.status != OK:
                status = f"{outcome.status}: {outcome.reason}"
            else:
                status = OK if row else "method missing from results"
            numbers.append(Number(spec.name, group.label, group.experiment, method, outcome.shots.key, group.metric,
                                  OURS, mean, ci, row.get("episodes") if row else None, status,
                                  outcome.job_dir, outcome.key))
    for group in spec.groups:
        for method, value in group.paper.items():
            numbers.append(Number(spec.name, group.label, group.experiment, method, None, group.metric, PAPER,
                                  value, math.nan, None, "reported in the paper (its best setting for this benchmark)", "", ""))
    return numbers


def write_csv(path: Path, numbers: list[Number]) -> None:
    """numbers.csv: one line per number; floats as repr() so they read back bit for bit."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for n in numbers:
            writer.writerow([n.table, n.group, n.experiment, n.method, "" if n.shots is None else n.shots, n.metric,
                             n.source, repr(n.mean), repr(n.ci95), "" if n.episodes is None else n.episodes,
                             n.status, n.job_dir, n.job_key])
