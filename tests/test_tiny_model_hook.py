"""A backbone config names its tiny random model (`tiny_model`, test scaffolding in calm.testing); the
product builds it through that name only and says clearly when the name or the folder is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from calm.backbones.base import tiny_weights
from calm.backbones.qwen2_audio import Qwen2AudioBackbone
from calm.errors import ConfigError
from calm.testing import tiny_models
from tests.cli import family_backbone


class _Recorded:
    def __init__(self) -> None:
        self.calls: list[tuple[Path, int]] = []

    def ensure(self, dest: Path, seed: int) -> Path:
        self.calls.append((dest, seed))
        (dest / "config.json").parent.mkdir(parents=True, exist_ok=True)
        return dest


RECORDED = _Recorded()


def test_the_named_model_is_built_at_the_backbone_path_with_its_seed(tmp_path: Path) -> None:
    built = tiny_weights(str(tmp_path / "m"), f"{__name__}.RECORDED", 3)
    assert built == str(tmp_path / "m") and RECORDED.calls[-1] == (tmp_path / "m", 3)


@pytest.mark.parametrize("name", ["calm.testing.tiny_models.NO_SUCH_MODEL", "no_such_package.MODEL", "MODEL"])
def test_a_wrong_name_is_a_config_error_naming_the_models(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="calm.testing.tiny_models"):
        family_backbone(Qwen2AudioBackbone, path=str(tmp_path), tiny_model=name)


def test_a_tiny_model_needs_a_folder() -> None:
    with pytest.raises(ConfigError, match="backbone.path"):
        family_backbone(Qwen2AudioBackbone, tiny_model="calm.testing.tiny_models.QWEN2_AUDIO")


def test_every_tiny_backbone_config_names_a_model_of_calm_testing() -> None:
    from omegaconf import OmegaConf

    from calm.config.builder import CONFIG_DIR

    configs = sorted((CONFIG_DIR / "backbone").glob("tiny_*.yaml"))
    assert configs
    for path in configs:
        name = OmegaConf.load(path)["tiny_model"]
        assert isinstance(getattr(tiny_models, name.rpartition(".")[2]), tiny_models.TinyModel), path.name
