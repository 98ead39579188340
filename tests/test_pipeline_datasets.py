"""The pipeline's dataset-specific metrics on real audio in official layouts: EER for ASVspoof (two-class
detection), exact match for multi-label AudioSet, and protocol=paper's two labelled selections."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from calm.run.pipeline import run_job
from calm.testing.smoke_layouts import make_asvspoof, make_audioset
from tests.cli import compose_config

SMALL_GRID = [
    "grids.calm.tau=[0.01,0.07]",
    "grids.calm.tau_w=[0.5]",
    "grids.calm.top_k=[5,all]",
    "grids.calm.shrinkage=[0]",
    "grids.calm.reliability=[margin_clamped,prob]",
]


def _digit(fsdd_root: Path, digit: int, i: int) -> tuple[np.ndarray, int]:
    speakers = ["george", "jackson", "lucas", "nicolas", "yweweler"]
    return sf.read(fsdd_root / "recordings" / f"{digit}_{speakers[i % 5]}_{i // 5 + 10}.wav", dtype="float32")


@pytest.fixture()
def asvspoof_root(tmp_path: Path, fsdd_root: Path) -> Path:
    """Bonafide = spoken 'zero', spoof = spoken 'one': separable, so EER must be low."""
    lines = {
        "train": [
            f"LA_0001 LA_T_{i:03d} - {'-' if i < 6 else 'A01'} {'bonafide' if i < 6 else 'spoof'}" for i in range(12)
        ],
        "eval": [
            f"LA_0002 LA_E_{i:03d} - {'-' if i < 6 else 'A07'} {'bonafide' if i < 6 else 'spoof'}" for i in range(12)
        ],
    }
    la = make_asvspoof(tmp_path / "asv", lines)
    for part, prefix in (("train", "T"), ("eval", "E")):
        for i in range(12):
            wave, rate = _digit(fsdd_root, 0 if i < 6 else 1, i + (0 if part == "train" else 12))
            sf.write(la / f"ASVspoof2019_LA_{part}" / "flac" / f"LA_{prefix}_{i:03d}.flac", wave, rate)
    return tmp_path / "asv"


def _run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: list[str]) -> dict:
    monkeypatch.setenv("CALM_CACHE", str(tmp_path / "cache"))
    cfg = compose_config(["backbone=whisper_tiny", "logger=none", *overrides], tmp_path / "out")
    run_job(cfg)
    return json.loads((tmp_path / "out" / "results.json").read_text())


def test_asvspoof_episodes_report_eer(tmp_path: Path, asvspoof_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results = _run(
        tmp_path,
        monkeypatch,
        ["dataset=asvspoof2019_la", f"dataset.root={asvspoof_root}", "shots=3", "queries=4", "episodes=4"],
    )
    calm = next(r for r in results["results"] if r["method"] == "calm")
    assert calm["ways"] == 2 and "eer_mean" in calm
    assert calm["accuracy_mean"] >= 90.0 and calm["eer_mean"] <= 10.0
    episodes = (tmp_path / "out" / "episodes.csv").read_text().splitlines()
    assert "eer" in episodes[0].split(",")


def test_paper_protocol_reports_both_selections_labelled(
    tmp_path: Path, asvspoof_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """method=auto (SAV, CALM and auto): both labelled selections of every tuned method, the `auto`
    estimator on the fixed split, and `auto[cv]`, the tuned method whose own [cv] choice has the best
    cross-validated score, reported with that [cv] row's test scores."""
    results = _run(
        tmp_path,
        monkeypatch,
        [
            "dataset=asvspoof2019_la",
            f"dataset.root={asvspoof_root}",
            "shots=3",
            "protocol=paper",
            "prompt=paper",
            "method=auto",
            *SMALL_GRID,
        ],
    )
    rows = {r["method"]: r for r in results["results"]}
    assert set(rows) == {"sav", "calm", "auto", "calm[cv]", "calm[oracle]", "sav[cv]", "sav[oracle]", "auto[cv]"}
    assert "cross-validation on the support set" in rows["calm[cv]"]["selection"]
    assert rows["calm[oracle]"]["selection"].startswith("oracle")
    assert rows["calm[oracle]"]["accuracy_mean"] >= rows["calm[cv]"]["accuracy_mean"]
    assert rows["sav"]["queries"] == 12 and rows["sav"]["episodes"] == 1, "the whole test split, scored once"
    assert results["paper_grid"]["calm"]["grid_size"] == 2 * 1 * 2 * 1 * 2
    assert "eer" in results["paper_grid"]["calm"]["oracle"]["test"]
    # configs/grids/asvspoof2019_la.yaml: SAV k in {20, 40, 100}; Whisper tiny.en has 72 heads, so 100 is all heads
    assert results["paper_grid"]["sav"]["grid_size"] == 3 and "eer_mean" in rows["sav[oracle]"]
    assert results["protocol"] == "paper" and results["prompt"]["name"] == "paper"
    grid = results["paper_grid"]
    scores = {m: grid[m]["cv_choice"]["cv_score"] for m in ("sav", "calm")}
    chosen = grid["auto"]["selected"]
    assert grid["auto"]["cv_scores"] == scores and scores[chosen] == max(scores.values())
    assert chosen == "sav" or scores["sav"] < scores["calm"], "ties go to the first tuned method"
    assert rows["auto[cv]"]["accuracy_mean"] == rows[f"{chosen}[cv]"]["accuracy_mean"]
    assert rows["auto[cv]"]["eer_mean"] == rows[f"{chosen}[cv]"]["eer_mean"]
    assert rows["auto[cv]"]["setting"]["method"] == chosen
    assert "across the tuned methods" in rows["auto[cv]"]["selection"]
    assert results["selections"]["auto"]["episodes"] == 1
    assert "selected" in (tmp_path / "out" / "episodes.csv").read_text().splitlines()[0].split(",")


