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
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from calm.baselines import ZERO_SHOT_ROW
from calm.data.manifest_entries import read_manifest
from calm.data.manifest_overlap import summarize_manifests
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
from calm.tables.jobs import NEEDS_MANIFESTS
from calm.tables.render import NOT_REPORTED, NOT_RUN, group_notes, leak_notes
from calm.tables.smoke import write_manifests
from tests.cli import REPO


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("tables")
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "reproduce_tables.py"), "--smoke", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
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
    body = text[text.index(r"\midrule") : text.index(r"\bottomrule")]
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
        for n in (n for n in numbers if n["table"] == spec.name and n["source"] in ("ours", "paper")):
            mean, ci = float(n["mean"]), float(n["ci95"])
            column = len(shots) if n["source"] == "paper" else shots.index(n["shots"])
            expected = f"{mean:.2f}" if n["source"] == "paper" else cell(mean, ci)
            where = (n["group"], n["method"])
            shown_md = md.get(where, [None] * (column + 1))[column]
            shown_tex = tex.get((latex_escape(n["group"]), latex_escape(n["method"])), [None] * (column + 1))[column]
            if shown_md != expected or shown_tex != latex_escape(expected):
                problems.append(
                    f"{spec.name}: {where} {n['shots'] or 'paper'}: table shows {shown_md!r} / "
                    f"{shown_tex!r}, numbers.csv says {expected!r}"
                )
            if n["source"] == "ours" and n["status"] == "ok" and n["spread"] != "ci95":  # a seeded group's row
                seeds = [
                    float(m["mean"])
                    for m in numbers
                    if m["source"].startswith("ours, one seed")
                    and (m["experiment"], m["method"], m["shots"]) == (n["experiment"], n["method"], n["shots"])
                ]
                if not math.isclose(mean, statistics.fmean(seeds)) or not math.isclose(ci, statistics.stdev(seeds)):
                    problems.append(f"{spec.name}: {where} is not the mean ± sd of its seeds {seeds}")
            elif n["source"] == "ours" and n["status"] == "ok":
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
    methods = {
        "sav",
        "calm",
        "grw",
        "concat",
        "uniform_soft",
        "confidence_weighted",
        "topk_soft",
        "hard_vote",
        "linear_probe",
    }
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
        (method, shots, "ok") for method in ("clap_knn", "clap_zero_shot") for shots in ("1", "2")
    }
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
    cfg = OmegaConf.create(
        {
            "protocol": {"_target_": "calm.protocols.PaperProtocol"},
            "grids": {"calm": {}, "sav": {}, "knn": {}},
            "method": {"estimators": {"calm": {}, "grw": {}, "sav": {}}},
        }
    )
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
        "20-shot",
        "≤20-shot",
        "all (whole train list)",
    ]
    assert [s.key for s in (ShotSetting(20), ShotSetting(20, True), ShotSetting(None))] == ["20", "<=20", "all"]
    for bad in (0, "<=0", "some", True, "20 shots"):
        with pytest.raises(ConfigError, match="is not a shot setting"):
            shot_setting(bad, "t")


