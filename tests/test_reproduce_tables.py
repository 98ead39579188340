"""scripts/reproduce_tables.py and calm.tables: the smoke table end to end (tiny backbone, generated
data, one row group without data), every cell it writes checked against numbers.csv and the jobs'
results.json, collecting finished jobs, and a job that breaks."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from calm.baselines import ZERO_SHOT_ROW
from calm.errors import CalmError
from calm.selection.rows import tuned_row_names
from calm.tables import (
    CSV_NAME,
    RowGroup,
    TableSpec,
    build_tables,
    cell,
    compose_job,
    expected_methods,
    job_configs,
    latex_escape,
    load_table,
)
from tests.cli import REPO


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("tables")
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "reproduce_tables.py"), "--smoke", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return out, done.stdout


def _numbers(out: Path) -> list[dict[str, str]]:
    with open(out / CSV_NAME, newline="") as handle:
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
    numbers = _numbers(out_dir)
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


def test_smoke_tables_hold_the_jobs_numbers(smoke: tuple[Path, str]) -> None:
    out, stdout = smoke
    numbers = _numbers(out)
    ours = [n for n in numbers if n["source"] == "ours" and n["experiment"] == "table_smoke"]
    methods = {"sav", "calm", "grw", "concat", "uniform_soft", "confidence_weighted", "topk_soft", "hard_vote",
               "linear_probe"}
    assert {n["method"] for n in ours} >= methods and {n["shots"] for n in ours} == {"1", "2"}
    table = (out / "smoke.md").read_text()
    tex = (out / "smoke.tex").read_text()
    for n in ours:
        result = json.loads((Path(n["job_dir"]) / "results.json").read_text())
        assert result["config"]["shots"] == int(n["shots"])
        row = next(r for r in result["results"] if r["method"] == n["method"])
        assert float(n["mean"]) == row["accuracy_mean"] and float(n["ci95"]) == row["accuracy_ci95"]
        line = next(ln for ln in table.splitlines() if ln.startswith(f"| tones · tiny_qwen2_audio | {n['method']} |"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[2 + ["1", "2"].index(n["shots"])] == f"{row['accuracy_mean']:.2f} ± {row['accuracy_ci95']:.2f}"
        assert f"{row['accuracy_mean']:.2f} $\\pm$ {row['accuracy_ci95']:.2f}" in tex
    assert table in stdout and f"wrote {out / 'smoke.md'}" in stdout


def test_every_written_cell_agrees_with_numbers_csv_and_results_json(smoke: tuple[Path, str]) -> None:
    out, _ = smoke
    assert check_written(out, [load_table("smoke")]) == []


def test_a_group_without_data_is_marked_and_keeps_the_papers_number(smoke: tuple[Path, str]) -> None:
    out, _ = smoke
    missing = [n for n in _numbers(out) if n["experiment"] == "table_esc50_qwen2_audio" and n["source"] == "ours"]
    assert missing and all(n["status"].startswith("no data: ESC-50 not found") for n in missing)
    assert all(math.isnan(float(n["mean"])) for n in missing)
    assert {"calm[cv]", "calm[oracle]"} <= {n["method"] for n in missing}  # protocol=paper rows are expected
    table = (out / "smoke.md").read_text()
    oracle = next(ln for ln in table.splitlines() if "| ESC-50 · qwen2_audio | calm[oracle] |" in ln)
    assert [c.strip() for c in oracle.strip("|").split("|")][2:] == ["no data", "no data", "99.25"]
    assert "ESC-50 · qwen2_audio: no data (ESC-50 not found" in table


def test_expected_rows_are_named_by_the_modules_that_make_them(tmp_path: Path) -> None:
    with job_configs():
        paper = compose_job(RowGroup("table_esc50_qwen2_audio", "x"), 1, tmp_path, [])
        zero_shot = compose_job(RowGroup("table_smoke", "x"), 1, tmp_path, ["method=zero_shot"])
    assert expected_methods(paper)[-2:] == list(tuned_row_names("calm")) == ["calm[cv]", "calm[oracle]"]
    assert expected_methods(zero_shot)[-1] == ZERO_SHOT_ROW == "zero_shot"


def test_collect_reads_finished_jobs_and_runs_nothing(smoke: tuple[Path, str], tmp_path: Path) -> None:
    out, _ = smoke
    spec = load_table("smoke")
    data = out / "smoke_data" / "tones"
    overrides = ["logger=none", f"paths.data_dir={out / 'data'}", f"paths.cache_dir={tmp_path / 'empty_cache'}",
                 f"paths.finished_dir={out / 'finished'}"]
    numbers = build_tables([spec], tmp_path, overrides, collect_only=True,
                           per_group_overrides={"table_smoke": [f"dataset.root={data}"]})
    first = {(n["method"], n["shots"]): float(n["mean"]) for n in _numbers(out) if n["experiment"] == "table_smoke"}
    again = {(n.method, str(n.shots)): n.mean for n in numbers if n.experiment == "table_smoke"}
    assert again == first
    assert not (tmp_path / "empty_cache").exists()  # nothing was extracted


def test_unknown_table_and_bad_experiment_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CalmError, match="no table named 'nosuch'"):
        load_table("nosuch")
    (tmp_path / "broken.yaml").write_text("title: x\nshots: [1]\ngroups:\n  - experiment: not_an_experiment\n")
    with pytest.raises(CalmError, match="names experiment 'not_an_experiment', which has no file"):
        load_table("broken", folder=tmp_path)


def test_the_check_catches_a_cell_that_disagrees_with_the_numbers(smoke: tuple[Path, str], tmp_path: Path) -> None:
    out, _ = smoke
    spec = load_table("smoke")
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("smoke.md", "smoke.tex", CSV_NAME):
        (copy / name).write_text((out / name).read_text())
    assert check_written(copy, [spec]) == []
    calm_1 = next(n for n in _numbers(out) if n["experiment"] == "table_smoke" and n["method"] == "calm"
                  and n["shots"] == "1")
    shown = cell(float(calm_1["mean"]), float(calm_1["ci95"]))
    text = (copy / "smoke.md").read_text()
    line = next(ln for ln in text.splitlines() if "| tones · tiny_qwen2_audio | calm |" in ln)
    (copy / "smoke.md").write_text(text.replace(line, line.replace(shown, "no data", 1)))
    problems = check_written(copy, [spec])
    assert len(problems) == 1 and "'no data'" in problems[0] and repr(shown) in problems[0]


def test_a_job_that_breaks_is_marked_failed_and_the_table_is_still_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import calm.pipeline

    spec = load_table("smoke")

    def broken(cfg):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(calm.pipeline, "run_job", broken)
    numbers = build_tables([spec], tmp_path, ["logger=none", f"paths.data_dir={tmp_path / 'data'}",
                                              f"paths.finished_dir={tmp_path / 'finished'}"], collect_only=False)
    assert numbers and all(n.status == "failed: RuntimeError: CUDA out of memory"
                           for n in numbers if n.source == "ours")
    assert "tones · tiny_qwen2_audio: failed (RuntimeError: CUDA out of memory)" in (tmp_path / "smoke.md").read_text()
