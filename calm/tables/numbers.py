"""Every number a table shows, ours and the paper's, each with where it came from: the one list the
Markdown and LaTeX tables are rendered from and `numbers.csv` is written from, so a cell can always
be traced to a job folder and its job key. `shots` is the column's key ("20", "<=20", "all"); the
paper's numbers have none (one per row, whatever shots the paper used).
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from dataclasses import dataclass, replace
from pathlib import Path

from calm.storage.atomic_write import write_text_atomic
from calm.tables.jobs import OK, JobOutcome
from calm.tables.spec import RowGroup, TableSpec

CSV_NAME = "numbers.csv"
CSV_COLUMNS = (
    "table",
    "group",
    "experiment",
    "method",
    "shots",
    "metric",
    "source",
    "mean",
    "ci95",
    "episodes",
    "status",
    "job_dir",
    "job_key",
    "spread",
)
OURS = "ours"
PAPER = "paper"
SEED = "ours, one seed"  # a seeded group's per-seed number (the table shows their mean ± sd, source OURS)
CI95 = "ci95"  # what the `ci95` field holds: a 95 % CI over episodes ...
SEED_SD = "sd over {} seeds"  # ... or, for a seeded group's row, the standard deviation over its seeds
PAPER_STATUS = "reported in the paper (its best setting for this benchmark)"


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
    spread: str = CI95


def numbers_of(spec: TableSpec, outcomes: list[JobOutcome]) -> list[Number]:
    """Every number the table shows: ours per (group, method, shot setting), and the paper's per (group, method)."""
    numbers = []
    for outcome in outcomes:
        group = outcome.group
        source = OURS if outcome.seed is None else f"{SEED} {outcome.seed}"
        for method in outcome.methods:
            row = outcome.rows.get(method)
            mean = float(row.get(f"{group.metric}_mean", math.nan)) if row else math.nan
            ci = float(row.get(f"{group.metric}_ci95", math.nan)) if row else math.nan
            if outcome.status != OK:
                status = f"{outcome.status}: {outcome.reason}"
            else:
                status = OK if row else "method missing from results"
            episodes = row.get("episodes") if row else None
            numbers.append(
                group_number(
                    spec,
                    group,
                    method,
                    outcome.shots.key,
                    source,
                    mean,
                    ci,
                    episodes,
                    status,
                    outcome.job_dir,
                    outcome.key,
                )
            )
    numbers += seed_means(spec, numbers)
    for group in spec.groups:
        for method, value in group.paper.items():
            numbers.append(group_number(spec, group, method, None, PAPER, value, math.nan, None, PAPER_STATUS))
    return numbers


def group_number(
    spec: TableSpec,
    group: RowGroup,
    method: str,
    shots: str | None,
    source: str,
    mean: float,
    ci95: float,
    episodes: int | None,
    status: str,
    job_dir: str = "",
    job_key: str = "",
) -> Number:
    """A number of `group`'s row for `method`: the table, group, experiment and metric come from the spec."""
    return Number(
        spec.name,
        group.label,
        group.experiment,
        method,
        shots,
        group.metric,
        source,
        mean,
        ci95,
        episodes,
        status,
        job_dir,
        job_key,
    )


def seed_means(spec: TableSpec, numbers: list[Number]) -> list[Number]:
    """A seeded group's shown numbers: per (method, shots), the mean over its seeds' numbers and their
    sample standard deviation (in `ci95`, `spread` saying so); NaN unless every seed gave a number."""
    seeded = {g.experiment for g in spec.groups if g.seeds}
    runs: dict[tuple[str, str, str | None], list[Number]] = {}
    for n in numbers:
        if n.experiment in seeded and n.source.startswith(SEED):
            runs.setdefault((n.experiment, n.method, n.shots), []).append(n)
    means = []
    for per_seed in runs.values():
        values = [n.mean for n in per_seed]
        complete = all(math.isfinite(v) for v in values)
        mean = statistics.fmean(values) if complete else math.nan
        sd = statistics.stdev(values) if complete and len(values) > 1 else math.nan
        failed = [n.status for n in per_seed if n.status != OK]
        status = failed[0] if failed else OK
        first = per_seed[0]
        means.append(
            replace(
                first,
                source=OURS,
                mean=mean,
                ci95=sd,
                episodes=len(values),
                status=status,
                job_dir=str(Path(first.job_dir).parent) if first.job_dir else "",
                spread=SEED_SD.format(len(values)),
            )
        )
    return means


def write_csv(path: Path, numbers: list[Number]) -> None:
    """numbers.csv: one line per number; floats as repr() so they read back bit for bit."""
    handle = io.StringIO(newline="")
    writer = csv.writer(handle)
    writer.writerow(CSV_COLUMNS)
    for n in numbers:
        writer.writerow(
            [
                n.table,
                n.group,
                n.experiment,
                n.method,
                "" if n.shots is None else n.shots,
                n.metric,
                n.source,
                repr(n.mean),
                repr(n.ci95),
                "" if n.episodes is None else n.episodes,
                n.status,
                n.job_dir,
                n.job_key,
                n.spread,
            ]
        )
    write_text_atomic(path, handle.getvalue())
