"""Issue 10 case 8: every top-level setting is typed and checked before any model loads, in single
runs and in sweep preflight; unknown `+keys` are refused; a dataset root that is a file says so; and
`top_k` means the same for every estimator."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from calm.errors import ConfigError, DataError
from calm.methods import CALM, GRW, SAV, LinearProbe, TopKSoft
from calm.run.pipeline import run_job
from tests.cli import REPO, compose_config, dataset_config, small_fsdd
from tests.sweep_runs import rejected_sweep

BAD_SETTINGS = [
    ("seed=1.5", "seed"),
    ("seed=abc", "seed"),
    ("seed=true", "seed"),
    ("seed=-1", "seed"),
    ("shots=2.5", "shots"),
    ("shots=0", "shots"),
    ("episodes=0", "episodes"),
    ("queries=abc", "queries"),
    ("ways=1", "ways"),
    ("force=maybe", "force"),
    ("figures=1", "figures"),
    ("task_name=null", "task_name"),
    ("on_bad_clip=ignore", "on_bad_clip"),
    ("on_long_clip=cut", "on_long_clip"),
    ("extract.batch_size=0", "extract.batch_size"),
    ("extract.num_workers=-1", "extract.num_workers"),
    ("+extract.prefetch=2", "extract.prefetch"),
    ("trainer.precision=17", "trainer.precision"),
    ("trainer.num_nodes=0", "trainer.num_nodes"),
    ("+trainer.callbacks=[]", "trainer.callbacks"),
    ("+trainer.max_epoch=1", "trainer.max_epoch"),
    ("+foo=1", "foo"),
    ("~protocol", "protocol"),
]


@pytest.fixture()
def fsdd_copy(tmp_path: Path, fsdd_root: Path) -> Path:
    return small_fsdd(fsdd_root, tmp_path / "fsdd", digits=(0, 1))


@pytest.mark.parametrize(("override", "key"), BAD_SETTINGS, ids=[o for o, _ in BAD_SETTINGS])
def test_a_bad_setting_fails_before_any_model_loads(
    tmp_path: Path, fsdd_copy: Path, override: str, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Weights that do not exist: a check made after the model is asked for fails on them instead."""
    monkeypatch.setenv("CALM_CACHE", str(tmp_path / "cache"))
    cfg = compose_config(
        [
            "logger=none",
            "backbone=whisper_tiny",
            f"backbone.path={tmp_path / 'no_weights'}",
            f"dataset.root={fsdd_copy}",
            "shots=1",
            "queries=1",
            "episodes=1",
            override,
        ],
        tmp_path / "out",
    )
    with pytest.raises(ConfigError, match=f"`{key}`") as err:
        run_job(cfg)
    assert "How to fix" in str(err.value)
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize(
    "override",
    [
        "trainer.precision=16",
        "trainer.precision=bf16-mixed",
        "trainer.devices=[0]",
        "trainer.devices=auto",
        "ways=null",
        "ways=2",
        "+trainer.deterministic=true",
        "seed=0",
        "extract.num_workers=0",
    ],
)
def test_good_settings_pass(tmp_path: Path, override: str) -> None:
    from calm.config.schema import check_settings

    check_settings(compose_config([override], tmp_path))


def _global_files() -> list[Path]:
    return [
        path
        for path in sorted((REPO / "configs").rglob("*.yaml"))
        if path.read_text().startswith("# @package _global_") and "hydra" not in path.parts[-2:-1]
    ]


def test_every_top_level_key_a_config_file_sets_is_declared() -> None:
    from calm.config.schema import declared_keys

    declared = declared_keys()
    for path in _global_files():
        keys = set(OmegaConf.load(path)) - {"defaults", "hydra"}
        assert keys <= declared, f"{path} sets {sorted(keys - declared)}, unknown to calm.config.schema"


@pytest.mark.parametrize(
    "option",
    [f"experiment={p.stem}" for p in sorted((REPO / "configs" / "experiment").glob("*.yaml"))]
    + ["hparams_search=calm_optuna"],
)
def test_every_experiment_and_search_passes_the_schema(tmp_path: Path, option: str) -> None:
    from calm.config.schema import check_settings

    check_settings(compose_config([option], tmp_path))


def test_sweep_preflight_checks_every_jobs_settings(tmp_path: Path) -> None:
    output = rejected_sweep(tmp_path, ["seed=0,1.5"])
    assert "`seed` must be a non-negative integer, got 1.5 (job: " in output and " seed=1.5 " in output
    output = rejected_sweep(tmp_path / "plus", ["shots=1,2", "+foo=1"])
    assert "`foo` is not a setting calm knows" in output


@pytest.mark.parametrize("dataset", ["folder", "esc50", "asvspoof2019_la", "vggsound", "audioset", "fsdd"])
def test_a_dataset_root_that_is_a_file_says_so(tmp_path: Path, dataset: str) -> None:
    from calm.data.registry import read_dataset

    file = tmp_path / "notes.txt"
    file.write_text("not a folder")
    with pytest.raises(DataError, match="is a file, not a folder"):
        read_dataset(dataset_config(dataset, root=str(file)), tmp_path)


ESTIMATORS = [CALM, GRW, TopKSoft, SAV, LinearProbe]


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("top_k", [0, -1, 2.5, True, "all"])
def test_top_k_is_refused_the_same_way_by_every_estimator(cls: type, top_k: object) -> None:
    with pytest.raises(ConfigError) as err:
        cls(top_k=top_k).fit(torch.randn(4, 3, 2), torch.tensor([0, 0, 1, 1]))
    assert err.value.problem == f"{cls.__name__} top_k must be null (all heads) or a positive integer, got {top_k!r}"


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_top_k_null_or_above_the_head_count_means_all_heads(cls: type) -> None:
    gen = torch.Generator().manual_seed(0)
    support, labels = torch.randn(8, 5, 4, generator=gen), torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    query = torch.randn(6, 5, 4, generator=gen)
    extra = {"steps": 5} if cls is LinearProbe else {}
    every = cls(top_k=None, **extra).fit(support, labels).predict_scores(query)
    assert torch.equal(cls(top_k=1000, **extra).fit(support, labels).predict_scores(query), every)
    assert torch.equal(cls(top_k=5, **extra).fit(support, labels).predict_scores(query), every)
