"""Activation store: one fp16 row of shape (n_heads, head_dim) per clip, keyed by what changes the numbers.

On-disk layout of one cache folder (``<root>/<label>-<key[:16]>`` or ``<root>/<key[:16]>``):

- ``key.json``: ``{"key": <sha256>, "fields": {...}}``, the settings the rows depend on.
- ``meta.json``: format version, ``n_heads``, ``head_dim``, ``dtype`` (always float16), ``head_names``.
- ``rows.f16``: the rows, raw little-endian float16, C order, one row after another.
- ``index.tsv``: one line ``<clip_id>\\t<row>\\n`` per row; only rows named here exist.
- ``cache.lock``: inter-process lock held while writing.

A write appends (and fsyncs) the rows first and the index lines second, under the lock, after
cutting off whatever an interrupted writer left beyond the indexed rows or after the last complete
index line. A crash at any point therefore loses at most the batch in flight, and readers, which
only trust complete index lines, never see a partial row.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock

from calm.atomic_write import write_json_atomic
from calm.digests import canonical_json, digest
from calm.errors import CacheError

FORMAT_VERSION = 1
KEY_FILE = "key.json"
META_FILE = "meta.json"
DATA_FILE = "rows.f16"
INDEX_FILE = "index.tsv"
LOCK_FILE = "cache.lock"

_STORED_DTYPE = np.dtype("<f2")
_LABEL_PATTERN = re.compile(r"[A-Za-z0-9_.]+(?:-[A-Za-z0-9_.]+)*")
_FORBIDDEN_ID_CHARS = ("\t", "\n", "\r")
_SHOWN = 5


def cache_key(fields: dict) -> str:
    """SHA-256 (hex) of the canonical JSON of the settings that change the cached numbers."""
    return digest(fields)


def _delete_fix(folder: Path) -> str:
    return (
        f"delete the folder {folder} (its activations are recomputed on the next run), "
        "or point paths.cache_dir elsewhere"
    )


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _flatten(fields: dict, prefix: str = "") -> dict:
    """Nested key fields as dotted paths, so a mismatch names the exact setting that differs."""
    flat: dict = {}
    for name, value in fields.items():
        path = f"{prefix}{name}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def _read_json(path: Path) -> dict:
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CacheError(f"cannot read {path}: {e}", _delete_fix(path.parent)) from e
    if not isinstance(payload, dict):
        raise CacheError(f"{path} does not hold a JSON object", _delete_fix(path.parent))
    return payload


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


class ActivationCache:
    """Per-clip head activations (n_heads, head_dim) in fp16, safe against crashes and concurrent writers."""

    def __init__(
        self, folder: Path, key: str, n_heads: int, head_dim: int, head_names: list[str] | None
    ) -> None:
        self.path = folder
        self.key = key
        self.n_heads = n_heads
        self.head_dim = head_dim
        self.head_names = head_names
        self._row_bytes = n_heads * head_dim * _STORED_DTYPE.itemsize
        self._data_path = folder / DATA_FILE
        self._index_path = folder / INDEX_FILE
        self._lock = FileLock(str(folder / LOCK_FILE))
        self._rows: dict[str, int] = {}
        self._index_offset = 0

    @classmethod
    def open(
        cls,
        root: Path,
        key_fields: dict,
        n_heads: int,
        head_dim: int,
        label: str = "",
        head_names: list[str] | None = None,
    ) -> ActivationCache:
        """Create or open the cache for ``key_fields`` in ``root/<label>-<key[:16]>``."""
        if label and not _LABEL_PATTERN.fullmatch(label):
            raise ValueError(
                f"cache label {label!r} must be letters, digits, '_', '.' or inner '-'"
            )
        short = cache_key(key_fields)[:16]
        folder = Path(root) / (f"{label}-{short}" if label else short)
        return cls.open_path(folder, key_fields, n_heads, head_dim, head_names)

    @classmethod
    def open_path(
        cls,
        folder: Path,
        key_fields: dict,
        n_heads: int,
        head_dim: int,
        head_names: list[str] | None = None,
    ) -> ActivationCache:
        """Create or open the cache in ``folder``; raise CacheError if it was written under other settings."""
        if n_heads < 1 or head_dim < 1:
            raise ValueError(f"n_heads and head_dim must be positive, got {n_heads} and {head_dim}")
        if head_names is not None and len(head_names) != n_heads:
            raise ValueError(f"{len(head_names)} head names given for {n_heads} heads")
        folder = Path(folder)
        key = cache_key(key_fields)
        folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder / LOCK_FILE)):
            cls._check_or_write_key(folder, key, key_fields)
            names = cls._check_or_write_meta(folder, n_heads, head_dim, head_names)
        cache = cls(folder, key, n_heads, head_dim, names)
        cache._refresh()
        return cache

    @staticmethod
    def _check_or_write_key(folder: Path, key: str, key_fields: dict) -> None:
        key_path = folder / KEY_FILE
        if not key_path.exists():
            strays = [n for n in (META_FILE, DATA_FILE, INDEX_FILE) if (folder / n).exists()]
            if strays:
                raise CacheError(
                    f"cache folder {folder} holds {', '.join(strays)} but no {KEY_FILE}, "
                    "so the settings its activations came from are unknown",
                    _delete_fix(folder),
                )
            write_json_atomic(
                key_path, {"key": key, "fields": json.loads(canonical_json(key_fields))}, sort_keys=True
            )
            return
        stored = _read_json(key_path)
        if stored.get("key") == key:
            return
        requested = _flatten(json.loads(canonical_json(key_fields)))
        cached = _flatten(stored.get("fields")) if isinstance(stored.get("fields"), dict) else {}
        diffs = [
            f"{name}: cached {_short(cached.get(name))}, requested {_short(requested.get(name))}"
            for name in sorted(set(cached) | set(requested))
            if cached.get(name) != requested.get(name)
        ]
        detail = "; ".join(diffs) if diffs else "the stored key does not match its own fields"
        raise CacheError(
            f"cache folder {folder} was written under other settings ({detail})",
            _delete_fix(folder),
        )

    @staticmethod
    def _check_or_write_meta(
        folder: Path, n_heads: int, head_dim: int, head_names: list[str] | None
    ) -> list[str] | None:
        meta_path = folder / META_FILE
        wanted = {
            "format": FORMAT_VERSION,
            "n_heads": n_heads,
            "head_dim": head_dim,
            "dtype": "float16",
            "head_names": head_names,
        }
        if not meta_path.exists():
            write_json_atomic(meta_path, wanted, sort_keys=True)
            return head_names
        stored = _read_json(meta_path)
        diffs = [
            f"{name}: cached {_short(stored.get(name))}, requested {_short(wanted[name])}"
            for name in ("format", "n_heads", "head_dim", "dtype")
            if stored.get(name) != wanted[name]
        ]
        stored_names = stored.get("head_names")
        if head_names is not None and stored_names is not None and stored_names != head_names:
            diffs.append(
                f"head_names: cached {_short(stored_names)}, requested {_short(head_names)}"
            )
        if diffs:
            raise CacheError(
                f"cache folder {folder} holds rows of another shape or format ({'; '.join(diffs)})",
                _delete_fix(folder),
            )
        if stored_names is None and head_names is not None:
            write_json_atomic(meta_path, wanted, sort_keys=True)
            return head_names
        return stored_names

    def _corrupt(self, problem: str) -> CacheError:
        return CacheError(f"cache folder {self.path} is corrupt: {problem}", _delete_fix(self.path))

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
            clip_id, sep, row_text = line.partition("\t")
            expected = len(self._rows)
            if not sep or not clip_id or row_text != str(expected):
                raise self._corrupt(
                    f"index line {expected + 1} is {line!r}, expected '<clip_id>\\t{expected}'"
                )
            if clip_id in self._rows:
                raise self._corrupt(f"clip {clip_id!r} appears twice in the index")
            self._rows[clip_id] = expected
        self._index_offset += end

    def cached_ids(self) -> set[str]:
        """Ids of all clips whose rows are stored."""
        self._refresh()
        return set(self._rows)

    def missing(self, clip_ids: Sequence[str]) -> list[str]:
        """The ids in ``clip_ids`` that are not cached, in the given order."""
        self._refresh()
        return [clip_id for clip_id in clip_ids if clip_id not in self._rows]

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
            raise ValueError(
                f"rows have shape {tuple(array.shape)}, expected {expected} (clips, n_heads, head_dim)"
            )
        finite_in = np.isfinite(array).all(axis=(1, 2))
        with np.errstate(over="ignore"):
            out = np.ascontiguousarray(array.astype(_STORED_DTYPE))
        finite_out = np.isfinite(out).all(axis=(1, 2))
        if not finite_out.all():
            bad = [ids[i] for i in np.flatnonzero(~finite_out)]
            overflow = bool(finite_in[~finite_out].all())
            what = (
                "values beyond the float16 range (|x| > 65504)"
                if overflow
                else "NaN or infinite values"
            )
            raise CacheError(
                f"activations of {len(bad)} clip(s) have {what}, e.g. {bad[:_SHOWN]}; nothing was cached",
                "run the backbone in bfloat16 or float32 instead of float16, and check those clips' audio",
            )
        return out

    def write(self, clip_ids: Sequence[str], rows: np.ndarray | torch.Tensor) -> int:
        """Store rows (B, n_heads, head_dim) for ``clip_ids``; ids already cached are skipped. Returns rows written."""
        ids = self._validate_ids(clip_ids)
        data = self._to_fp16(ids, rows)
        with self._lock:
            self._refresh()
            self._drop_torn_index_tail()
            keep = [i for i, clip_id in enumerate(ids) if clip_id not in self._rows]
            if not keep:
                return 0
            first_row = len(self._rows)
            self._append_rows(data[keep].tobytes(), first_row)
            lines = "".join(f"{ids[i]}\t{first_row + n}\n" for n, i in enumerate(keep))
            self._append_index(lines.encode("utf-8"))
            self._refresh()
        return len(keep)

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
        positions = np.fromiter(
            (self._rows[c] for c in clip_ids), dtype=np.int64, count=len(clip_ids)
        )
        n_rows = int(positions.max()) + 1
        size = self._data_path.stat().st_size if self._data_path.exists() else 0
        if size < n_rows * self._row_bytes:
            raise self._corrupt(
                f"{DATA_FILE} holds {size} bytes but the index needs {n_rows * self._row_bytes}"
            )
        table = np.memmap(
            self._data_path,
            dtype=_STORED_DTYPE,
            mode="r",
            shape=(n_rows, self.n_heads, self.head_dim),
        )
        selected = np.asarray(table[positions], dtype=np.float32)
        del table
        return torch.from_numpy(selected)
