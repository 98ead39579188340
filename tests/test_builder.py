"""One builder for every configurable part: each config group (and each nested block that makes an object)
is built by `calm.config.builder.build`, with its base-class check and its refusal of unknown keys; a new
estimator is one class and one YAML file."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import calm.config.builder as config_objects
from calm.backbones.base import Backbone
from calm.baselines import PseudoLabelSettings, ZeroShotSettings
from calm.baselines.text_zero_shot import TextZeroShotSettings
from calm.config.builder import CONFIG_DIR
from calm.data.dataset import Dataset
from calm.errors import ConfigError
from calm.methods.base import Estimator, build_estimator
from calm.protocols import Protocol
from calm.run.job import prepare
from calm.run.tracking import NullTracker, Tracker, WandbTracker, build_tracker
from calm.selection.settings import CalmGrid
from tests.cli import backbone_config, compose_config, small_fsdd

# config groups whose files build one object each, and the base class `build` checks it against (a prompt
# is any class with ClipPrompt's methods, a typing Protocol: no base class to check)
PARTS = {
    "dataset": Dataset,
    "prompt": object,
    "backbone": Backbone,
    "protocol": Protocol,
    "logger": Tracker,
    "estimator": Estimator,
}
# settings blocks nested in a group's files, built by `build(..., cls=...)` (the reading code picks the class)
BLOCKS = {
    "method.pseudo_label": PseudoLabelSettings,
    "method.zero_shot": ZeroShotSettings,
    "method.text_zero_shot": TextZeroShotSettings,
    "grids.calm": CalmGrid,
}
# config groups that make no object of their own, and why
NOT_OBJECTS = {
    "method": "a list of estimators (configs/estimator) and the settings blocks in BLOCKS",
    "grids": "per method, the lists a paper grid sweeps: grids.calm is a CalmGrid (BLOCKS)",
    "decoding": "values other files interpolate (the authors' sampling per backbone)",
    "experiment": "overrides of the other groups",
    "hparams_search": "Hydra's Optuna sweeper settings",
    "hydra": "Hydra's own settings",
    "paths": "folders",
    "tables": "table specs read by calm.tables, outside any job",
}


def test_every_config_group_is_a_part_or_says_why_not() -> None:
    groups = {path.name for path in CONFIG_DIR.iterdir() if path.is_dir()}
    assert groups == set(PARTS) | set(NOT_OBJECTS), "classify the new config group in PARTS or NOT_OBJECTS"
    assert {key.split(".")[0] for key in BLOCKS} <= set(NOT_OBJECTS)


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str | None, type]]:
    """(group, key, class) of every object `build` makes while the test runs."""
    calls: list[tuple[str, str | None, type]] = []
    check = config_objects._check_arguments

    def spy(cls, settings, extra, group, where, key):
        calls.append((group, key, cls))
        return check(cls, settings, extra, group, where, key)

    monkeypatch.setattr(config_objects, "_check_arguments", spy)
    return calls


@pytest.fixture(scope="module")
def fsdd4(fsdd_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_fsdd(fsdd_root, tmp_path_factory.mktemp("fsdd4"), digits=(0, 1, 2, 3))


def job_config(fsdd4: Path, tmp_path: Path, *overrides: str):
    return compose_config(
        [
            "backbone=whisper_tiny",
            f"dataset.root={fsdd4}",
            "shots=2",
            "queries=2",
            "episodes=2",
            "ways=4",
            "logger=none",
            "figures=false",
            f"paths.cache_dir={tmp_path / 'cache'}",
            *overrides,
        ],
        tmp_path / "out",
    )


@pytest.mark.parametrize(
    ("method", "blocks"),
    [
        ("ablations", set()),
        ("pseudo_label", {"method.pseudo_label"}),
        ("zero_shot", {"method.zero_shot"}),
    ],
)
def test_prepare_builds_every_part_through_the_builder(
    built, fsdd4: Path, tmp_path: Path, method: str, blocks: set[str]
) -> None:
    cfg = job_config(fsdd4, tmp_path, f"method={method}")
    job = prepare(cfg)
    groups = {group for group, _, _ in built}
    assert {"dataset", "prompt", "backbone", "protocol"} <= groups
    for group, key, cls in built:
        assert issubclass(cls, PARTS.get(group, object)), (group, cls)
        if key in BLOCKS:
            assert cls is BLOCKS[key]
    assert {key for _, key, _ in built if key in BLOCKS} == blocks
    estimators = {key.rsplit(".", 1)[1] for group, key, _ in built if group == "estimator"}
    assert estimators == set(cfg.method.estimators) == set(job.methods)


def test_text_zero_shot_block_is_built_before_the_backbone_is_checked(built, fsdd4: Path, tmp_path: Path) -> None:
    cfg = job_config(fsdd4, tmp_path, "method=clap")
    with pytest.raises(ConfigError, match="text tower"):  # whisper has none; the block was built first
        prepare(cfg)
    assert ("method", "method.text_zero_shot", TextZeroShotSettings) in built


@pytest.mark.parametrize(("logger", "cls"), [("none", NullTracker), ("wandb", WandbTracker)])
def test_the_logger_is_built_from_its_target(
    built, monkeypatch: pytest.MonkeyPatch, fsdd4: Path, tmp_path: Path, logger: str, cls: type
) -> None:
    started = []
    monkeypatch.setattr(
        WandbTracker, "start", lambda self, config, out_dir, job_type=None: started.append(self) or self
    )
    cfg = job_config(fsdd4, tmp_path, f"logger={logger}")
    tracker = build_tracker(OmegaConf.to_container(cfg.logger, resolve=True), {}, tmp_path)
    assert type(tracker) is cls and built == [("logger", None, cls)]
    assert started == ([tracker] if cls is WandbTracker else [])
    if cls is WandbTracker:
        assert tracker.run_name == cfg.logger.run_name and tracker.project == "calm"
    with pytest.raises(ConfigError, match=r"is not a calm\.run\.tracking\.Tracker"):
        build_tracker(
            {**OmegaConf.to_container(cfg.logger, resolve=True), "_target_": "calm.methods.SAV"}, {}, tmp_path
        )


def test_the_calm_grid_is_built_through_the_builder(built) -> None:
    grid = CalmGrid.from_config(
        {"reliability": ["prob"], "tau": [1], "tau_w": [0.5], "top_k": [3, "all"], "shrinkage": [0]},
        tie_break="random",
        tie_seed=4,
    )
    assert built == [("grids", "grids.calm", CalmGrid)]
    assert grid.top_k == (3, None) and grid.tau == (1.0,) and grid.tie_seed == 4


def test_an_estimator_config_must_name_an_estimator() -> None:
    with pytest.raises(ConfigError, match=r"is not a calm\.methods\.base\.Estimator") as err:
        build_estimator({"_target_": "calm.selection.settings.CalmSetting"}, key="method.estimators.x")
    assert "subclass of Estimator" in err.value.fix
    with pytest.raises(ConfigError, match=r"method\.estimators\.sav has no setting\(s\) \['k'\]") as err:
        build_estimator({"_target_": "calm.methods.SAV", "k": 3}, key="method.estimators.sav")
    assert "['tie_break', 'tie_seed', 'top_k']" in err.value.fix


@pytest.mark.parametrize(
    ("build_block", "problem"),
    [
        (
            lambda: PseudoLabelSettings.from_config({"refit": ["calm"], "samplez": 3}, ["calm"], None),
            r"method\.pseudo_label has no setting\(s\) \['samplez'\]",
        ),
        (lambda: ZeroShotSettings.from_config({"_target_": "x.Y"}, None), r"method\.zero_shot names a class"),
        (
            lambda: TextZeroShotSettings.from_config({"row": "clap_zero_shot"}),
            r"lacks the setting\(s\) \['templates'\]",
        ),
        (
            lambda: CalmGrid.from_config(
                {
                    "reliability": ["prob"],
                    "tau": [1],
                    "tau_w": [1],
                    "top_k": [1],
                    "shrinkage": [0],
                    "tie_break": ["index"],
                },
                tie_break="index",
            ),
            r"sets \['tie_break'\], which the job",
        ),
    ],
)
def test_a_bad_settings_block_is_a_config_error(build_block, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        build_block()


NEW_ESTIMATOR = '''
    """A user's estimator: Concat's nearest concatenated prototype, under a name of its own."""
    from calm.methods import Concat


    class MyConcat(Concat):
        pass
'''


def test_a_new_estimator_is_one_class_and_one_yaml(
    fsdd4: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The class in a module of the user's, the YAML in a config folder Hydra searches: the job reports a row
    for it, on the same episodes as every other estimator (so equal to Concat's, which it inherits)."""
    from calm.run.pipeline import run_job

    (tmp_path / "my_estimators.py").write_text(textwrap.dedent(NEW_ESTIMATOR))
    (tmp_path / "configs" / "estimator").mkdir(parents=True)
    (tmp_path / "configs" / "estimator" / "my_concat.yaml").write_text(
        "_target_: my_estimators.MyConcat\nnormalization: cosine\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = job_config(
        fsdd4,
        tmp_path,
        f"hydra.searchpath=[file://{tmp_path / 'configs'}]",
        "method=sav",
        "+estimator@method.estimators.mine=my_concat",
        "+estimator@method.estimators.concat=concat",
    )
    run_job(cfg)
    rows = {row["method"]: row for row in json.loads((tmp_path / "out" / "results.json").read_text())["results"]}
    assert set(rows) == {"sav", "mine", "concat"}
    mine, concat = rows.pop("mine"), rows.pop("concat")
    assert mine == {**concat, "method": "mine"}


