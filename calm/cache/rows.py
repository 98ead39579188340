"""Rows read as needed: a read-only view of `rows.f16` for a list of clips.

A job never holds the whole table: an episode gathers its support and query rows (fp16 on disk,
upcast to float32 for that episode only), and the paper grid reads the test set a chunk at a time.
Indexing follows the clip list given to `ActivationCache.rows` (positions in the clip table), so
protocols' row indices work unchanged; a clip without a cached row fails when it is read, naming it.

Rows are read with positioned reads (runs of consecutive rows in one read), not a memory map: mapped
file pages count towards the process's resident memory, so a memory map touched by 100 random episodes
would make a job's RSS grow with the cache file; read into a buffer, only the rows at hand are held
(the OS page cache still serves repeated reads).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from calm.errors import CacheError

STORED_DTYPE = np.dtype("<f2")
READ_ROWS = 64  # rows per read at most: a read buffer of 16 MiB for 1,024 heads x 128


class RowView:
    """Rows of some clips, read from disk on indexing: `view[i]`, `view[a:b]`, `view[index_array]`
    give float32 tensors (n, n_heads, head_dim); `len(view)` is the number of clips."""

    def __init__(
        self, data_path: Path, positions: np.ndarray, clip_ids: list[str], n_rows: int, n_heads: int, head_dim: int
    ) -> None:
        self.data_path, self.positions, self.clip_ids = data_path, positions, clip_ids
        self.n_heads, self.head_dim, self.n_rows = n_heads, head_dim, n_rows

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self), self.n_heads, self.head_dim)

    def __getitem__(self, index: int | slice | np.ndarray | torch.Tensor | list[int]) -> torch.Tensor:
        return self.gather(index)

    def gather(
        self, index: int | slice | np.ndarray | torch.Tensor | list[int], dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """The rows at `index`, as `dtype` (float16 keeps them as stored: half the memory, e.g. for a
        5,000-clip support set that is upcast a chunk at a time later)."""
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        picked = self.positions[index]
        scalar = np.ndim(picked) == 0
        picked = np.atleast_1d(picked)
        if (picked < 0).any():
            chosen = np.atleast_1d(np.arange(len(self))[index])
            absent = [self.clip_ids[i] for i in chosen[picked < 0][:5]]
            raise CacheError(f"clips {absent} have no cached row", "extract them first (run the job again)")
        rows = torch.from_numpy(self._read(picked)).to(dtype)
        return rows[0] if scalar else rows

    def _read(self, positions: np.ndarray) -> np.ndarray:
        """fp16 rows at `positions` (any order), reading each run of consecutive rows at once."""
        out = np.empty((len(positions), self.n_heads, self.head_dim), dtype=STORED_DTYPE)
        if not len(positions):
            return out
        row_bytes = self.n_heads * self.head_dim * STORED_DTYPE.itemsize
        order = np.argsort(positions, kind="stable")
        sorted_rows = positions[order]
        breaks = np.flatnonzero(np.diff(sorted_rows) != 1) + 1
        runs = [
            piece
            for run in np.split(np.arange(len(order)), breaks)
            for piece in np.split(run, range(READ_ROWS, len(run), READ_ROWS))
        ]  # bounded reads
        with open(self.data_path, "rb", buffering=0) as handle:
            for run in runs:
                first = int(sorted_rows[run[0]])
                data = os.pread(handle.fileno(), row_bytes * len(run), first * row_bytes)
                if len(data) != row_bytes * len(run):
                    raise CacheError(
                        f"{self.data_path} ends before row {first + len(run) - 1}",
                        "delete the cache folder; its rows are recomputed on the next run",
                    )
                out[order[run]] = np.frombuffer(data, dtype=STORED_DTYPE).reshape(len(run), self.n_heads, self.head_dim)
        return out

    def subset(self, index: np.ndarray | list[int]) -> RowView:
        """A view of some of these clips, in the given order (e.g. a paper split's test clips)."""
        index = np.asarray(index, dtype=np.int64)
        return RowView(
            self.data_path,
            self.positions[index],
            [self.clip_ids[i] for i in index],
            self.n_rows,
            self.n_heads,
            self.head_dim,
        )
