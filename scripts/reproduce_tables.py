"""Rebuild the result tables: run (or collect) every job a table needs, write it as Markdown, LaTeX and CSV.

A table is a file under `configs/tables/`: a list of row groups, each naming one experiment file under
`configs/experiment/` (the jobs' settings), the metric to show, and the numbers the paper reports for
it (DESIGN.md section 8). For every row group and shot count the script composes the experiment's
config with `shots=K` and runs it through `calm.pipeline.run_job`, which skips jobs that already
finished (`--collect` only reads finished jobs and runs nothing). A row group whose jobs cannot run
(dataset or weights absent) stays in the table, marked "no data" with the reason.

    python scripts/reproduce_tables.py --tables fsdd_whisper --out tables/     # the real FSDD/Whisper table
    python scripts/reproduce_tables.py --tables paper --collect --out tables/  # collect finished GPU jobs
    python scripts/reproduce_tables.py --smoke --out /tmp/smoke                # tiny backbone, generated data

Writes into --out: `<table>.md`, `<table>.tex`, and `numbers.csv` (every number used, ours and the
paper's, with the job folder it came from); `--smoke` also re-reads what it wrote and checks it.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("CALM_ROOT", str(REPO))

from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from calm.errors import CalmError  # noqa: E402
from calm.sweeps import job_key, load_finished  # noqa: E402

log = logging.getLogger("reproduce_tables")
TABLES_DIR = REPO / "configs" / "tables"
METRIC_NAMES = {"accuracy": "accuracy (%)", "exact_match": "exact match (%)", "eer": "EER (%)", "macro_f1": "macro-F1 (%)"}
CSV_COLUMNS = ("table", "group", "experiment", "method", "shots", "metric", "source", "mean", "ci95", "episodes",
               "status", "job_dir", "job_key")
NO_DATA = "no data"
FAILED = "failed"
SMOKE_CLASSES = ("low", "mid", "high", "chirp")


@dataclass(frozen=True)
class RowGroup:
    """One experiment file's jobs: one row per method, one column per shot count."""

    experiment: str
    label: str
    metric: str = "accuracy"
    paper: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TableSpec:
    name: str
    title: str
    shots: tuple[int, ...]
    groups: tuple[RowGroup, ...]


@dataclass
class JobOutcome:
    """What one (row group, shots) job gave: its result rows, or why there are none."""

    group: RowGroup
    shots: int
    methods: list[str]
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    status: str = "ok"
    reason: str = ""
    job_dir: str = ""
    key: str = ""


@dataclass(frozen=True)
class Number:
    """One number of a table, as written to numbers.csv."""

    table: str
    group: str
    experiment: str
    method: str
    shots: int | None
    metric: str
    source: str  # "ours" or "paper"
    mean: float
    ci95: float
    episodes: int | None
    status: str
    job_dir: str
    job_key: str


def load_table(name: str) -> TableSpec:
    """Read `configs/tables/<name>.yaml`, checking every experiment it names exists."""
    path = TABLES_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in TABLES_DIR.glob("*.yaml"))
        raise CalmError(f"no table named {name!r} ({path} does not exist)", f"choose from {known}")
    spec = yaml.safe_load(path.read_text())
    groups = []
    for raw in spec["groups"]:
        experiment = raw["experiment"]
        if not (REPO / "configs" / "experiment" / f"{experiment}.yaml").is_file():
            raise CalmError(f"table {name!r} names experiment {experiment!r}, which has no file",
                            f"add configs/experiment/{experiment}.yaml or fix {path}")
        metric = raw.get("metric", "accuracy")
        if metric not in METRIC_NAMES:
            raise CalmError(f"table {name!r}: unknown metric {metric!r}", f"use one of {sorted(METRIC_NAMES)}")
        groups.append(RowGroup(experiment, raw.get("label", experiment), metric,
                               {k: float(v) for k, v in (raw.get("paper") or {}).items()}))
    return TableSpec(name, spec.get("title", name), tuple(int(s) for s in spec["shots"]), tuple(groups))


