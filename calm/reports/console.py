"""The results table printed at the end of a job."""

from __future__ import annotations

from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

HEADERS = {"exact_match": "exact match (%)", "eer": "EER (%)"}


def _mean_ci(mean: float | None, ci: float | None, sign: str = "") -> str:
    if mean is None:
        return ""
    return f"{mean:{sign}.2f} ± {ci:.2f}" if ci is not None and np.isfinite(ci) else f"{mean:{sign}.2f}"


def print_table(rows: list[dict[str, Any]], title: str) -> None:
    """One line per results row: accuracy ± CI, macro-F1, exact match / EER when present, Δ vs baseline."""
    extras = [key for key in ("exact_match", "eer") if any(f"{key}_mean" in row for row in rows)]
    table = Table(title=title)
    for column in (
        "method",
        "shots",
        "ways",
        "episodes",
        "accuracy (%)",
        "macro-F1 (%)",
        *(HEADERS[k] for k in extras),
        "Δ vs baseline",
    ):
        table.add_column(column, justify="left" if column == "method" else "right")
    for row in rows:
        diff = _mean_ci(row.get("diff_vs_baseline_mean"), row.get("diff_vs_baseline_ci95"), "+")
        table.add_row(
            escape(row["method"]),
            str(row["shots"]),
            str(row["ways"]),
            str(row["episodes"]),
            _mean_ci(row.get("accuracy_mean"), row.get("accuracy_ci95")),
            f"{row['macro_f1_mean']:.2f}",
            *(_mean_ci(row.get(f"{k}_mean"), row.get(f"{k}_ci95")) for k in extras),
            diff,
        )
    console = Console()
    console.width = max(console.width, 120)
    console.print(table)
