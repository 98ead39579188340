"""The figures plot the right numbers: the per-class head-weight grid is CALM's weights averaged over
the episodes each class appears in, SAV's grid counts its selections, and the accuracy-vs-shots
curves are the results.json values; the sweep callback writes the PNGs and a W&B summary run."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from calm.figures import (
    HeadCollector,
    HeadGrid,
    SweepFigures,
    accuracy_curves,
    read_sweep,
    shown_classes,
    top_heads,
    write_job_figures,
)
from calm.methods import CALM, SAV
from calm.protocols import Episode
from calm.reports import evaluate
from calm.run.tracking import NullTracker
from tests.cli import REPO
from tests.wandb_records import exit_code, logged_images, run_record

# Two hook points, a subset of layers (4 and 8, as a backbone hooking some layers gives), 3 heads each.
NAMES = [f"{point}.L{layer}.H{head}" for point in ("dec_self", "enc_self") for layer in (4, 8) for head in range(3)]
N_CLASSES = 6
CLASS_NAMES = [f"class {c}" for c in range(N_CLASSES - 1)] + ["costs $5"]
# Episodes over subsets of the classes; class 5 never appears, class 2 in three episodes.
EPISODE_CLASSES = ([0, 2, 4], [1, 2, 3], [2, 3, 4], [0, 1])
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, list[Episode]]:
    """Clustered synthetic features (4 clips per class) and episodes whose local labels map to global classes."""
    gen = torch.Generator().manual_seed(0)
    labels = np.repeat(np.arange(N_CLASSES), 4)
    features = torch.randn(N_CLASSES, len(NAMES), 5, generator=gen)[labels]
    features += 0.9 * torch.randn(features.shape, generator=gen)
    episodes = []
    for index, classes in enumerate(EPISODE_CLASSES):
        rows = [np.flatnonzero(labels == c) for c in classes]
        episodes.append(
            Episode(
                index=index,
                seed=index,
                classes=np.array(classes),
                support=np.concatenate([r[:2] for r in rows]),
                support_labels=np.repeat(np.arange(len(classes)), 2),
                query=np.concatenate([r[2:] for r in rows]),
                query_labels=np.repeat(np.arange(len(classes)), 2),
            )
        )
    return features, episodes


@pytest.fixture(scope="module")
def collected(data) -> HeadCollector:
    features, episodes = data
    collector = HeadCollector(len(NAMES), N_CLASSES)
    evaluate(episodes, features, {"calm": CALM(tau_w=0.3), "sav": SAV(top_k=3)}, NullTracker(), collector)
    return collector


def test_head_grid_places_every_named_head() -> None:
    grid = HeadGrid.from_names(NAMES, len(NAMES))
    assert grid.points == ("dec_self", "enc_self")
    assert grid.layers == ((4, 8), (4, 8)) and grid.width == (3, 3)
    panels = grid.panels(np.arange(len(NAMES)))
    assert panels[1][1, 2] == NAMES.index("enc_self.L8.H2")
    assert panels[0][0, 1] == NAMES.index("dec_self.L4.H1")
    fallback = HeadGrid.from_names(None, 5)
    assert len(fallback.points) == 1 and fallback.panels(np.arange(5))[0].tolist() == [[0, 1, 2, 3, 4]]


def test_class_weight_grid_is_calms_weights_averaged_over_the_episodes_with_the_class(data, collected) -> None:
    features, episodes = data
    per_class = defaultdict(list)
    for episode in episodes:
        support, labels = features[torch.tensor(episode.support)], torch.tensor(episode.support_labels)
        fitted = CALM(tau_w=0.3).fit(support, labels, n_classes=episode.ways)
        for local, c in enumerate(episode.classes):
            per_class[int(c)].append(fitted.weights_[:, local].numpy())
    mean = collected.mean_weights("calm")
    assert len(per_class[2]) == 3
    for c in range(N_CLASSES - 1):
        np.testing.assert_allclose(mean[:, c], np.mean(per_class[c], axis=0), rtol=1e-6)
        np.testing.assert_allclose(mean[:, c].sum(), 1.0, rtol=1e-5)
    assert np.isnan(mean[:, 5]).all(), "a class in no episode has no weights"
    grid = HeadGrid.from_names(NAMES, len(NAMES))
    panels = grid.panels(mean[:, 2])
    for j, name in enumerate(NAMES):
        point, layer, head = name.split(".")
        p = grid.points.index(point)
        assert panels[p][grid.layers[p].index(int(layer[1:])), int(head[1:])] == pytest.approx(mean[j, 2])


def test_top_heads_are_each_class_heaviest_heads(collected) -> None:
    mean = collected.mean_weights("calm")
    heads, values = top_heads(mean, 4)
    for c in range(N_CLASSES - 1):
        expected = sorted(range(len(NAMES)), key=lambda j: (-mean[j, c], j))[:4]
        assert heads[c].tolist() == expected
        np.testing.assert_allclose(values[c], mean[expected, c])
    assert heads[5].tolist() == [-1] * 4


def test_sav_grid_counts_how_often_each_head_was_selected(data, collected) -> None:
    features, episodes = data
    counts = np.zeros(len(NAMES))
    for episode in episodes:
        support, labels = features[torch.tensor(episode.support)], torch.tensor(episode.support_labels)
        fitted = SAV(top_k=3).fit(support, labels, n_classes=episode.ways)
        counts[fitted.selected_heads_.numpy()] += 1
    np.testing.assert_array_equal(collected.selection_counts["sav"], counts)
    np.testing.assert_allclose(collected.selection_rate("sav"), counts / len(episodes))
    assert "sav" not in collected.weight_sums and "calm" not in collected.selection_counts


def test_job_figures_are_written_as_pngs(collected, tmp_path: Path) -> None:
    figures = write_job_figures(collected, HeadGrid.from_names(NAMES, len(NAMES)), CLASS_NAMES, tmp_path, "synthetic")
    assert figures == {
        "calm/class_weights": tmp_path / "calm_class_weights.png",
        "calm/top_heads": tmp_path / "calm_top_heads.png",
        "sav/selection": tmp_path / "sav_selection.png",
    }
    for path in figures.values():
        assert path.read_bytes()[:8] == PNG_MAGIC
    assert "classes shown" not in _title(figures["calm/top_heads"]), "5 classes: none left out, nothing said"


def _title(png: Path) -> str:
    """The figure's title, as written into the PNG's metadata."""
    with Image.open(png) as image:
        return image.text["Title"]


def test_shown_classes_are_those_of_the_most_episodes_ties_by_index() -> None:
    episodes = np.array([1, 0, 3, 1, 2, 3, 1])
    assert shown_classes(episodes, 3) == [2, 4, 5]
    assert shown_classes(episodes, 4) == [0, 2, 4, 5]
    assert shown_classes(episodes, 40) == [0, 2, 3, 4, 5, 6], "never a class that no episode had"


def test_job_figures_of_many_classes_draw_at_most_the_cap_and_say_so(tmp_path: Path) -> None:
    n_heads, n_classes, ways = 6, 300, 5
    collector = HeadCollector(n_heads, n_classes)
    weights = np.full((n_heads, ways), 1.0 / n_heads)
    for start in range(0, n_classes, ways):  # every class in one episode, then 250..259 in a second one
        collector.add("calm", SimpleNamespace(weights_=weights), range(start, start + ways))
    for start in (250, 255):
        collector.add("calm", SimpleNamespace(weights_=weights), range(start, start + ways))
    figures = write_job_figures(
        collector,
        HeadGrid.from_names(None, n_heads),
        [f"c{c}" for c in range(n_classes)],
        tmp_path,
        "vggsound",
        max_classes=40,
    )
    pages = sorted(key for key in figures if key.startswith("calm/class_weights"))
    assert pages == [f"calm/class_weights_{n}" for n in range(1, 5)], "40 classes, 10 per page"
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(p.name for p in figures.values())
    assert len(figures) == 5
    for key, png in figures.items():
        assert "40 of 300 classes shown" in _title(png), key
    assert shown_classes(collector.class_episodes["calm"], 40) == list(range(30)) + list(range(250, 260))


def _job(
    sweep: Path,
    number: int,
    dataset: str,
    shots: int,
    seed: int,
    rows: list[tuple[str, float, float]],
    tau: float = 0.07,
    method: dict[str, Any] | None = None,
) -> None:
    config = {
        "dataset": {"name": dataset, "root": "/data"},
        "backbone": {"name": "whisper_tiny"},
        "shots": shots,
        "seed": seed,
        "figures": True,
        "paths": {"output_dir": str(sweep / str(number))},
        "logger": {"name": "wandb"},
        "method": method
        or {
            "name": "calm_vs_sav",
            "estimators": {
                "calm": {"_target_": "calm.methods.CALM", "tau": tau},
                "sav": {"_target_": "calm.methods.SAV"},
            },
        },
    }
    results = [{"method": m, "shots": shots, "accuracy_mean": mean, "accuracy_ci95": ci} for m, mean, ci in rows]
    (sweep / str(number)).mkdir(parents=True)
    (sweep / str(number) / "results.json").write_text(json.dumps({"config": config, "results": results}))


@pytest.fixture()
def sweep(tmp_path: Path) -> Path:
    """Jobs of a sweep over shots and seed on two datasets; on esc50 also over CALM's tau."""
    sweep = tmp_path / "2030-01-01_00-00-00"
    _job(sweep, 0, "fsdd", 1, 0, [("calm", 50.0, 4.0), ("sav", 40.0, 3.0)])
    _job(sweep, 1, "fsdd", 5, 0, [("calm", 70.0, 2.0), ("sav", 60.0, 2.5)])
    _job(sweep, 2, "fsdd", 1, 1, [("calm", 54.0, 3.0), ("sav", 44.0, 4.0)])
    _job(sweep, 3, "esc50", 1, 0, [("calm", 30.0, 5.0)], tau=0.05)
    _job(sweep, 4, "esc50", 1, 0, [("calm", 35.0, 6.0)], tau=0.1)
    (sweep / "5").mkdir()  # a failed job: no results.json
    return sweep