def compose_job(group: RowGroup, shots: int, out_dir: Path, overrides: Sequence[str]) -> DictConfig:
    """The config `python run.py experiment=... shots=K` would run, its output folder under `out_dir`."""
    job_dir = out_dir / "jobs" / group.experiment / f"shots_{shots}"
    return compose("config", overrides=[f"experiment={group.experiment}", f"shots={shots}",
                                        f"paths.output_dir={job_dir}", *overrides])


def expected_methods(cfg: DictConfig) -> list[str]:
    """The rows a job reports: its estimators, zero-shot, and the grid's two rows under protocol=paper."""
    methods = list(cfg.method.get("estimators") or {})
    if cfg.method.get("zero_shot"):
        methods.append("zero_shot")
    if cfg.protocol.name == "paper":
        methods += ["calm[cv]", "calm[oracle]"]
    return methods


def run_or_collect(group: RowGroup, shots: int, cfg: DictConfig, collect_only: bool) -> JobOutcome:
    """Run the job (finished ones are skipped by the pipeline) or, with `collect_only`, read its record.

    A job that cannot run (CalmError: data or weights absent) or that breaks (any other error, e.g.
    out of GPU memory) leaves its rows marked with the reason; the other jobs and tables go on.
    """
    outcome = JobOutcome(group, shots, expected_methods(cfg), job_dir=str(cfg.paths.output_dir), key=job_key(cfg))
    try:
        if collect_only:
            result = load_finished(cfg)
            if result is None:
                outcome.status, outcome.reason = NO_DATA, "not run yet (no finished job with these settings)"
                return outcome
            outcome.job_dir = result["output_dir"]
        else:
            from calm.pipeline import run_job

            result = run_job(cfg)
            outcome.job_dir = result.get("output_dir", outcome.job_dir)
    except CalmError as err:
        outcome.status, outcome.reason = NO_DATA, err.problem
        log.warning("%s, %d-shot: no data: %s", group.experiment, shots, err.problem)
        return outcome
    except Exception as err:  # noqa: BLE001 - one broken job must not lose the other tables
        outcome.status, outcome.reason = FAILED, f"{type(err).__name__}: {err}"
        log.exception("%s, %d-shot failed; its rows are marked and the other jobs go on", group.experiment, shots)
        return outcome
    outcome.rows = {row["method"]: row for row in result["results"]}
    # rows the job reported (e.g. pseudo-label refits `calm+pl`) first, then expected ones it lacks
    outcome.methods = list(dict.fromkeys([*outcome.rows, *outcome.methods]))
    return outcome


def numbers_of(spec: TableSpec, outcomes: list[JobOutcome]) -> list[Number]:
    """Every number the table shows: ours per (group, method, shots), and the paper's per (group, method)."""
    numbers = []
    for outcome in outcomes:
        group = outcome.group
        for method in outcome.methods:
            row = outcome.rows.get(method)
            mean = float(row.get(f"{group.metric}_mean", math.nan)) if row else math.nan
            ci = float(row.get(f"{group.metric}_ci95", math.nan)) if row else math.nan
            if outcome.status != "ok":
                status = f"{outcome.status}: {outcome.reason}"
            else:
                status = "ok" if row else "method missing from results"
            numbers.append(Number(spec.name, group.label, group.experiment, method, outcome.shots, group.metric,
                                  "ours", mean, ci, row.get("episodes") if row else None, status,
                                  outcome.job_dir, outcome.key))
    for group in spec.groups:
        for method, value in group.paper.items():
            numbers.append(Number(spec.name, group.label, group.experiment, method, None, group.metric, "paper",
                                  value, math.nan, None, "reported in the paper (model and shots not public)", "", ""))
    return numbers


def cell(mean: float, ci: float) -> str:
    if not math.isfinite(mean):
        return NO_DATA
    return f"{mean:.2f} ± {ci:.2f}" if math.isfinite(ci) else f"{mean:.2f}"


def table_rows(spec: TableSpec, numbers: list[Number]) -> list[list[str]]:
    """[group, method, one cell per shot count, paper] for every method row, in the groups' order."""
    ours = {(n.experiment, n.method, n.shots): n for n in numbers if n.source == "ours"}
    paper = {(n.experiment, n.method): n for n in numbers if n.source == "paper"}
    rows = []
    for group in spec.groups:
        methods = list(dict.fromkeys(n.method for n in numbers if n.experiment == group.experiment and n.source == "ours"))
        for method in methods:
            shots_cells = []
            for shots in spec.shots:
                number = ours.get((group.experiment, method, shots))
                shots_cells.append(cell(number.mean, number.ci95) if number else NO_DATA)
            reported = paper.get((group.experiment, method))
            rows.append([group.label, method, *shots_cells, f"{reported.mean:.2f}" if reported else "—"])
    return rows


