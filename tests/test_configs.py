"""Every config option and experiment file composes, and bad settings fail before any model loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from calm.cache import cache_key
from calm.errors import CacheError, ConfigError, DataError, ProtocolError
from calm.run.job import build_methods
from calm.run.pipeline import run_job
from tests.cli import REPO, compose_config, small_fsdd

GROUPS = ["backbone", "dataset", "prompt", "method", "protocol", "logger"]


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_of_every_group_composes(group: str, tmp_path: Path) -> None:
    for option in sorted(p.stem for p in (REPO / "configs" / group).glob("*.yaml")):
        cfg = compose_config([f"{group}={option}"], tmp_path)
        OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (REPO / "configs" / "experiment").glob("*.yaml")))
def test_every_experiment_composes_and_builds_its_methods(experiment: str, tmp_path: Path) -> None:
    cfg = compose_config([f"experiment={experiment}"], tmp_path)
    methods = build_methods(cfg.method)
    assert methods and all(hasattr(m, "fit") and hasattr(m, "predict") for m in methods.values())


def test_quickstart_is_the_documented_recipe(tmp_path: Path) -> None:
    cfg = compose_config(["experiment=quickstart"], tmp_path)
    assert (cfg.backbone.name, cfg.dataset.name, cfg.shots, cfg.ways, cfg.episodes, cfg.queries) == (
        "whisper_tiny",
        "fsdd",
        5,
        10,
        100,
        5,
    )
    assert cfg.dataset.max_clips_per_class == 60
    assert list(cfg.backbone.hook_points) == ["decoder_self_attn", "decoder_cross_attn", "encoder_self_attn"]
    assert set(cfg.method.estimators) == {"sav", "calm"}
    calm = instantiate(cfg.method.estimators.calm)
    assert (calm.tau, calm.tau_w, calm.reliability) == (0.07, 0.5, "margin_clamped")
    assert instantiate(cfg.method.estimators.sav).top_k == 20


def test_top_level_keys_override_from_the_command_line(tmp_path: Path) -> None:
    cfg = compose_config(["shots=1", "ways=5", "episodes=7", "queries=3", "seed=4"], tmp_path)
    assert (cfg.shots, cfg.ways, cfg.episodes, cfg.queries, cfg.seed) == (1, 5, 7, 3, 4)


@pytest.fixture()
def fsdd_copy(tmp_path: Path, fsdd_root: Path) -> Path:
    return small_fsdd(fsdd_root, tmp_path / "fsdd")


def _job(tmp_path: Path, overrides: list[str]):
    return compose_config(["logger=none", "backbone=whisper_tiny", *overrides], tmp_path / "out")


def test_shots_larger_than_a_class_fail_before_the_model_loads(
    tmp_path: Path, fsdd_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALM_CACHE", str(tmp_path / "cache"))
    cfg = _job(tmp_path, [f"dataset.root={fsdd_copy}", "shots=3"])
    with pytest.raises(ProtocolError, match="shots") as err:
        run_job(cfg)
    assert "How to fix" in str(err.value)
    assert not (tmp_path / "cache").exists(), "nothing may be extracted for an impossible protocol"


def test_missing_dataset_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        run_job(_job(tmp_path, [f"dataset.root={tmp_path / 'nowhere'}"]))


def test_missing_assets_and_no_weights(tmp_path: Path, fsdd_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALM_ASSETS", str(tmp_path / "no-assets"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(Exception, match="cannot load the weights of openai/whisper-tiny.en") as err:
        run_job(_job(tmp_path, [f"dataset.root={fsdd_copy}", "shots=1", "queries=1"]))
    assert "backbone.path" in str(err.value)


def test_cache_folder_written_under_another_key(
    tmp_path: Path, fsdd_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALM_CACHE", str(tmp_path / "cache"))
    cfg = _job(tmp_path, [f"dataset.root={fsdd_copy}", "shots=1", "queries=1", "episodes=2", "force=true"])
    run_job(cfg)
    folder = next(p for p in (tmp_path / "cache").iterdir() if p.is_dir())
    key_file = folder / "key.json"
    other = json.loads(key_file.read_text())["fields"]
    other["backbone"]["decoder_prompt"] = "startofprev+text+sot+notimestamps"
    key_file.write_text(json.dumps({"key": cache_key(other), "fields": other}))
    with pytest.raises(CacheError, match="decoder_prompt") as err:
        run_job(cfg)
    assert "How to fix" in str(err.value)


def test_unknown_dataset_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown dataset"):
        run_job(_job(tmp_path, ["dataset.name=nope"]))
