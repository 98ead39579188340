"""Lightning DDP on CPU (2 processes, gloo) through the real entry point fills the same cache as one process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from calm.cache import INDEX_FILE, ActivationCache
from tests.cli import run_cli, small_fsdd

# 20 clips (10 digits x 2 recordings, one in each split), 5 planned batches of 4: ranks take batches 0,2,4 and 1,3.
TINY = [
    "backbone=tiny_qwen2_audio",
    "shots=1",
    "queries=1",
    "episodes=2",
    "extract.batch_size=4",
    "trainer.accelerator=cpu",
]
DDP = ["trainer.devices=2", "trainer.strategy=ddp"]


def _cache(cache_root: Path) -> tuple[list[str], torch.Tensor, list[str]]:
    """Every cached clip id (sorted), their rows, and the raw index lines."""
    (folder,) = [p for p in cache_root.iterdir() if p.is_dir()]
    key = json.loads((folder / "key.json").read_text())["fields"]
    meta = json.loads((folder / "meta.json").read_text())
    cache = ActivationCache.open_path(folder, key, meta["n_heads"], meta["head_dim"])
    ids = sorted(cache.cached_ids())
    return ids, cache.read(ids), (folder / INDEX_FILE).read_text().splitlines()


# three processes (one run, then two DDP ranks): `make test-slow`
@pytest.mark.slow
def test_ddp_on_cpu_fills_the_cache_with_the_single_process_rows(tmp_path: Path, fsdd_root: Path) -> None:
    data = small_fsdd(fsdd_root, tmp_path / "fsdd", indices=(0, 10))
    args = [*TINY, f"backbone.path={tmp_path / 'tiny'}", f"dataset.root={data}"]

    single = run_cli([*args, "logger=none"], tmp_path / "single", tmp_path / "cache_single", timeout=180)
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = run_cli([*args, *DDP, "logger=wandb"], tmp_path / "ddp", tmp_path / "cache_ddp", timeout=180)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    output = ddp.stderr + ddp.stdout  # Lightning logs through Hydra's handlers when imported after Hydra starts
    assert "distributed_backend=gloo" in output and "Starting with 2 processes" in output

    ids, rows, index = _cache(tmp_path / "cache_single")
    ddp_ids, ddp_rows, ddp_index = _cache(tmp_path / "cache_ddp")
    assert len(ids) == 20 and ddp_ids == ids
    assert len(ddp_index) == 20, "each clip is written once, by the rank that owns its batch"
    # Batches are planned before they are dealt to ranks, so every row comes from the same batch: bit-equal.
    assert torch.equal(ddp_rows, rows)

    # Rank 0 alone evaluates, prints, logs to W&B and writes the results, with the totals of both ranks.
    results = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert results["cache"]["extracted"] == 20 and results["clips"] == 20
    assert results["results"] == json.loads((tmp_path / "single" / "results.json").read_text())["results"]
    assert ddp.stdout.count("Δ vs baseline") == 1, "only rank 0 prints the results table"
    assert len(list((tmp_path / "ddp" / "wandb").glob("offline-run-*"))) == 1, "only rank 0 starts a W&B run"
    rank1_log = (tmp_path / "ddp" / "train_ddp_process_1.log").read_text()
    assert "rank 1: extraction done; evaluation and results are left to rank 0" in rank1_log