def test_paper_cv_rows_without_enough_support_to_cross_validate_say_so(
    tmp_path: Path, asvspoof_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One support clip per class cannot be cross-validated: the [cv] rows say so and show the setting
    actually used (the configured one), never an empty setting under a cross-validation label."""
    results = _run(
        tmp_path,
        monkeypatch,
        [
            "dataset=asvspoof2019_la",
            f"dataset.root={asvspoof_root}",
            "shots=1",
            "protocol=paper",
            "prompt=paper",
            *SMALL_GRID,
        ],
    )
    rows = {r["method"]: r for r in results["results"]}
    for method in ("calm[cv]", "sav[cv]"):
        assert rows[method]["selection"].startswith("not cross-validated: a class has 1 support clip"), method
    assert rows["sav[cv]"]["setting"] == {"top_k": 20}, "configs/estimator/sav.yaml's top_k"
    assert rows["sav[oracle]"]["selection"].startswith("oracle")


@pytest.fixture()
def audioset_root(tmp_path: Path, fsdd_root: Path) -> Path:
    """Classes = spoken digits 0, 1, 2; some clips say two digits and carry both labels."""
    mids = [("/m/zero", "zero"), ("/m/one", "one"), ("/m/two", "two")]
    clips, train, evaluation = {}, [], []
    root = tmp_path / "audioset"
    for i in range(18):
        split, rows = ("train", train) if i < 12 else ("eval", evaluation)
        digits = [i % 3] if i % 4 else [i % 3, (i + 1) % 3]
        ytid = f"yt{i:09d}"
        rows.append((ytid, 0.0, 10.0, ",".join(mids[d][0] for d in digits)))
        clips[f"{ytid}_000000.wav"] = split
    make_audioset(root, mids, train, evaluation, clips)
    for name, split in clips.items():
        i = int(name[2:11])
        digits = [i % 3] if i % 4 else [i % 3, (i + 1) % 3]
        parts = [_digit(fsdd_root, d, i)[0] for d in digits]
        sf.write(root / "audio" / split / name, np.concatenate(parts), 8000)
    return root


def test_audioset_multilabel_reports_exact_match(
    tmp_path: Path, audioset_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = _run(
        tmp_path,
        monkeypatch,
        ["dataset=audioset", f"dataset.root={audioset_root}", "shots=2", "queries=1", "episodes=3"],
    )
    calm = next(r for r in results["results"] if r["method"] == "calm")
    assert "exact_match_mean" in calm and 0.0 <= calm["exact_match_mean"] <= 100.0
    header = (tmp_path / "out" / "episodes.csv").read_text().splitlines()[0]
    assert "exact_match" in header


def test_pseudo_labels_on_a_multi_label_dataset_fail_before_the_model_is_needed(
    tmp_path: Path, audioset_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With weights that do not exist, a late check would fail on the missing weights instead."""
    from calm.errors import ConfigError

    with pytest.raises(ConfigError, match="one label per clip; audioset is multi-label"):
        _run(
            tmp_path,
            monkeypatch,
            [
                "dataset=audioset",
                f"dataset.root={audioset_root}",
                "shots=2",
                "queries=1",
                "method=pseudo_label",
                "backbone=qwen2_audio",
                f"backbone.path={tmp_path / 'no_weights'}",
            ],
        )


def test_vggsound_audio_video_through_the_pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """VGGSound mp4 clips (audio + video streams) with the tiny Qwen2.5-Omni thinker in audio_video mode:
    the extraction decodes audio and frames from each file and keys the cache by modality."""
    from calm.testing.smoke_layouts import make_vggsound

    rows, present = [], {}
    for i in range(8):
        label, split = ("dog barking", "cat purring")[i % 2], "train" if i < 4 else "test"
        rows.append((f"vid{i:08d}", 30, label, split))
        present[f"vid{i:08d}_000030"] = "mp4"
    root = make_vggsound(tmp_path / "vgg", rows, present)
    results = _run(
        tmp_path,
        monkeypatch,
        [
            "dataset=vggsound",
            f"dataset.root={root}",
            "backbone=tiny_qwen2_5_omni",
            f"backbone.path={tmp_path / 'tiny_omni'}",
            "backbone.modality=audio_video",
            "shots=2",
            "queries=2",
            "episodes=2",
            "extract.batch_size=4",
        ],
    )
    assert results["cache"]["extracted"] == 8 and results["missing"] == 0
    key = json.loads((Path(results["cache"]["path"]) / "key.json").read_text())["fields"]["backbone"]
    assert key["modality"] == "audio_video"


@pytest.mark.slow
def test_paper_protocol_with_val_clips_adds_val_rows(
    tmp_path: Path, fsdd_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """protocol.reliability=val: the table's val clips are V; every tuned method gets a [val] row, and the
    [val] choice is recorded with the number of val clips it was scored on."""
    lines = ["path,label,split"]
    for digit in range(3):
        for i, split in enumerate(["train"] * 3 + ["val"] * 2 + ["test"] * 2):
            lines.append(f"{fsdd_root / 'recordings' / f'{digit}_george_{i}.wav'},{digit},{split}")
    (tmp_path / "clips.csv").write_text("\n".join(lines) + "\n")
    results = _run(
        tmp_path,
        monkeypatch,
        [
            "dataset=folder",
            f"dataset.root={fsdd_root}",
            f"dataset.csv={tmp_path / 'clips.csv'}",
            "shots=3",
            "protocol=paper",
            "protocol.reliability=val",
            *SMALL_GRID,
        ],
    )
    rows = {r["method"]: r for r in results["results"]}
    assert set(rows) == {"sav", "calm", *(f"{m}[{s}]" for m in ("calm", "sav") for s in ("cv", "val", "oracle"))}
    assert rows["calm[val]"]["selection"].startswith("best on the reliability (val) set V")
    assert results["paper_grid"]["calm"]["val_choice"]["val_clips"] == 6
    assert any("measured on the table's val clips" in note for note in results["notes"])
