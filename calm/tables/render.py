"""A table's numbers as Markdown and LaTeX: one row per (row group, method), one cell per shot setting
(column), then the paper's number. A missing number is shown as "no data", never as a blank or a zero;
a column the row group does not run shows NOT_RUN; a row the paper gives no number for, NOT_REPORTED.
"""

from __future__ import annotations

import math

from calm.tables.jobs import NO_DATA, OK, JobOutcome
from calm.tables.numbers import OURS, PAPER, Number
from calm.tables.spec import TableSpec

NOT_RUN = "—"
NOT_REPORTED = "not reported"
FOOTNOTE = (
    "Cells: mean ± 95 % CI over episodes (one number: a single fixed split). "
    f"{NOT_RUN}: the row group does not run that shot setting. ≤K-shot: at most K support clips per class "
    "(a class with fewer gives all it has); all: the whole training list as support. "
    "`paper`: the number the paper reports for CALM on that benchmark (its best setting), beside the row "
    f"that reproduces the authors' setting for it; {NOT_REPORTED}: the paper gives no number for that row."
)
LATEX_ESCAPES = (
    ("\\", r"\textbackslash{}"),
    ("&", r"\&"),
    ("%", r"\%"),
    ("_", r"\_"),
    ("#", r"\#"),
    ("±", r"$\pm$"),
    ("≤", r"$\leq$"),
    ("·", r"$\cdot$"),
    ("—", "---"),
)


def cell(mean: float, ci: float) -> str:
    """One shown number: "mean ± ci" with two decimals, the mean alone without a CI, "no data" for NaN."""
    if not math.isfinite(mean):
        return NO_DATA
    return f"{mean:.2f} ± {ci:.2f}" if math.isfinite(ci) else f"{mean:.2f}"


def headers(spec: TableSpec) -> list[str]:
    return ["row group", "method", *(shots.header for shots in spec.shots), "paper"]


def table_rows(spec: TableSpec, numbers: list[Number]) -> list[list[str]]:
    """[group, method, one cell per column, paper] for every method row, in the groups' order."""
    ours = {(n.experiment, n.method, n.shots): n for n in numbers if n.source == OURS}
    paper = {(n.experiment, n.method): n for n in numbers if n.source == PAPER}
    rows = []
    for group in spec.groups:
        methods = list(
            dict.fromkeys(n.method for n in numbers if n.experiment == group.experiment and n.source == OURS)
        )
        for method in methods:
            shots_cells = []
            for shots in spec.shots:
                number = ours.get((group.experiment, method, shots.key))
                if shots not in group.shots:
                    shots_cells.append(NOT_RUN)
                else:
                    shots_cells.append(cell(number.mean, number.ci95) if number else NO_DATA)
            reported = paper.get((group.experiment, method))
            rows.append([group.label, method, *shots_cells, f"{reported.mean:.2f}" if reported else NOT_REPORTED])
    return rows


def group_notes(spec: TableSpec) -> list[str]:
    """One note per row group that carries one (how its settings differ from the obvious reading); a
    seeded group's note says its cells are mean ± sd over its seeds."""
    notes = []
    for group in spec.groups:
        seeds = (
            f"cells: mean ± sd over {len(group.seeds)} seeds ({', '.join(map(str, group.seeds))}), one job per seed"
            if group.seeds
            else ""
        )
        text = "; ".join(part for part in (group.note.rstrip(".") if seeds else group.note, seeds) if part)
        if text:
            notes.append(f"{group.label}: {text}")
    return notes


def leak_notes(outcomes: list[JobOutcome]) -> list[str]:
    """One note per job whose rows are marked `leaks_test_clips`: the measured share of its support rows
    (and val rows) that are test clips' audio files (calm.protocols.row_marks measures them)."""
    notes = []
    for outcome in outcomes:
        row = next((r for r in outcome.rows.values() if r.get("leaks_test_clips")), None)
        if row is None:
            continue
        shares = [
            f"{row[key]:.1%} of the {name} rows"
            for key, name in (("support_test_clip_share", "support"), ("val_test_clip_share", "val"))
            if key in row
        ]
        seed = "" if outcome.seed is None else f", seed {outcome.seed}"
        notes.append(
            f"{outcome.group.label} ({outcome.shots.header}{seed}): marked leaks_test_clips, measured: "
            f"{' and '.join(shares) or 'some support rows'} are test clips' audio files"
        )
    return notes


def no_data_notes(outcomes: list[JobOutcome]) -> list[str]:
    """One note per row group with a job that gave no rows: the first such job's reason."""
    reasons: dict[str, str] = {}
    for outcome in outcomes:
        if outcome.status != OK:
            reasons.setdefault(outcome.group.label, f"{outcome.status} ({outcome.reason})")
    return [f"{label}: {reason}" for label, reason in reasons.items()]


def markdown(spec: TableSpec, rows: list[list[str]], notes: list[str]) -> str:
    lines = [
        f"## {spec.title}",
        "",
        "| " + " | ".join(headers(spec)) + " |",
        "|" + "|".join("---" if i < 2 else "---:" for i in range(len(headers(spec)))) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", FOOTNOTE, *(f"- {note}" for note in notes), ""]
    return "\n".join(lines)


def latex_escape(text: str) -> str:
    for char, escaped in LATEX_ESCAPES:
        text = text.replace(char, escaped)
    return text


def latex(spec: TableSpec, rows: list[list[str]], notes: list[str]) -> str:
    """A booktabs tabular; a group's label stands on its first row only, groups split by \\midrule."""
    columns = "ll" + "r" * (len(headers(spec)) - 2)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        f"\\caption{{{latex_escape(spec.title)}}}",
        f"\\begin{{tabular}}{{{columns}}}",
        r"\toprule",
        " & ".join(latex_escape(h) for h in headers(spec)) + r" \\",
        r"\midrule",
    ]
    previous = None
    for row in rows:
        if previous is not None and row[0] != previous:
            lines.append(r"\midrule")
        shown = ["" if row[0] == previous else row[0], *row[1:]]
        lines.append(" & ".join(latex_escape(c) for c in shown) + r" \\")
        previous = row[0]
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines += [f"% {note}" for note in notes]
    lines += [r"\end{table}", ""]
    return "\n".join(lines)
