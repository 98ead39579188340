"""Build tables end to end: run or collect every job, then write `<table>.md`, `<table>.tex` and one
`numbers.csv` for all tables into the output folder. Rerunning fills only the gaps: the pipeline
skips jobs that already finished.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from calm.storage.atomic_write import write_text_atomic
from calm.tables.jobs import job_configs, table_outcomes
from calm.tables.numbers import CSV_NAME, Number, numbers_of, write_csv
from calm.tables.render import group_notes, latex, leak_notes, markdown, no_data_notes, table_rows
from calm.tables.spec import TableSpec


def table_files(out_dir: Path, spec: TableSpec) -> tuple[Path, Path]:
    """Where `spec`'s Markdown and LaTeX tables are written."""
    return Path(out_dir) / f"{spec.name}.md", Path(out_dir) / f"{spec.name}.tex"


def build_tables(
    specs: Sequence[TableSpec],
    out_dir: Path,
    overrides: Sequence[str],
    collect_only: bool,
    per_group_overrides: Mapping[str, Sequence[str]] | None = None,
) -> list[Number]:
    """Run (or, with `collect_only`, only collect) every job of every table, write the tables and
    numbers.csv into `out_dir`, and return every number written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    all_numbers: list[Number] = []
    with job_configs():
        for spec in specs:
            outcomes = table_outcomes(spec, out_dir, overrides, collect_only, per_group_overrides)
            numbers = numbers_of(spec, outcomes)
            rows = table_rows(spec, numbers)
            notes = [*group_notes(spec), *leak_notes(outcomes), *no_data_notes(outcomes)]
            md, tex = table_files(out_dir, spec)
            write_text_atomic(md, markdown(spec, rows, notes))
            write_text_atomic(tex, latex(spec, rows, notes))
            all_numbers.extend(numbers)
    write_csv(out_dir / CSV_NAME, all_numbers)
    return all_numbers