def test_a_groups_shots_override_the_tables_and_columns_are_ordered(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(
        "title: x\nshots: [5]\ngroups:\n  - experiment: table_smoke\n"
        "  - experiment: table_esc50_qwen2_audio\n    shots: [all, '<=20', 20]\n"
    )
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
    outcomes = [
        JobOutcome(a, ShotSetting(20), ["calm[cv]", "calm[oracle]"], {"calm[oracle]": row}),
        JobOutcome(a, ShotSetting(40), ["calm[cv]", "calm[oracle]"]),
        JobOutcome(b, ShotSetting(20, True), ["calm[oracle]"], {"calm[oracle]": row}),
    ]
    rows = table_rows(spec, numbers_of(spec, outcomes))
    assert rows == [
        ["A", "calm[cv]", "no data", NOT_RUN, "no data", NOT_REPORTED],
        ["A", "calm[oracle]", "50.00", NOT_RUN, "no data", "88.15"],
        ["B", "calm[oracle]", NOT_RUN, "50.00", NOT_RUN, NOT_REPORTED],
    ]


TRUTH = {f"/m/esc{k:02d}": name for k, name in enumerate(("dog", "rooster", "pig"))}  # the smoke ESC-50 classes
CLEAN_SHOTS = {
    "table_esc50_qwen2_5_omni_pl": ["<=40"],
    "table_esc50_qwen2_5_omni": ["<=40"],
    "table_vggsound_qwen2_audio": ["20", "40"],
    "table_audioset_qwen2_audio": ["<=20"],
    "table_asvspoof_qwen2_audio": ["all"],
    "table_vggsound_av_qwen2_5_omni": ["20"],
    "table_esc50_clap": ["<=40"],
    "table_vggsound_clap": ["20", "40"],
    "table_audioset_clap": ["<=20"],
    "table_asvspoof_clap": ["all"],
}
# The replay groups' files, as the authors' slurm scripts name them (the experiment files state the script):
# experiment -> (support, val or None for V = support, test, the script)
REPLAY_FILES = {
    "replay_esc50_train20": ("esc/esc_mcq_train.json", None, "esc/esc_mcq_test.json", "slurm/esc50/mcq_sav_grw.sh"),
    "replay_esc50_40shot": (
        "esc/esc50_mcq_40shot_train.json",
        None,
        "esc/esc_mcq_test_split.json",
        "slurm/baselines/linear_probe.sh",
    ),
    "replay_esc50_pl40": (
        "esc/pseudolabeled_esc_40shot_mcq_qwen2.5_8trials.json",
        None,
        "esc/esc_mcq_test.json",
        "slurm/mcq_sav_prwe.sh",
    ),
    "replay_esc50_pl40_regenerate": (
        "esc/pseudolabeled_esc_40shot_mcq_qwen2.5_8trials.json",
        None,
        "esc/esc_mcq_test.json",
        "slurm/mcq_sav_prwe.sh",
    ),
    "replay_vggsound_20shot": (
        "vggsound/vggsound_mcq_train_20shot.json",
        "vggsound/vggsound_mcq_val.json",
        "vggsound/vggsound_mcq_test.json",
        "slurm/vggsound/mcq_sav_prwe.sh",
    ),
    "replay_vggsound_40shot": (
        "vggsound/vggsound_mcq_train_40shot.json",
        "vggsound/vggsound_mcq_val.json",
        "vggsound/vggsound_mcq_test.json",
        "slurm/vggsound/mcq_sav_prwe.sh",
    ),
    "replay_vggsound_seeds": (
        "vggsound/vggsound_train_cleaned_801.json",
        "vggsound/vggsound_mcq_val.json",
        "vggsound/vggsound_mcq_test_split.json",
        "slurm/vggsound/prwe_vggsound_seeds.sh",
    ),
    "replay_audioset_pl": (
        "audioset/pseudolabeled_audioset_qwen2-audio-instruct_train_8trials.json",
        None,
        "audioset/audioset_test_individual_mcqs.json",
        "slurm/mcq_sav_prwe_audioset.sh",
    ),
    "replay_asvspoof": (
        "LA_AvSpoof/LA_train.json",
        None,
        "LA_AvSpoof/LA_eval.json",
        "slurm/la_spoof/mcq_sav_prwe_spoof.sh",
    ),
    "replay_vggsound_av": (
        "vggsound/vgg_video_train.json",
        None,
        "vggsound/vgg_video_test.json",
        "slurm/legacy/mcq_sav_prwe_av.sh",
    ),
}


def test_the_paper_table_holds_the_authors_settings() -> None:
    spec = load_table("paper")
    shots = {g.experiment: [s.key for s in g.shots] for g in spec.groups}
    assert shots == {**CLEAN_SHOTS, **{name: ["all"] for name in REPLAY_FILES}}
    assert {g.experiment for g in spec.groups if g.replay} == set(REPLAY_FILES)
    paper = {g.experiment: g.paper for g in spec.groups}
    assert {k: v for k, v in paper.items() if not k.startswith("replay_")} == {
        "table_esc50_qwen2_5_omni_pl": {},
        "table_esc50_qwen2_5_omni": {},
        "table_vggsound_qwen2_audio": {"calm[oracle]": 88.15},
        "table_audioset_qwen2_audio": {"calm[oracle]": 70.5},
        "table_asvspoof_qwen2_audio": {"calm[oracle]": 81.99},
        "table_vggsound_av_qwen2_5_omni": {"calm[oracle]": 91.02},
        "table_esc50_clap": {},
        "table_vggsound_clap": {},
        "table_audioset_clap": {},
        "table_asvspoof_clap": {},
    }
    # ESC-50's 99.25 is not tied to a stated run: it stands beside each candidate support file
    assert [e for e, p in paper.items() if p.get("calm[oracle]") == 99.25] == [
        "replay_esc50_train20",
        "replay_esc50_40shot",
        "replay_esc50_pl40",
    ]
    assert paper["replay_vggsound_20shot"] == {"calm[oracle]": 88.15, "calm[val]": 88.15}
    seeds = {g.experiment: g.seeds for g in spec.groups if g.seeds}
    assert seeds == {"replay_vggsound_seeds": (123, 456, 101, 201, 301, 401, 501, 601, 701, 801)}


def test_paper_jobs_compose_with_the_authors_precision_and_support_draw(tmp_path: Path) -> None:
    spec = load_table("paper")
    precision = {"qwen2_audio": "16-true", "qwen2_5_omni": "bf16-true", "clap": "32-true"}
    with job_configs():
        for group in spec.groups:
            for shots in group.shots:
                cfg = compose_job(group, shots, tmp_path, [])  # checks the support draw matches the column
                clap = cfg.backbone.name == "clap"  # reads no prompt: its baselines, never a question
                assert cfg.protocol.name == "paper", group.experiment
                assert cfg.prompt.name.startswith("clean" if clap else "paper") or (
                    group.replay and cfg.prompt.name == "manifest"
                ), group.experiment
                assert not clap or expected_methods(cfg) == ["clap_knn", "clap_zero_shot"], group.experiment
                assert cfg.trainer.precision == precision[cfg.backbone.name], group.experiment
                assert shots.k is None or cfg.shots == shots.k
                assert cfg.evaluate.dtype == ("model" if group.replay else "float32"), group.experiment
                assert "support_pool" not in cfg.protocol


def test_replay_groups_read_the_files_their_scripts_name(tmp_path: Path) -> None:
    """Each replay group's support / val / test manifests are the ones its script names, the script is
    stated in its experiment file and in the table's note, V is the val file exactly where their runner had
    one (and then a [val] row is expected), and the relative paths start at paper.manifests_dir."""
    spec = load_table("paper")
    with job_configs():
        for group in (g for g in spec.groups if g.replay):
            cfg = compose_job(
                group,
                group.shots[0],
                tmp_path,
                ["paper.manifests_dir=/their/SAVs/data"],
                group.seeds[-1] if group.seeds else None,
            )
            support, val, test, script = REPLAY_FILES[group.experiment]
            manifests = cfg.dataset.manifests
            assert (manifests.support, manifests.get("val"), manifests.test) == (support, val, test), group.experiment
            assert cfg.dataset.name == "manifest" and cfg.dataset.manifests_dir == "/their/SAVs/data"
            assert script in (Path("configs/experiment") / f"{group.experiment}.yaml").read_text()
            assert cfg.protocol.reliability == ("val" if val else "support"), group.experiment
            assert ("calm[val]" in expected_methods(cfg)) == bool(val), group.experiment
            assert cfg.protocol.support_draw == "all"
    with job_configs():
        asvspoof = compose_job(RowGroup("replay_asvspoof", "x", replay=True), ShotSetting(None), tmp_path, [])
        regenerate = compose_job(
            RowGroup("replay_esc50_pl40_regenerate", "x", replay=True), ShotSetting(None), tmp_path, []
        )
    assert asvspoof.protocol.selection_metric == "macro_f1"
    assert (regenerate.dataset.pseudo_labels, regenerate.method.name) == ("truth", "pseudo_label")


def test_a_replay_group_without_the_authors_files_says_so_and_runs_nothing(tmp_path: Path) -> None:
    group = RowGroup(
        "replay_esc50_train20", "ESC replay", paper={"calm[oracle]": 99.25}, shots=(ShotSetting(None),), replay=True
    )
    spec = TableSpec("t", "t", (ShotSetting(None),), (group,))
    numbers = build_tables(
        [spec],
        tmp_path,
        [
            f"paths.data_dir={tmp_path / 'data'}",
            f"paths.cache_dir={tmp_path / 'cache'}",
            f"paths.finished_dir={tmp_path / 'finished'}",
        ],
        False,
    )
    ours = [n for n in numbers if n.source == "ours"]
    assert ours and all(n.status == f"no data: {NEEDS_MANIFESTS}" for n in ours)
    assert NEEDS_MANIFESTS == "needs the authors' files: set paper.manifests_dir"
    table = (tmp_path / "t.md").read_text()
    assert f"- ESC replay: no data ({NEEDS_MANIFESTS})" in table
    assert markdown_cells(table)[("ESC replay", "calm[oracle]")] == ["no data", "99.25"]
    assert not (tmp_path / "jobs").exists() and not (tmp_path / "cache").exists()


def test_a_seeded_group_shows_mean_and_sd_over_its_seeds() -> None:
    """Three seeds give calm 50, 60 and 70 (sd 10) and sav 40, 40 and NaN (a seed without a number leaves
    the cell without one); the per-seed numbers stay in numbers.csv beside the shown ones."""
    group = RowGroup("exp_s", "S", shots=(ShotSetting(None),), seeds=(1, 2, 3))
    spec = TableSpec("t", "t", (ShotSetting(None),), (group,))
    outcomes = [
        JobOutcome(
            group,
            ShotSetting(None),
            ["calm", "sav"],
            {"calm": {"accuracy_mean": calm, "accuracy_ci95": 1.0}}
            | ({"sav": {"accuracy_mean": 40.0}} if seed < 3 else {}),
            seed=seed,
        )
        for seed, calm in ((1, 50.0), (2, 60.0), (3, 70.0))
    ]
    numbers = numbers_of(spec, outcomes)
    shown = {n.method: n for n in numbers if n.source == "ours"}
    assert (shown["calm"].mean, shown["calm"].ci95, shown["calm"].episodes, shown["calm"].spread) == (
        60.0,
        10.0,
        3,
        "sd over 3 seeds",
    )
    assert math.isnan(shown["sav"].mean) and shown["sav"].status == "method missing from results"
    assert sorted(n.source for n in numbers if n.method == "calm") == [
        "ours",
        "ours, one seed 1",
        "ours, one seed 2",
        "ours, one seed 3",
    ]
    assert table_rows(spec, numbers) == [
        ["S", "calm", "60.00 ± 10.00", NOT_REPORTED],
        ["S", "sav", "no data", NOT_REPORTED],
    ]
    assert group_notes(spec) == ["S: cells: mean ± sd over 3 seeds (1, 2, 3), one job per seed"]


def test_leak_notes_give_each_jobs_measured_share() -> None:
    group = RowGroup("exp_l", "L", shots=(ShotSetting(None),))
    marked = {
        "accuracy_mean": 1.0,
        "leaks_test_clips": True,
        "support_test_clip_share": 0.25,
        "val_test_clip_share": 0.5,
    }
    outcomes = [
        JobOutcome(group, ShotSetting(None), ["calm"], {"calm": marked}),
        JobOutcome(group, ShotSetting(20), ["calm"], {"calm": {"accuracy_mean": 1.0}}),
    ]
    assert leak_notes(outcomes) == [
        "L (all (whole train list)): marked leaks_test_clips, measured: 25.0% of the "
        "support rows and 50.0% of the val rows are test clips' audio files"
    ]


def test_the_smoke_manifests_keep_the_real_files_relations(tmp_path: Path) -> None:
    """ESC-50's test file is the union of its val and test-split files, the 40-shot files repeat clips and
    share test clips (measured by the manifests command's summaries), the pseudo-labelled file carries a
    wrong label with its truth, and every seeded support file is written."""
    folder = write_manifests(tmp_path, [123, 456])
    summaries = {s.name: s for s in summarize_manifests(folder)[0]}
    esc = {name.removeprefix("esc/"): s for name, s in summaries.items() if name.startswith("esc/")}
    assert esc["esc_mcq_test.json"].clips == esc["esc_mcq_val.json"].clips | esc["esc_mcq_test_split.json"].clips
    assert not esc["esc_mcq_train.json"].clips & esc["esc_mcq_test.json"].clips
    forty = esc["esc50_mcq_40shot_train.json"]
    assert (forty.entries, len(forty.clips), len(forty.clips & esc["esc_mcq_test.json"].clips)) == (12, 9, 6)
    entries = read_manifest(folder / "esc" / "pseudolabeled_esc_40shot_mcq_qwen2.5_8trials.json")
    wrong = [e for e in entries if e.label != TRUTH[e.true_label]]
    assert len(wrong) == 1 and (wrong[0].votes, wrong[0].trials) == (5, 8)
    assert {"vggsound/vggsound_train_cleaned_123.json", "vggsound/vggsound_train_cleaned_456.json"} <= set(summaries)
    assert all(e.video for e in read_manifest(folder / "vggsound" / "vgg_video_test.json"))


def test_a_column_the_experiment_does_not_draw_is_refused(tmp_path: Path) -> None:
    with job_configs(), pytest.raises(ConfigError, match="'5' column needs protocol.support_draw=all to be False"):
        compose_job(RowGroup("table_asvspoof_qwen2_audio", "x"), ShotSetting(5), tmp_path, [])


def test_the_smoke_spec_maps_shots_and_keeps_the_draws() -> None:
    spec = smoke_spec(load_table("paper"))  # smoke.shots: {20: 2, 40: 3}
    shots = {g.experiment: [s.key for s in g.shots] for g in spec.groups}
    assert shots["table_vggsound_qwen2_audio"] == ["2", "3"] and shots["table_esc50_qwen2_5_omni"] == ["<=3"]
    assert shots["table_audioset_qwen2_audio"] == ["<=2"] and shots["table_asvspoof_qwen2_audio"] == ["all"]
    assert [s.key for s in spec.shots] == ["2", "<=2", "3", "<=3", "all"]
    paper = {g.experiment: g.paper for g in spec.groups}
    assert paper["table_vggsound_qwen2_audio"] == {"calm[oracle]": 88.15}, "the smoke spec keeps the paper numbers"
    assert [g.seeds for g in spec.groups if g.seeds] == [(123, 456)]  # smoke.seeds: the first 2
    bare = TableSpec("t", "t", (ShotSetting(7),), (RowGroup("table_smoke", "x", shots=(ShotSetting(7),)),))
    with pytest.raises(ConfigError, match="no smoke size for 7-shot"):
        smoke_spec(bare)


def test_collect_reads_finished_jobs_and_runs_nothing(smoke: tuple[Path, str], tmp_path: Path) -> None:
    out, _ = smoke
    spec = load_table("smoke")
    data = out / "smoke_data" / "tones"
    overrides = [
        "logger=none",
        f"paths.data_dir={out / 'data'}",
        f"paths.cache_dir={tmp_path / 'empty_cache'}",
        f"paths.finished_dir={out / 'finished'}",
    ]
    numbers = build_tables(
        [spec], tmp_path, overrides, collect_only=True, per_group_overrides={"table_smoke": [f"dataset.root={data}"]}
    )
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
    calm_1 = next(
        n for n in _numbers(out) if n["experiment"] == "table_smoke" and n["method"] == "calm" and n["shots"] == "1"
    )
    shown = cell(float(calm_1["mean"]), float(calm_1["ci95"]))
    text = (copy / "smoke.md").read_text()
    line = next(ln for ln in text.splitlines() if "| tones · tiny_qwen2_audio | calm |" in ln)
    (copy / "smoke.md").write_text(text.replace(line, line.replace(shown, "no data", 1)))
    problems = check_written(copy, [spec])
    assert len(problems) == 1 and "'no data'" in problems[0] and repr(shown) in problems[0]


def test_a_job_that_breaks_is_marked_failed_and_the_table_is_still_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import calm.run.pipeline

    spec = load_table("smoke")

    def broken(cfg):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(calm.run.pipeline, "run_job", broken)
    numbers = build_tables(
        [spec],
        tmp_path,
        ["logger=none", f"paths.data_dir={tmp_path / 'data'}", f"paths.finished_dir={tmp_path / 'finished'}"],
        collect_only=False,
    )
    assert numbers and all(
        n.status == "failed: RuntimeError: CUDA out of memory" for n in numbers if n.source == "ours"
    )
    assert "tones · tiny_qwen2_audio: failed (RuntimeError: CUDA out of memory)" in (tmp_path / "smoke.md").read_text()


@pytest.mark.slow
def test_the_paper_tables_smoke_run_fills_every_group(tmp_path: Path) -> None:
    """`--smoke --tables paper`: every row group on its tiny backbone and generated data in its dataset's
    official layout; every expected row (two per tuned method) has a number, and every cell agrees."""
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "reproduce_tables.py"),
            "--smoke",
            "--tables",
            "paper",
            "--out",
            str(tmp_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    ours = [n for n in _numbers(tmp_path) if n["source"] == "ours"]
    assert {n["experiment"] for n in ours} == {g.experiment for g in load_table("paper").groups}
    assert [n for n in ours if n["status"] != "ok"] == []
    for experiment in {n["experiment"] for n in ours}:
        methods = {n["method"] for n in ours if n["experiment"] == experiment}
        assert {"calm[cv]", "calm[oracle]", "sav[cv]", "sav[oracle]"} <= methods, experiment
    for experiment in ("replay_vggsound_20shot", "replay_vggsound_40shot", "replay_vggsound_seeds"):
        assert {"calm[val]", "sav[val]"} <= {n["method"] for n in ours if n["experiment"] == experiment}
    assert not any(n["method"].endswith("[val]") for n in ours if n["experiment"] == "replay_esc50_train20")
    table = (tmp_path / "paper.md").read_text()
    assert (
        "ESC-50 · qwen2_5_omni · replay · esc50_mcq_40shot_train (candidate 2 of 3) (all (whole train list)): "
        "marked leaks_test_clips, measured: " in table
    )
    tuned = [n for n in ours if n["method"].endswith(("[cv]", "[oracle]"))]
    assert [n for n in tuned if not math.isfinite(float(n["mean"]))] == []
    assert {n["metric"] for n in ours if n["experiment"] == "table_audioset_qwen2_audio"} == {"exact_match_questions"}
    for layout in (
        "esc50/ESC-50-master/meta/esc50.csv",
        "vggsound/vggsound.csv",
        "audioset/eval_segments.csv",
        "asvspoof2019_la/LA/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.train.trn.txt",
    ):
        assert (tmp_path / "smoke_data" / layout).is_file(), layout
    assert check_written(tmp_path, [smoke_spec(load_table("paper"))]) == []
