"""`ActivationCache`: the rows of one cache folder, read without a lock, appended under it (see
`calm.cache` for the folder's layout and crash safety)."""

from __future__ import annotations

import errno
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock

from calm.cache.folder import (
    DATA_FILE,
    INDEX_FILE,
    LOCK_FILE,
    META_FILE,
    cache_key,
    delete_fix,
    settle,
    unwritable,
    write_meta,
)
from calm.cache.index import (
    FORMAT_VERSION,
    MISSING,
    RowFacts,
    RowInputs,
    format_line,
    parse_line,
    stale_reason,
)
from calm.cache.rows import STORED_DTYPE, RowView
from calm.errors import CacheError
from calm.storage.file_digests import FileDigests

_LABEL_PATTERN = re.compile(r"[A-Za-z0-9_.]+(?:-[A-Za-z0-9_.]+)*")
_FORBIDDEN_ID_CHARS = ("\t", "\n", "\r")
_SHOWN = 5


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


class ActivationCache:
    """Per-clip head activations (n_heads, head_dim) in fp16, safe against crashes and concurrent writers."""

    def __init__(
        self,
        folder: Path,
        key: str,
        n_heads: int,
        head_dim: int,
        head_names: list[str] | None,
        meta_format: int = FORMAT_VERSION,
        digests: FileDigests | None = None,
    ) -> None:
        self.path = folder
        self.key = key
        self.n_heads = n_heads
        self.head_dim = head_dim
        self.head_names = head_names
        self._row_bytes = n_heads * head_dim * STORED_DTYPE.itemsize
        self._data_path = folder / DATA_FILE
        self._index_path = folder / INDEX_FILE
        self._lock = FileLock(str(folder / LOCK_FILE))
        self._rows: dict[str, int] = {}  # clip id -> its newest row
        self._inputs: dict[str, RowInputs | None] = {}  # clip id -> what its newest row was computed from
        self._facts: dict[str, RowFacts | None] = {}  # clip id -> how its newest row was computed
        self._lines = 0  # rows (index lines) so far, every clip's older rows included
        self._index_offset = 0
        self._meta_format = meta_format
        # content digests of the clips' files, remembered next to the cache folders (in paths.cache_dir);
        # a job passes the one store it also keys the weights and the clip table with
        self.digests = digests if digests is not None else FileDigests(folder.parent)

    @classmethod
    def open(
        cls,
        root: Path,
        key_fields: dict,
        n_heads: int,
        head_dim: int,
        label: str = "",
        head_names: list[str] | None = None,
        digests: FileDigests | None = None,
    ) -> ActivationCache:
        """Create or open the cache for ``key_fields`` in ``root/<label>-<key[:16]>``."""
        if label and not _LABEL_PATTERN.fullmatch(label):
            raise ValueError(f"cache label {label!r} must be letters, digits, '_', '.' or inner '-'")
        short = cache_key(key_fields)[:16]
        folder = Path(root) / (f"{label}-{short}" if label else short)
        return cls.open_path(folder, key_fields, n_heads, head_dim, head_names, digests)

    @classmethod
    def open_path(
        cls,
        folder: Path,
        key_fields: dict,
        n_heads: int,
        head_dim: int,
        head_names: list[str] | None = None,
        digests: FileDigests | None = None,
    ) -> ActivationCache:
        """Create or open the cache in ``folder``; raise CacheError if it was written under other settings."""
        if n_heads < 1 or head_dim < 1:
            raise ValueError(f"n_heads and head_dim must be positive, got {n_heads} and {head_dim}")
        if head_names is not None and len(head_names) != n_heads:
            raise ValueError(f"{len(head_names)} head names given for {n_heads} heads")
        folder = Path(folder)
        names, meta_format = settle(folder, key_fields, n_heads, head_dim, head_names)
        cache = cls(folder, cache_key(key_fields), n_heads, head_dim, names, meta_format, digests)
        cache._refresh()
        return cache

    def _corrupt(self, problem: str) -> CacheError:
        return CacheError(f"cache folder {self.path} is corrupt: {problem}", delete_fix(self.path))

    def _refresh(self) -> None:
        """Read index lines appended since the last call; a line without its newline is not yet written."""
        try:
            with open(self._index_path, "rb") as f:
                f.seek(self._index_offset)
                new = f.read()
        except FileNotFoundError:
            new = b""
        end = new.rfind(b"\n") + 1
        if end == 0:
            return
        for line in new[: end - 1].decode("utf-8").split("\n"):
            try:
                clip_id, inputs, facts = parse_line(line, self._lines)
            except ValueError as err:
                raise self._corrupt(str(err)) from err
            self._rows[clip_id] = self._lines
            self._inputs[clip_id] = inputs
            self._facts[clip_id] = facts
            self._lines += 1
        self._index_offset += end

    def cached_ids(self) -> set[str]:
        """Ids of all clips whose rows are stored."""
        self._refresh()
        return set(self._rows)

    def missing(self, clip_ids: Sequence[str]) -> list[str]:
        """The ids in ``clip_ids`` that are not cached, in the given order."""
        self._refresh()
        return [clip_id for clip_id in clip_ids if clip_id not in self._rows]

    def outdated(self, wanted: Mapping[str, RowInputs]) -> dict[str, str]:
        """The clips whose rows must be computed for these inputs, each with why: 'missing' (no row),
        or `calm.cache.index.stale_reason`'s 'audio', 'prompt' or 'unknown' (a row of other inputs)."""
        self._refresh()
        todo = {}
        for clip_id, inputs in wanted.items():
            reason = MISSING if clip_id not in self._rows else stale_reason(self._inputs[clip_id], inputs)
            if reason is not None:
                todo[clip_id] = reason
        return todo

    def facts(self, clip_ids: Sequence[str]) -> dict[str, RowFacts]:
        """How the rows of `clip_ids` were computed (batch size, clip duration), for the clips whose row
        recorded it (rows of older formats did not)."""
        self._refresh()
        return {cid: facts for cid in clip_ids if (facts := self._facts.get(cid)) is not None}

    def __len__(self) -> int:
        self._refresh()
        return len(self._rows)

    def __contains__(self, clip_id: object) -> bool:
        self._refresh()
        return clip_id in self._rows

    def _validate_ids(self, clip_ids: Sequence[str]) -> list[str]:
        if isinstance(clip_ids, str):
            raise ValueError("clip_ids must be a sequence of ids, not one string")
        ids = list(clip_ids)
        for clip_id in ids:
            if not isinstance(clip_id, str) or not clip_id:
                raise ValueError(f"clip ids must be non-empty strings, got {clip_id!r}")
            if any(c in clip_id for c in _FORBIDDEN_ID_CHARS):
                raise ValueError(f"clip id {clip_id!r} contains a tab or line break")
        if len(set(ids)) != len(ids):
            dupes = [clip_id for clip_id, count in Counter(ids).items() if count > 1]
            raise ValueError(f"clip ids repeat within one batch: {dupes[:_SHOWN]}")
        return ids

    def _to_fp16(self, ids: list[str], rows: Any) -> np.ndarray:
        if isinstance(rows, torch.Tensor):
            if not rows.is_floating_point():
                raise ValueError(f"rows must be floating point, got {rows.dtype}")
            tensor = rows.detach().cpu()
            if tensor.dtype not in (torch.float16, torch.float32, torch.float64):
                tensor = tensor.float()
            array = tensor.numpy()
        else:
            array = np.asarray(rows)
            if not np.issubdtype(array.dtype, np.floating):
                raise ValueError(f"rows must be floating point, got {array.dtype}")
        expected = (len(ids), self.n_heads, self.head_dim)
        if array.shape != expected:
            raise ValueError(f"rows have shape {tuple(array.shape)}, expected {expected} (clips, n_heads, head_dim)")
        finite_in = np.isfinite(array).all(axis=(1, 2))
        with np.errstate(over="ignore"):
            out = np.ascontiguousarray(array.astype(STORED_DTYPE))
        finite_out = np.isfinite(out).all(axis=(1, 2))
        if not finite_out.all():
            bad = [ids[i] for i in np.flatnonzero(~finite_out)]
            overflow = bool(finite_in[~finite_out].all())
            what = "values beyond the float16 range (|x| > 65504)" if overflow else "NaN or infinite values"
            raise CacheError(
                f"activations of {len(bad)} clip(s) have {what}, e.g. {bad[:_SHOWN]}; nothing was cached",
                "run the backbone in bfloat16 or float32 instead of float16, and check those clips' audio",
            )
        return out

    def write(
        self,
        clip_ids: Sequence[str],
        rows: np.ndarray | torch.Tensor,
        inputs: Sequence[RowInputs | None] | None = None,
        facts: Sequence[RowFacts | None] | None = None,
    ) -> int:
        """Store rows (B, n_heads, head_dim) for ``clip_ids``, computed from ``inputs`` (one per clip; None:
        unknown) as ``facts`` say (one per clip; None: not recorded). A clip already cached is skipped,
        unless its inputs are given and its row was computed from others: then the new row is appended
        and wins. Returns rows written."""
        ids = self._validate_ids(clip_ids)
        for given, what in ((inputs, "row inputs"), (facts, "row facts")):
            if given is not None and len(given) != len(ids):
                raise ValueError(f"{len(given)} {what} given for {len(ids)} clips")
        wanted = list(inputs) if inputs is not None else [None] * len(ids)
        how = list(facts) if facts is not None else [None] * len(ids)
        data = self._to_fp16(ids, rows)
        try:
            with self._lock:
                self._refresh()
                self._drop_torn_index_tail()
                keep = [i for i, clip_id in enumerate(ids) if self._needs_row(clip_id, wanted[i])]
                if not keep:
                    return 0
                self._upgrade_meta()
                first_row = self._lines
                self._append_rows(data[keep].tobytes(), first_row)
                lines = "".join(format_line(ids[i], first_row + n, wanted[i], how[i]) for n, i in enumerate(keep))
                self._append_index(lines.encode("utf-8"))
                self._refresh()
        except OSError as err:
            raise unwritable(self.path, err) from err
        return len(keep)

    def ensure_writable(self) -> None:
        """Raise CacheError now, before a model loads, if rows could not be written into this folder."""
        try:
            if not os.access(self.path, os.W_OK):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self.path))
            with self._lock:
                for path in (self._data_path, self._index_path, self.path / META_FILE):
                    if path.exists():
                        os.close(os.open(path, os.O_WRONLY))  # opened for writing, not changed
        except OSError as err:
            raise unwritable(self.path, err) from err

    def _needs_row(self, clip_id: str, inputs: RowInputs | None) -> bool:
        if clip_id not in self._rows:
            return True
        return inputs is not None and stale_reason(self._inputs[clip_id], inputs) is not None

    def _upgrade_meta(self) -> None:
        """Mark a folder of an older format as the current one before its first current line (older calm
        then refuses it instead of misreading the line)."""
        if self._meta_format != FORMAT_VERSION:
            write_meta(self.path / META_FILE, FORMAT_VERSION, self.n_heads, self.head_dim, self.head_names)
            self._meta_format = FORMAT_VERSION

    def _drop_torn_index_tail(self) -> None:
        if self._index_path.exists() and self._index_path.stat().st_size > self._index_offset:
            os.truncate(self._index_path, self._index_offset)

    def _append_rows(self, payload: bytes, first_row: int) -> None:
        offset = first_row * self._row_bytes
        fd = os.open(self._data_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size < offset:
                raise self._corrupt(f"{DATA_FILE} holds {size} bytes but the index needs {offset}")
            if size > offset:
                os.ftruncate(fd, offset)
            _write_all(fd, payload, offset)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _append_index(self, payload: bytes) -> None:
        fd = os.open(self._index_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)

    def rows(self, clip_ids: Sequence[str]) -> RowView:
        """A memory-mapped, read-only view of the rows of `clip_ids` (positions follow the list); clips
        without a row may be listed and fail only when read. Nothing is loaded until indexed."""
        self._refresh()
        positions = np.fromiter((self._rows.get(c, -1) for c in clip_ids), dtype=np.int64, count=len(clip_ids))
        n_rows = self._lines
        size = self._data_path.stat().st_size if self._data_path.exists() else 0
        if size < n_rows * self._row_bytes:
            raise self._corrupt(f"{DATA_FILE} holds {size} bytes but the index needs {n_rows * self._row_bytes}")
        return RowView(self._data_path, positions, list(clip_ids), n_rows, self.n_heads, self.head_dim)

    def read(self, clip_ids: Sequence[str]) -> torch.Tensor:
        """Rows of ``clip_ids`` in the given order, as float32 (n, n_heads, head_dim)."""
        self._refresh()
        absent = [clip_id for clip_id in clip_ids if clip_id not in self._rows]
        if absent:
            raise CacheError(
                f"{len(absent)} clip(s) have no cached activations in {self.path}, e.g. {absent[:_SHOWN]}",
                "run activation extraction for these clips (it fills only the missing ones)",
            )
        if not clip_ids:
            return torch.empty((0, self.n_heads, self.head_dim), dtype=torch.float32)
        positions = np.fromiter((self._rows[c] for c in clip_ids), dtype=np.int64, count=len(clip_ids))
        n_rows = int(positions.max()) + 1
        size = self._data_path.stat().st_size if self._data_path.exists() else 0
        if size < n_rows * self._row_bytes:
            raise self._corrupt(f"{DATA_FILE} holds {size} bytes but the index needs {n_rows * self._row_bytes}")
        table = np.memmap(
            self._data_path,
            dtype=STORED_DTYPE,
            mode="r",
            shape=(n_rows, self.n_heads, self.head_dim),
        )
        selected = np.asarray(table[positions], dtype=np.float32)
        del table
        return torch.from_numpy(selected)
