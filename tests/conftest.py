"""Shared fixtures: the real offline assets (read in place), W&B kept offline and local."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported: the hub is never reached in tests
os.environ.setdefault("WANDB_MODE", "offline")

from calm.config.assets import assets_dir  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _offline_wandb(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))


def _require(path: Path) -> Path:
    if not path.exists():
        if os.environ.get("CALM_REQUIRE_ASSETS") == "1":
            pytest.fail(f"real assets missing at {path} (CALM_REQUIRE_ASSETS=1); set CALM_ASSETS")
        pytest.skip(f"real assets not found at {path}; set CALM_ASSETS")
    return path


@pytest.fixture(scope="session")
def assets() -> Path:
    return _require(assets_dir())


@pytest.fixture(scope="session")
def whisper_dir(assets: Path) -> Path:
    return _require(assets / "whisper-tiny.en")


@pytest.fixture(scope="session")
def fsdd_root(assets: Path) -> Path:
    return _require(assets / "fsdd")


@pytest.fixture(scope="session")
def whisper(whisper_dir: Path):
    """One loaded Whisper tiny.en for the session (loading takes a second; tests only read it)."""
    from calm.backbones.whisper import WhisperBackbone

    backbone = WhisperBackbone(path=str(whisper_dir))
    backbone.load()
    return backbone
