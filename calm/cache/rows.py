"""Rows read as needed: a read-only, memory-mapped view of `rows.f16` for a list of clips.

A job never holds the whole table: an episode gathers its support and query rows (fp16 on disk,
upcast to float32 for that episode only), and the paper grid reads the test set a chunk at a time.
Indexing follows the clip list given to `ActivationCache.rows` (positions in the clip table), so
protocols' row indices work unchanged; a clip without a cached row fails when it is read, naming it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from calm.errors import CacheError

STORED_DTYPE = np.dtype("<f2")


class RowView:
    """Rows of some clips, read from disk on indexing: `view[i]`, `view[a:b]`, `view[index_array]`
    give float32 tensors (n, n_heads, head_dim); `len(view)` is the number of clips."""

    def __init__(self, data_path: Path, positions: np.ndarray, clip_ids: list[str], n_rows: int,
                 n_heads: int, head_dim: int) -> None:
        self.data_path, self.positions, self.clip_ids = data_path, positions, clip_ids
        self.n_heads, self.head_dim = n_heads, head_dim
        self._table = (np.memmap(data_path, dtype=STORED_DTYPE, mode="r", shape=(n_rows, n_heads, head_dim))
                       if n_rows else None)

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self), self.n_heads, self.head_dim)

    def __getitem__(self, index: int | slice | np.ndarray | torch.Tensor | list[int]) -> torch.Tensor:
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        picked = self.positions[index]
        scalar = np.ndim(picked) == 0
        picked = np.atleast_1d(picked)
        if (picked < 0).any():
            chosen = np.arange(len(self))[index]
            absent = [self.clip_ids[i] for i in np.atleast_1d(chosen)[picked < 0][:5]]
            raise CacheError(f"clips {absent} have no cached row", "extract them first (run the job again)")
        if self._table is None:
            return torch.empty((0, self.n_heads, self.head_dim), dtype=torch.float32)
        rows = torch.from_numpy(np.asarray(self._table[picked], dtype=np.float32))
        return rows[0] if scalar else rows

    def subset(self, index: np.ndarray | list[int]) -> RowView:
        """A view of some of these clips, in the given order (e.g. a paper split's test clips)."""
        index = np.asarray(index, dtype=np.int64)
        view = RowView.__new__(RowView)
        view.data_path, view.n_heads, view.head_dim, view._table = (self.data_path, self.n_heads, self.head_dim,
                                                                    self._table)
        view.positions = self.positions[index]
        view.clip_ids = [self.clip_ids[i] for i in index]
        return view
