"""Rebuild the result tables: run (or collect) every job a table needs, write it as Markdown, LaTeX and CSV.

A table is a file under `configs/tables/`; each of its row groups names an experiment file under
`configs/experiment/`. Every (row group, shot count) job runs through `calm.run.pipeline.run_job`, which
skips jobs that already finished (`--collect` only reads finished jobs and runs nothing). A row group
whose jobs cannot run (dataset or weights absent) stays in the table, marked "no data" with the reason.

    python scripts/reproduce_tables.py --tables fsdd_whisper --out tables/     # the real FSDD/Whisper table
    python scripts/reproduce_tables.py --tables paper --collect --out tables/  # collect finished GPU jobs
    python scripts/reproduce_tables.py --smoke --out /tmp/smoke                # tiny backbone, generated tones
    python scripts/reproduce_tables.py --smoke --tables paper --out /tmp/paper # every paper group, tiny
                                                          # backbones, generated data in official layouts

Writes into --out: `<table>.md`, `<table>.tex`, and `numbers.csv` (every number used, ours and the
paper's, with the job folder it came from). The library is `calm.tables`; tests/test_reproduce_tables.py
checks that what the smoke table writes agrees with numbers.csv and the jobs' results.json.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from calm.errors import CalmError
from calm.tables import (
    CSV_NAME,
    SMOKE_TABLE,
    build_tables,
    load_table,
    smoke_tables,
    table_files,
    table_names,
)
from calm.tables.jobs import OK
from calm.tables.numbers import OURS


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tables",
        nargs="+",
        default=None,
        help=f"table files under configs/tables/ (have: {table_names()}); default: fsdd_whisper "
        f"paper, or with --smoke: {SMOKE_TABLE}",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the .md, .tex and numbers.csv files")
    parser.add_argument("--collect", action="store_true", help="run nothing; use finished jobs only")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="smoke runs: the tables' row groups on tiny backbones and generated data (calm.tables.smoke)",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every job (e.g. episodes=20 logger=wandb)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    overrides = list(args.overrides)
    if not any(o.startswith("logger=") for o in overrides):
        overrides.append("logger=none")
    names = args.tables or ([SMOKE_TABLE] if args.smoke else ["fsdd_whisper", "paper"])
    per_group: dict[str, list[str]] = {}
    try:
        specs = [load_table(name) for name in names]
        if args.smoke:
            specs, smoke, per_group = smoke_tables(specs, args.out)
            overrides += smoke
        numbers = build_tables(specs, args.out, overrides, args.collect, per_group)
    except CalmError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for spec in specs:
        print(table_files(args.out, spec)[0].read_text())
    print(f"wrote {', '.join(str(p) for s in specs for p in table_files(args.out, s))} and {args.out / CSV_NAME}")
    # a smoke run fails (for CI) when a job it gave data to did not finish
    broken = sorted(
        {f"{n.group}: {n.status}" for n in numbers if n.source == OURS and n.experiment in per_group and n.status != OK}
    )
    if args.smoke and broken:
        print("error: smoke jobs with generated data gave no numbers:\n  " + "\n  ".join(broken), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