def headers(spec: TableSpec) -> list[str]:
    return ["row group", "method", *(f"{k}-shot" for k in spec.shots), "paper"]


def no_data_notes(spec: TableSpec, outcomes: list[JobOutcome]) -> list[str]:
    reasons = {}
    for outcome in outcomes:
        if outcome.status != "ok":
            reasons.setdefault(outcome.group.label, f"{outcome.status} ({outcome.reason})")
    return [f"{label}: {reason}" for label, reason in reasons.items()]


def markdown(spec: TableSpec, rows: list[list[str]], notes: list[str]) -> str:
    lines = [f"## {spec.title}", "", "| " + " | ".join(headers(spec)) + " |",
             "|" + "|".join("---" if i < 2 else "---:" for i in range(len(headers(spec)))) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", "Cells: mean ± 95 % CI over episodes (one number: a single fixed split). "
              "`paper`: the number the paper reports for CALM on that benchmark (best setting; model and shots "
              "not public).", *(f"- {note}" for note in notes), ""]
    return "\n".join(lines)


def latex_escape(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                          ("±", r"$\pm$"), ("·", r"$\cdot$"), ("—", "---")):
        text = text.replace(char, escaped)
    return text


def latex(spec: TableSpec, rows: list[list[str]], notes: list[str]) -> str:
    columns = "ll" + "r" * (len(headers(spec)) - 2)
    lines = [r"\begin{table}[t]", r"\centering", f"\\caption{{{latex_escape(spec.title)}}}",
             f"\\begin{{tabular}}{{{columns}}}", r"\toprule",
             " & ".join(latex_escape(h) for h in headers(spec)) + r" \\", r"\midrule"]
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