def test_a_subclass_backbone_refuses_an_unknown_key_naming_its_whole_hierarchys_settings(tmp_path: Path) -> None:
    """Qwen2AudioBackbone declares only its own settings and passes `**settings` on to AudioLMBackbone: an
    unknown key is still refused before anything is built, and the accepted keys listed include those only
    the base class declares; a key only the base class requires is still required."""
    tiny = OmegaConf.to_container(backbone_config("tiny_qwen2_audio", tmp_path / "tiny"), resolve=True)
    with pytest.raises(ConfigError, match=r"has no setting\(s\) \['encoder_cutt'\]") as err:
        config_objects.build({**tiny, "encoder_cutt": False}, "backbone", base=Backbone)
    for own_or_base in ("encoder_cut", "revision", "layers", "precision", "hook_points", "tiny_seed"):
        assert f"'{own_or_base}'" in err.value.fix
    assert not (tmp_path / "tiny").exists(), "refused before the tiny model was built"
    phi4 = OmegaConf.to_container(backbone_config("tiny_phi4_multimodal", tmp_path / "phi4"), resolve=True)
    del phi4["hub_id"]
    with pytest.raises(ConfigError, match=r"lacks the setting\(s\) \['hub_id'\]"):
        config_objects.build(phi4, "backbone", base=Backbone)


class Forwards:
    def __init__(self, *, depth: int = 1) -> None: ...


class PassesOn(Forwards):
    def __init__(self, *, width: int = 2, **settings: int) -> None:
        super().__init__(**settings)


class KeepsToItself(Forwards):
    def __init__(self, **options: int) -> None:
        super().__init__()


def test_the_settings_of_a_class_are_its_hierarchys_while_it_passes_them_on() -> None:
    assert [p.name for p in config_objects.settings_parameters(PassesOn)] == ["width", "depth"]
    assert config_objects.settings_parameters(KeepsToItself) is None, "a **options not passed on takes any key"
