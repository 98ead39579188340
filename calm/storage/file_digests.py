"""Content digests of files (weights, audio), computed once and remembered by path, size and mtime.

Keying cached work by a file's name or size misses a re-saved checkpoint or an overwritten clip; hashing
a 16 GB checkpoint or 100k clips on every run is too slow. A file's SHA-256 is computed the first time
it is asked for and stored in a small SQLite table keyed by (resolved path, size, mtime in ns); a file
whose size or modification time changes is hashed again. A file modified less than `SETTLE_NS` before
it was hashed is not remembered: it could change again within its filesystem's timestamp granularity
without its mtime moving (git's "racy clean" case), so it is hashed again next time. SQLite makes the
store safe to share between concurrent jobs; a store that cannot be written (read-only cache) still
answers, it only hashes again next time, and a store that holds every digest asked for is never written.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

from calm.storage.digests import chunks_sha256
from calm.storage.file_store import open_file_table

STORE_NAME = "file_digests.sqlite"
CHUNK = 1 << 20
SETTLE_NS = 2_000_000_000  # 2 s: coarser than any local filesystem's mtime granularity (FAT's is 2 s)


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB chunks."""
    with open(path, "rb") as handle:
        return chunks_sha256(iter(lambda: handle.read(CHUNK), b""))


def _sha256_or_none(path: str, missing_ok: bool) -> str | None:
    try:
        return sha256_file(path)
    except OSError:
        if not missing_ok:
            raise
        return None


class FileDigests:
    """Remembered content digests under `folder` (usually `paths.cache_dir`); `folder=None` remembers
    them in this object only (for callers without a cache folder)."""

    def __init__(self, folder: str | os.PathLike | None) -> None:
        self.path = Path(folder) / STORE_NAME if folder is not None else None
        self._memo: dict[tuple[str, int, int], str] = {}

    def _connect(self) -> sqlite3.Connection | None:
        """The store, or None where it cannot be had: digests are then remembered in memory only."""
        return open_file_table(self.path, "digests", "sha256 TEXT")

    def of(self, path: str | os.PathLike) -> str:
        """The SHA-256 of one file (see `of_many`)."""
        return str(self.of_many([path])[0])

    def of_many(self, paths: Iterable[str | os.PathLike], missing_ok: bool = False) -> list[str | None]:
        """SHA-256 of each file, hashing only files not seen before with their current size and mtime
        (one store connection for all of them). `missing_ok`: None for a file that cannot be read,
        instead of the OSError."""
        keys: list[tuple[str, int, int] | None] = []
        for p in paths:
            try:
                resolved = Path(p).resolve()
                stat = resolved.stat()
            except OSError:
                if not missing_ok:
                    raise
                keys.append(None)
                continue
            keys.append((str(resolved), stat.st_size, stat.st_mtime_ns))
        todo = [k for k in dict.fromkeys(keys) if k is not None and k not in self._memo]
        hashed: dict[tuple[str, int, int], str | None] = {}
        if todo:
            db = self._connect()
            if db is not None:
                try:
                    for key in todo:
                        row = db.execute(
                            "SELECT sha256 FROM digests WHERE path=? AND size=? AND mtime_ns=?", key
                        ).fetchone()
                        if row is not None:
                            self._memo[key] = row[0]
                except sqlite3.Error:  # a store that cannot be read (busy past the timeout, damaged): hash
                    db.close()
                    db = None
            started = time.time_ns()
            hashed = {k: _sha256_or_none(k[0], missing_ok) for k in todo if k not in self._memo}
            fresh = [(k, d) for k, d in hashed.items() if d is not None and k[2] < started - SETTLE_NS]
            self._memo.update(fresh)
            if db is not None and fresh:  # only when something is new: a store that holds all is never written
                try:
                    with db:
                        db.executemany(
                            "INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?)", [(*k, d) for k, d in fresh]
                        )
                except sqlite3.Error:
                    pass  # a read-only store: the digests are still right, only not remembered
            if db is not None:
                db.close()
        return [None if k is None else self._memo[k] if k in self._memo else hashed[k] for k in keys]
