"""The result tables as a library (`scripts/reproduce_tables.py` is its command line).

spec    what a table holds, read and checked from `configs/tables/<name>.yaml`
jobs    one job per (row group, shot count): composed, then run or collected
numbers every number shown, with its source; `numbers.csv`
render  Markdown and LaTeX
build   all of the above for a list of tables, written into one folder
smoke   smoke runs: tiny backbones on generated data (calm.testing.smoke_layouts: the official layouts' writers)
"""

from calm.tables.build import build_tables, table_files
from calm.tables.jobs import (
    FAILED,
    NO_DATA,
    JobOutcome,
    compose_job,
    expected_methods,
    job_configs,
    run_or_collect,
)
from calm.tables.numbers import CSV_COLUMNS, CSV_NAME, Number, numbers_of, write_csv
from calm.tables.render import cell, latex, latex_escape, markdown, table_rows
from calm.tables.smoke import (
    SMOKE_TABLE,
    smoke_overrides,
    smoke_spec,
    smoke_tables,
    write_smoke_data,
)
from calm.tables.spec import (
    TABLES_DIR,
    RowGroup,
    ShotSetting,
    TableSpec,
    load_table,
    shot_setting,
    table_names,
)

__all__ = [
    "CSV_COLUMNS",
    "CSV_NAME",
    "FAILED",
    "NO_DATA",
    "SMOKE_TABLE",
    "TABLES_DIR",
    "JobOutcome",
    "Number",
    "RowGroup",
    "ShotSetting",
    "TableSpec",
    "build_tables",
    "cell",
    "compose_job",
    "expected_methods",
    "job_configs",
    "latex",
    "latex_escape",
    "load_table",
    "markdown",
    "numbers_of",
    "run_or_collect",
    "shot_setting",
    "smoke_overrides",
    "smoke_spec",
    "smoke_tables",
    "table_files",
    "table_names",
    "table_rows",
    "write_csv",
    "write_smoke_data",
]