def test_accuracy_curves_are_the_results_json_values(sweep: Path) -> None:
    curves = accuracy_curves(read_sweep(sweep))
    assert set(curves) == {("fsdd", "whisper_tiny"), ("esc50", "whisper_tiny")}
    fsdd = {c.label: c for c in curves["fsdd", "whisper_tiny"]}
    assert set(fsdd) == {"calm", "sav"}
    assert fsdd["calm"].shots.tolist() == [1, 5]
    # 1 shot: seeds 0 and 1 pooled (mean of means, CIs combined as independent); 5 shots: one job as is
    np.testing.assert_allclose(fsdd["calm"].mean, [52.0, 70.0])
    np.testing.assert_allclose(fsdd["calm"].ci95, [np.hypot(4.0, 3.0) / 2, 2.0])
    np.testing.assert_allclose(fsdd["sav"].mean, [42.0, 60.0])
    assert fsdd["sav"].seeds.tolist() == [2, 1]
    esc = {c.label: c for c in curves["esc50", "whisper_tiny"]}
    assert set(esc) == {"calm (tau=0.05)", "calm (tau=0.1)"}, "a swept setting makes its own curve"
    assert esc["calm (tau=0.1)"].mean.tolist() == [35.0] and esc["calm (tau=0.1)"].ci95.tolist() == [6.0]