def write_csv(path: Path, numbers: list[Number]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for n in numbers:
            writer.writerow([n.table, n.group, n.experiment, n.method, "" if n.shots is None else n.shots, n.metric,
                             n.source, repr(n.mean), repr(n.ci95), "" if n.episodes is None else n.episodes,
                             n.status, n.job_dir, n.job_key])


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def markdown_cells(text: str) -> dict[tuple[str, str], list[str]]:
    """(row group, method) -> the row's remaining cells, parsed from a written Markdown table."""
    cells = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| row group") and not set(line) <= set("|-: "):
            parts = [part.strip() for part in line.strip().strip("|").split("|")]
            cells[(parts[0], parts[1])] = parts[2:]
    return cells


def latex_cells(text: str) -> dict[tuple[str, str], list[str]]:
    """The same for a written LaTeX tabular (a group's label stands on its first row only)."""
    cells, group = {}, ""
    body = text[text.index(r"\midrule"):text.index(r"\bottomrule")]
    for line in body.splitlines():
        if not line.endswith(r"\\"):
            continue
        parts = [part.strip() for part in line.removesuffix(r"\\").split(" & ")]
        group = parts[0] or group
        cells[(group, parts[1])] = parts[2:]
    return cells


def check_written(out_dir: Path, specs: list[TableSpec]) -> list[str]:
    """Re-read numbers.csv and every table: each cell must be what the CSV (and the job's results.json
    behind it) says. Returns the problems found (empty when everything agrees)."""
    problems = []
    numbers = read_csv(out_dir / "numbers.csv")
    for spec in specs:
        md = markdown_cells((out_dir / f"{spec.name}.md").read_text())
        tex = latex_cells((out_dir / f"{spec.name}.tex").read_text())
        shots = [str(k) for k in spec.shots]
        for n in (n for n in numbers if n["table"] == spec.name):
            mean, ci = float(n["mean"]), float(n["ci95"])
            column = len(shots) if n["source"] == "paper" else shots.index(n["shots"])
            expected = f"{mean:.2f}" if n["source"] == "paper" else cell(mean, ci)
            where = (n["group"], n["method"])
            shown_md = md.get(where, [None] * (column + 1))[column]
            shown_tex = tex.get((latex_escape(n["group"]), latex_escape(n["method"])), [None] * (column + 1))[column]
            if shown_md != expected or shown_tex != latex_escape(expected):
                problems.append(f"{spec.name}: {where} {n['shots'] or 'paper'}: table shows {shown_md!r} / "
                                f"{shown_tex!r}, numbers.csv says {expected!r}")
            if n["source"] == "ours" and n["status"] == "ok":
                results = json.loads((Path(n["job_dir"]) / "results.json").read_text())["results"]
                row = next(r for r in results if r["method"] == n["method"])
                if row[f"{n['metric']}_mean"] != mean:
                    problems.append(f"{spec.name}: {n['method']} {n['shots']}-shot differs from {n['job_dir']}")
    return problems


def write_smoke_data(root: Path, clips_per_class: int = 6, seconds: float = 1.0, rate: int = 16000) -> Path:
    """Generated tones, one folder per class (the `folder` dataset layout); each class a different pitch."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    for index, name in enumerate(SMOKE_CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for clip in range(clips_per_class):
            base = 220.0 * 2 ** index
            pitch = base * (1 + 2 * t) if name == "chirp" else np.full_like(t, base * (1 + 0.02 * clip))
            wave = 0.3 * np.sin(2 * np.pi * np.cumsum(pitch) / rate) + 0.02 * rng.standard_normal(len(t))
            sf.write(root / name / f"{name}_{clip}.wav", wave.astype(np.float32), rate)
    return root


def build_tables(specs: list[TableSpec], out_dir: Path, overrides: Sequence[str], collect_only: bool,
                 per_group_overrides: dict[str, list[str]] | None = None) -> list[Number]:
    """Run or collect every job of every table, then write the tables and numbers.csv into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    all_numbers = []
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        for spec in specs:
            outcomes = []
            for group in spec.groups:
                extra = [*overrides, *(per_group_overrides or {}).get(group.experiment, [])]
                for shots in spec.shots:
                    cfg = compose_job(group, shots, out_dir, extra)
                    outcomes.append(run_or_collect(group, shots, cfg, collect_only))
            numbers = numbers_of(spec, outcomes)
            rows, notes = table_rows(spec, numbers), no_data_notes(spec, outcomes)
            (out_dir / f"{spec.name}.md").write_text(markdown(spec, rows, notes))
            (out_dir / f"{spec.name}.tex").write_text(latex(spec, rows, notes))
            all_numbers.extend(numbers)
            print(markdown(spec, rows, notes))
    write_csv(out_dir / "numbers.csv", all_numbers)
    return all_numbers


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", nargs="+", default=["fsdd_whisper", "paper"],
                        help=f"table files under configs/tables/ (have: {sorted(p.stem for p in TABLES_DIR.glob('*.yaml'))})")
    parser.add_argument("--out", type=Path, required=True, help="folder for the .md, .tex and numbers.csv files")
    parser.add_argument("--collect", action="store_true", help="run nothing; use finished jobs only")
    parser.add_argument("--smoke", action="store_true", help="the smoke table: tiny backbone on generated data")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every job (e.g. episodes=20 logger=wandb)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    overrides = list(args.overrides)
    if not any(o.startswith("logger=") for o in overrides):
        overrides.append("logger=none")
    per_group: dict[str, list[str]] = {}
    names = args.tables
    if args.smoke:
        names = ["smoke"]
        data = write_smoke_data(args.out / "smoke_data" / "tones")
        overrides += [f"paths.data_dir={args.out / 'data'}", f"paths.cache_dir={args.out / 'cache'}",
                      f"paths.finished_dir={args.out / 'finished'}"]
        per_group["table_smoke"] = [f"dataset.root={data}"]
    try:
        specs = [load_table(name) for name in names]
        build_tables(specs, args.out, overrides, args.collect, per_group)
    except CalmError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.smoke:
        problems = check_written(args.out, specs)
        for problem in problems:
            print(f"check failed: {problem}", file=sys.stderr)
        if problems:
            return 1
        print(f"smoke: the tables in {args.out} agree with numbers.csv and the jobs' results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
