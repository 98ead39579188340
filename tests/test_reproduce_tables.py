"""scripts/reproduce_tables.py and calm.tables: the smoke table end to end (tiny backbone, generated
data, one row group without data), every cell it writes checked against numbers.csv and the jobs'
results.json, collecting finished jobs, and a job that breaks; the table files' shot settings, the
paper numbers' placement and the rows each composed job is expected to report, without running jobs.
The paper table's whole smoke run (every group on generated data in its official layout) is slow: CI
runs it as its own step (`make smoke-tables`)."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from calm.baselines import ZERO_SHOT_ROW
from calm.errors import CalmError, ConfigError
from calm.reports.paper_grid import tuned_methods
from calm.selection.rows import tuned_row_names
from calm.tables import (
    CSV_NAME,
    JobOutcome,
    RowGroup,
    ShotSetting,
    TableSpec,
    build_tables,
    cell,
    compose_job,
    expected_methods,
    job_configs,
    latex_escape,
    load_table,
    numbers_of,
    shot_setting,
    smoke_spec,
    table_rows,
)
from calm.tables.render import NOT_REPORTED, NOT_RUN
from tests.cli import REPO


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("tables")
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "reproduce_tables.py"), "--smoke", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
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
        shots = [k.key for k in spec.shots]
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
                reported = row.get(f"{n['metric']}_mean", math.nan)  # a row without the metric: NaN, "no data"
                if reported != mean and not (math.isnan(reported) and math.isnan(mean)):
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


def test_the_smoke_table_holds_the_clap_baselines_of_their_job(smoke: tuple[Path, str]) -> None:
    out, _ = smoke
    ours = [n for n in _numbers(out) if n["experiment"] == "table_smoke_clap"]
    assert {(n["method"], n["shots"], n["status"]) for n in ours} == {
        (method, shots, "ok") for method in ("clap_knn", "clap_zero_shot") for shots in ("1", "2")}
    cells = markdown_cells((out / "smoke.md").read_text())
    assert ("tones · tiny_clap (baselines)", "clap_zero_shot") in cells


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
    cv = next(ln for ln in table.splitlines() if "| ESC-50 · qwen2_audio | calm[cv] |" in ln)
    assert cv.rstrip(" |").endswith(NOT_REPORTED)
    assert "ESC-50 · qwen2_audio: no data (ESC-50 not found" in table


def test_expected_rows_are_named_by_the_modules_that_make_them(tmp_path: Path) -> None:
    with job_configs():
        paper = compose_job(RowGroup("table_esc50_qwen2_audio", "x"), ShotSetting(1), tmp_path, [])
        zero_shot = compose_job(RowGroup("table_smoke", "x"), ShotSetting(1), tmp_path, ["method=zero_shot"])
    assert set(tuned_row_names("calm")) <= set(expected_methods(paper))
    assert tuned_row_names("calm") == ("calm[cv]", "calm[oracle]")
    assert expected_methods(zero_shot)[-1] == ZERO_SHOT_ROW == "zero_shot"
    assert tuned_methods(zero_shot) == []  # protocol=episodic tunes nothing


def test_expected_rows_are_the_estimators_and_two_per_estimator_with_a_grid() -> None:
    """knn has a grid but is not an estimator of the job; grw is an estimator without a grid; outside
    protocol=paper nothing is tuned."""
    cfg = OmegaConf.create({"protocol": {"_target_": "calm.protocols.PaperProtocol"},
                            "grids": {"calm": {}, "sav": {}, "knn": {}},
                            "method": {"estimators": {"calm": {}, "grw": {}, "sav": {}}}})
    assert expected_methods(cfg) == ["calm", "grw", "sav", "calm[cv]", "calm[oracle]", "sav[cv]", "sav[oracle]"]
    cfg.protocol._target_ = "calm.protocols.EpisodicProtocol"
    assert expected_methods(cfg) == ["calm", "grw", "sav"]


def test_a_composed_paper_job_expects_two_rows_per_estimator_its_grids_file_tunes(tmp_path: Path) -> None:
    with job_configs():
        cfg = compose_job(RowGroup("table_asvspoof_qwen2_audio", "x"), ShotSetting(None), tmp_path, [])
    expected = expected_methods(cfg)
    assert cfg.grids and "calm[oracle]" in expected
    for name in cfg.method.estimators:
        assert (f"{name}[cv]" in expected and f"{name}[oracle]" in expected) == (name in cfg.grids), name


def test_shot_entries_parse_and_bad_ones_are_clear_errors() -> None:
    assert shot_setting(20, "t") == ShotSetting(20)
    assert shot_setting("<=20", "t") == shot_setting("≤ 20", "t") == ShotSetting(20, at_most=True)
    assert shot_setting("all", "t") == ShotSetting(None)
    assert [s.header for s in (ShotSetting(20), ShotSetting(20, True), ShotSetting(None))] == [
        "20-shot", "≤20-shot", "all (whole train list)"]
    assert [s.key for s in (ShotSetting(20), ShotSetting(20, True), ShotSetting(None))] == ["20", "<=20", "all"]
    for bad in (0, "<=0", "some", True, "20 shots"):
        with pytest.raises(ConfigError, match="is not a shot setting"):
            shot_setting(bad, "t")


def test_a_groups_shots_override_the_tables_and_columns_are_ordered(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(
        "title: x\nshots: [5]\ngroups:\n  - experiment: table_smoke\n"
        "  - experiment: table_esc50_qwen2_audio\n    shots: [all, '<=20', 20]\n")
    spec = load_table("t", folder=tmp_path)
    assert spec.groups[0].shots == (ShotSetting(5),)
    assert spec.groups[1].shots == (ShotSetting(None), ShotSetting(20, True), ShotSetting(20))
    # columns: by K, each K before its "<=K", the whole list last
    assert [s.key for s in spec.shots] == ["5", "20", "<=20", "all"]


def test_paper_numbers_sit_beside_their_rows_and_other_rows_say_not_reported() -> None:
    """Two groups: A runs 20 and 40 and carries the paper's 88.15 at calm[oracle]; B runs only "<=20"
    and has no paper number. Cells come from hand-made outcomes (no job runs)."""
    a = RowGroup("exp_a", "A", paper={"calm[oracle]": 88.15}, shots=(ShotSetting(20), ShotSetting(40)))
    b = RowGroup("exp_b", "B", shots=(ShotSetting(20, True),))
    spec = TableSpec("t", "t", (ShotSetting(20), ShotSetting(20, True), ShotSetting(40)), (a, b))
    row = {"accuracy_mean": 50.0, "accuracy_ci95": float("nan")}
    outcomes = [JobOutcome(a, ShotSetting(20), ["calm[cv]", "calm[oracle]"], {"calm[oracle]": row}),
                JobOutcome(a, ShotSetting(40), ["calm[cv]", "calm[oracle]"]),
                JobOutcome(b, ShotSetting(20, True), ["calm[oracle]"], {"calm[oracle]": row})]
    rows = table_rows(spec, numbers_of(spec, outcomes))
    assert rows == [
        ["A", "calm[cv]", "no data", NOT_RUN, "no data", NOT_REPORTED],
        ["A", "calm[oracle]", "50.00", NOT_RUN, "no data", "88.15"],
        ["B", "calm[oracle]", NOT_RUN, "50.00", NOT_RUN, NOT_REPORTED],
    ]


def test_the_paper_table_holds_the_authors_settings() -> None:
    spec = load_table("paper")
    shots = {g.experiment: [s.key for s in g.shots] for g in spec.groups}
    assert shots == {"table_esc50_qwen2_5_omni_pl": ["<=40"], "table_esc50_qwen2_5_omni_pl_leaky": ["40"],
                     "table_esc50_qwen2_5_omni": ["<=40"], "table_esc50_clap": ["<=40"],
                     "table_vggsound_qwen2_audio": ["20", "40"], "table_vggsound_clap": ["20", "40"],
                     "table_audioset_qwen2_audio": ["<=20"], "table_audioset_clap": ["<=20"],
                     "table_asvspoof_qwen2_audio": ["all"], "table_asvspoof_clap": ["all"],
                     "table_vggsound_av_qwen2_5_omni": ["20"]}
    paper = {g.experiment: g.paper for g in spec.groups}
    assert paper == {"table_esc50_qwen2_5_omni_pl": {}, "table_esc50_qwen2_5_omni_pl_leaky": {"calm[oracle]": 99.25},
                     "table_esc50_qwen2_5_omni": {},
                     "table_vggsound_qwen2_audio": {"calm[oracle]": 88.15},
                     "table_audioset_qwen2_audio": {"calm[oracle]": 70.5},
                     "table_asvspoof_qwen2_audio": {"calm[oracle]": 81.99},
                     "table_vggsound_av_qwen2_5_omni": {"calm[oracle]": 91.02},
                     "table_esc50_clap": {}, "table_vggsound_clap": {}, "table_audioset_clap": {},
                     "table_asvspoof_clap": {}}


def test_paper_jobs_compose_with_the_authors_precision_and_support_draw(tmp_path: Path) -> None:
    spec = load_table("paper")
    precision = {"qwen2_audio": "16-true", "qwen2_5_omni": "bf16-true", "clap": "32-true"}
    with job_configs():
        for group in spec.groups:
            for shots in group.shots:
                cfg = compose_job(group, shots, tmp_path, [])  # checks the support draw matches the column
                clap = cfg.backbone.name == "clap"  # reads no prompt: its baselines, never a question
                assert cfg.protocol.name == "paper" and cfg.prompt.name.startswith("clean" if clap else "paper")
                assert not clap or expected_methods(cfg) == ["clap_knn", "clap_zero_shot"], group.experiment
                assert cfg.trainer.precision == precision[cfg.backbone.name], group.experiment
                assert shots.k is None or cfg.shots == shots.k
                leaky = group.experiment.endswith("_leaky")
                assert (cfg.protocol.support_pool == "ast_leaky") == leaky, group.experiment


def test_a_column_the_experiment_does_not_draw_is_refused(tmp_path: Path) -> None:
    with job_configs(), pytest.raises(ConfigError, match="'5' column needs protocol.support_draw=all to be False"):
        compose_job(RowGroup("table_asvspoof_qwen2_audio", "x"), ShotSetting(5), tmp_path, [])


def test_the_smoke_spec_maps_shots_and_keeps_the_draws() -> None:
    spec = smoke_spec(load_table("paper"))  # smoke.shots: {20: 2, 40: 3}
    shots = {g.experiment: [s.key for s in g.shots] for g in spec.groups}
    assert shots["table_vggsound_qwen2_audio"] == ["2", "3"] and shots["table_esc50_qwen2_5_omni"] == ["<=3"]
    assert shots["table_audioset_qwen2_audio"] == ["<=2"] and shots["table_asvspoof_qwen2_audio"] == ["all"]
    assert [s.key for s in spec.shots] == ["2", "<=2", "3", "<=3", "all"]
    assert spec.groups[1].paper == {"calm[oracle]": 99.25}, "the smoke spec keeps the paper numbers"
    bare = TableSpec("t", "t", (ShotSetting(7),), (RowGroup("table_smoke", "x", shots=(ShotSetting(7),)),))
    with pytest.raises(ConfigError, match="no smoke size for 7-shot"):
        smoke_spec(bare)


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


@pytest.mark.slow
def test_the_paper_tables_smoke_run_fills_every_group(tmp_path: Path) -> None:
    """`--smoke --tables paper`: every row group on its tiny backbone and generated data in its dataset's
    official layout; every expected row (two per tuned method) has a number, and every cell agrees."""
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "reproduce_tables.py"), "--smoke", "--tables",
                           "paper", "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    ours = [n for n in _numbers(tmp_path) if n["source"] == "ours"]
    assert {n["experiment"] for n in ours} == {g.experiment for g in load_table("paper").groups}
    assert [n for n in ours if n["status"] != "ok"] == []
    for experiment in {n["experiment"] for n in ours}:
        methods = {n["method"] for n in ours if n["experiment"] == experiment}
        assert {"calm[cv]", "calm[oracle]", "sav[cv]", "sav[oracle]"} <= methods, experiment
    tuned = [n for n in ours if n["method"].endswith(("[cv]", "[oracle]"))]
    assert [n for n in tuned if not math.isfinite(float(n["mean"]))] == []
    assert {n["metric"] for n in ours if n["experiment"] == "table_audioset_qwen2_audio"} == {"exact_match_questions"}
    for layout in ("esc50/ESC-50-master/meta/esc50.csv", "vggsound/vggsound.csv", "audioset/eval_segments.csv",
                   "asvspoof2019_la/LA/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.train.trn.txt"):
        assert (tmp_path / "smoke_data" / layout).is_file(), layout
    assert check_written(tmp_path, [smoke_spec(load_table("paper"))]) == []