def test_a_search_over_calms_settings_keeps_savs_identical_rows_as_one_job(tmp_path: Path) -> None:
    """Trials of one seed varying only CALM's tau repeat the same SAV job: its CI must not shrink."""
    for number, tau in enumerate((0.05, 0.1, 0.3)):
        _job(tmp_path, number, "fsdd", 1, 0, [("calm", 50.0 + number, 4.0), ("sav", 40.0, 3.0)], tau=tau)
    curves = {c.label: c for c in accuracy_curves(read_sweep(tmp_path))["fsdd", "whisper_tiny"]}
    assert set(curves) == {"calm (tau=0.05)", "calm (tau=0.1)", "calm (tau=0.3)", "sav"}
    assert (curves["sav"].mean.tolist(), curves["sav"].ci95.tolist(), curves["sav"].seeds.tolist()) == (
        [40.0],
        [3.0],
        [1],
    )
    # a second seed is independent: pooled with the (single) seed-0 job, not with its three copies
    _job(tmp_path, 3, "fsdd", 1, 1, [("calm", 60.0, 2.0), ("sav", 44.0, 4.0)], tau=0.05)
    curves = {c.label: c for c in accuracy_curves(read_sweep(tmp_path))["fsdd", "whisper_tiny"]}
    np.testing.assert_allclose(curves["sav"].mean, [42.0])
    np.testing.assert_allclose(curves["sav"].ci95, [np.hypot(3.0, 4.0) / 2])
    assert curves["sav"].seeds.tolist() == [2] and curves["calm (tau=0.1)"].seeds.tolist() == [1]
    np.testing.assert_allclose(curves["calm (tau=0.05)"].ci95, [np.hypot(4.0, 2.0) / 2])


def test_same_seed_duplicates_that_differ_are_averaged_not_pooled(tmp_path: Path) -> None:
    _job(tmp_path, 0, "fsdd", 1, 0, [("sav", 40.0, 3.0)])
    _job(tmp_path, 1, "fsdd", 1, 0, [("sav", 42.0, 5.0)])
    (curve,) = accuracy_curves(read_sweep(tmp_path))["fsdd", "whisper_tiny"]
    assert (curve.label, curve.mean.tolist(), curve.ci95.tolist(), curve.seeds.tolist()) == ("sav", [41.0], [4.0], [1])


def _pseudo_label(min_agreement: float, sav_top_k: int) -> dict[str, Any]:
    return {
        "name": "pseudo_label",
        "baseline": "calm",
        "estimators": {
            "calm": {"_target_": "calm.methods.CALM", "tau": 0.07},
            "sav": {"_target_": "calm.methods.SAV", "top_k": sav_top_k},
        },
        "pseudo_label": {"refit": ["calm", "sav"], "samples": 8, "min_agreement": min_agreement},
    }


