"""Read a job's activation cache from its files, as a test that ran `run.py` in a subprocess sees it."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from calm.cache import INDEX_FILE, ActivationCache


def index_lines(cache_root: Path) -> int:
    """Rows committed to the (single) cache folder under `cache_root`, 0 before it exists."""
    files = list(cache_root.glob(f"*/{INDEX_FILE}"))
    return files[0].read_text().count("\n") if files else 0


def all_rows(cache_root: Path) -> tuple[list[str], torch.Tensor]:
    """(sorted clip ids, their rows) of the cache folder under `cache_root`."""
    folder = next(p for p in cache_root.iterdir() if p.is_dir())
    key = json.loads((folder / "key.json").read_text())["fields"]
    meta = json.loads((folder / "meta.json").read_text())
    cache = ActivationCache.open_path(folder, key, meta["n_heads"], meta["head_dim"])
    ids = sorted(cache.cached_ids())
    return ids, cache.read(ids)
