"""After `prepare` nothing reads the run's config: the prepared job holds built objects and typed settings
only, and no module of calm reaches for a raw config through the job."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import DictConfig, ListConfig

from calm.protocols import EpisodicProtocol, PaperProtocol
from calm.reports import EpisodicMethods, PaperGrid
from calm.run.job import PreparedJob, prepare
from tests.cli import REPO, compose_config, small_fsdd


def raw_configs(value: Any, path: str, seen: set[int], depth: int = 0) -> list[str]:
    """Where a DictConfig or ListConfig is reachable from `value`: dataclass fields, mappings, sequences
    and the attributes of objects (a backbone's, a protocol's, an estimator's, a report's)."""
    if isinstance(value, (DictConfig, ListConfig)):
        return [path]
    if (
        id(value) in seen
        or depth > 8
        or isinstance(
            value, (str, bytes, int, float, bool, type(None), torch.Tensor, torch.device, torch.dtype, Path, type)
        )
    ):
        return []
    seen.add(id(value))
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = enumerate(value)
    elif dataclasses.is_dataclass(value):
        items = ((f.name, getattr(value, f.name)) for f in dataclasses.fields(value))
    elif hasattr(value, "__dict__"):
        items = vars(value).items()
    else:
        return []
    return [hit for key, item in items for hit in raw_configs(item, f"{path}.{key}", seen, depth + 1)]


@pytest.fixture()
def data(tmp_path: Path, fsdd_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CALM_CACHE", str(tmp_path / "cache"))
    return small_fsdd(fsdd_root, tmp_path / "fsdd", indices=(0, 1, 10, 11))


@pytest.mark.parametrize(
    "overrides",
    [
        ["method=calm_vs_sav"],
        ["method=ablations", "protocol=paper", "method.estimators.calm.top_k=3"],
    ],
)
def test_a_prepared_job_holds_no_raw_config(overrides: list[str], data: Path, tmp_path: Path) -> None:
    cfg = compose_config(
        [
            "backbone=whisper_tiny",
            "logger=none",
            f"dataset.root={data}",
            "shots=1",
            "queries=1",
            "episodes=2",
            *overrides,
        ],
        tmp_path / "out",
    )
    job = prepare(cfg)
    assert "cfg" not in {f.name for f in dataclasses.fields(PreparedJob)}
    assert raw_configs(job, "job", set()) == []
    assert isinstance(job.reports[0], EpisodicMethods)
    if "protocol=paper" in overrides:  # the folds and seed come from the built protocol
        assert isinstance(job.protocol, PaperProtocol)
        grid = next(r for r in job.reports if isinstance(r, PaperGrid))
        assert (grid.settings.folds, grid.settings.cv_seed) == (job.protocol.folds, job.protocol.cv_seed)
    else:
        assert isinstance(job.protocol, EpisodicProtocol) and job.grids is None
        assert not any(isinstance(r, PaperGrid) for r in job.reports)
    assert job.devices.generation is None, "no report of these methods runs the backbone"


def test_no_module_reads_the_config_through_the_job() -> None:
    reads = [
        f"{path.relative_to(REPO)}:{n}"
        for path in sorted((REPO / "calm").rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\bjob\.cfg\b", line)
    ]
    assert reads == []
