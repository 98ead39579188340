"""Rows read as needed: a view of the cache that reads only the rows it is indexed with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from calm.cache import ActivationCache
from calm.errors import CacheError


def test_a_row_view_reads_the_rows_it_is_indexed_with(tmp_path: Path) -> None:
    cache = ActivationCache.open_path(tmp_path / "c", {"test": 1}, 4, 3)
    rows = np.random.default_rng(0).standard_normal((10, 4, 3)).astype(np.float32)
    ids = [f"clip{i}" for i in range(10)]
    cache.write(ids[::-1], rows[::-1])  # stored in another order than the table lists them
    view, whole = cache.rows([*ids, "not_cached"]), cache.read(ids)
    assert len(view) == 11 and view.shape == (11, 4, 3)
    picks = np.array([3, 1, 2, 9, 0, 0])
    assert torch.equal(view[picks], whole[picks]) and torch.equal(view[torch.tensor(picks)], whole[picks])
    assert torch.equal(view[2:7], whole[2:7]) and torch.equal(view[4], whole[4])
    assert torch.equal(view.subset([5, 6])[0:2], whole[5:7])
    with pytest.raises(CacheError, match="not_cached"):
        view[[0, 10]]