def test_pseudo_label_refits_are_split_by_their_own_settings_only(tmp_path: Path) -> None:
    """`<est>+pl` rows depend on the pseudo_label block and on <est>'s settings; plain rows on neither."""
    for number, (agreement, top_k) in enumerate([(0.5, 3), (0.9, 3), (0.5, 5), (0.9, 5)]):
        calm_pl = 55.0 if agreement == 0.5 else 58.0
        sav = 40.0 + top_k
        _job(
            tmp_path,
            number,
            "fsdd",
            1,
            0,
            [("calm", 50.0, 4.0), ("sav", sav, 3.0), ("calm+pl", calm_pl, 4.5), ("sav+pl", sav + agreement, 3.5)],
            method=_pseudo_label(agreement, top_k),
        )
    curves = {c.label: c for c in accuracy_curves(read_sweep(tmp_path))["fsdd", "whisper_tiny"]}
    assert set(curves) == {
        "calm",
        "sav (top_k=3)",
        "sav (top_k=5)",
        "calm+pl (pseudo_label.min_agreement=0.5)",
        "calm+pl (pseudo_label.min_agreement=0.9)",
        *(f"sav+pl (pseudo_label.min_agreement={a}, top_k={k})" for a in (0.5, 0.9) for k in (3, 5)),
    }
    assert curves["calm+pl (pseudo_label.min_agreement=0.9)"].mean.tolist() == [58.0]
    assert curves["calm+pl (pseudo_label.min_agreement=0.9)"].ci95.tolist() == [4.5]
    assert curves["sav+pl (pseudo_label.min_agreement=0.9, top_k=5)"].mean.tolist() == [45.9]
    assert curves["calm"].ci95.tolist() == [4.0] and curves["calm"].seeds.tolist() == [1]


def test_zero_shot_rows_are_split_by_the_zero_shot_settings(tmp_path: Path) -> None:
    for number, tokens in enumerate((16, 32)):
        _job(
            tmp_path,
            number,
            "fsdd",
            1,
            0,
            [("zero_shot", 30.0 + number, 2.0)],
            method={"name": "zero_shot", "baseline": None, "estimators": {}, "zero_shot": {"max_new_tokens": tokens}},
        )
    curves = {c.label: c for c in accuracy_curves(read_sweep(tmp_path))["fsdd", "whisper_tiny"]}
    assert set(curves) == {"zero_shot (zero_shot.max_new_tokens=16)", "zero_shot (zero_shot.max_new_tokens=32)"}
    assert curves["zero_shot (zero_shot.max_new_tokens=32)"].mean.tolist() == [31.0]


def _config(sweep: Path, logger: str, figures: bool = True):
    """The sweep's config with the real configs/logger/<logger>.yaml (W&B offline, the job-only keys set)."""
    logger_cfg = OmegaConf.load(REPO / "configs" / "logger" / f"{logger}.yaml")
    if logger == "wandb":
        logger_cfg = OmegaConf.merge(logger_cfg, {"mode": "offline", "run_name": "unused", "tags": ["unused"]})
    return OmegaConf.create({"figures": figures, "hydra": {"sweep": {"dir": str(sweep)}}, "logger": logger_cfg})


def test_sweep_callback_writes_pngs_and_a_wandb_summary_run_of_the_sweeps_group(sweep: Path) -> None:
    SweepFigures().on_multirun_end(_config(sweep, "wandb"))
    for name in ("fsdd", "esc50"):
        assert (sweep / f"accuracy_vs_shots_{name}_whisper_tiny.png").read_bytes()[:8] == PNG_MAGIC
    run_dir = next((sweep / "wandb").glob("offline-run-*"))
    assert exit_code(run_dir) == 0
    record = run_record(run_dir)
    assert record.job_type == "sweep-summary"
    assert record.run_group == sweep.name
    assert sorted(record.tags) == ["esc50", "fsdd", "whisper_tiny"]
    images = logged_images(run_dir)
    assert set(images) == {f"figures/accuracy_vs_shots/{name}/whisper_tiny" for name in ("fsdd", "esc50")}
    for key, image in images.items():
        png = sweep / f"accuracy_vs_shots_{key.split('/')[2]}_whisper_tiny.png"
        assert image["sha256"] == hashlib.sha256(png.read_bytes()).hexdigest(), "W&B holds the same PNG"


def test_sweep_callback_respects_the_switch_and_the_logger(sweep: Path) -> None:
    SweepFigures().on_multirun_end(_config(sweep, "wandb", figures=False))
    assert not list(sweep.glob("*.png")) and not (sweep / "wandb").exists()
    SweepFigures().on_multirun_end(_config(sweep, "none"))
    assert len(list(sweep.glob("accuracy_vs_shots_*.png"))) == 2 and not (sweep / "wandb").exists()
