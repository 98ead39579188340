"""Shared fixtures: the real offline assets (read in place), W&B kept offline and local."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported: the hub is never reached in tests
os.environ.setdefault("WANDB_MODE", "offline")

from calm.config.assets import assets_dir  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# The files that start real runs (subprocesses, sweeps, Trainer passes), longest first. `make test` spreads
# whole files over its xdist workers in collection order: with these first and the many short files filling
# in behind them, the workers finish together instead of one running a long file alone at the end.
LONG_FILES = (
    "test_run_e2e.py",
    "test_provenance_records.py",
    "test_reproduce_tables.py",
    "test_figures_pipeline.py",
    "test_sweeps.py",
    "test_search.py",
    "test_pipeline_datasets.py",
    "test_pseudo_label.py",
    "test_sweep_preflight.py",
    "test_sigterm.py",
    "test_tracking.py",
    "test_hub_download.py",
    "test_extract_needed.py",
    "test_configs.py",
    "test_wandb_unreachable.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long files first (`LONG_FILES`); the order within a file, and of the other files, is kept."""
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FILES)))


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
