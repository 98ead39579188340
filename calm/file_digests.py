"""Content digests of files (weights, audio), computed once and remembered by path, size and mtime.

Keying cached work by a file's name or size misses a re-saved checkpoint or an overwritten clip; hashing
a 16 GB checkpoint or 100k clips on every run is too slow. A file's SHA-256 is computed the first time
it is asked for and stored in a small SQLite table keyed by (resolved path, size, mtime in ns); a file
whose size or modification time changes is hashed again. SQLite makes the store safe to share
between concurrent jobs; a store that cannot be written (read-only cache) still answers, it only
hashes again next time.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path

STORE_NAME = "file_digests.sqlite"
CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


class FileDigests:
    """Remembered content digests under `folder` (usually `paths.cache_dir`)."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.path = Path(folder) / STORE_NAME
        self._memo: dict[tuple[str, int, int], str] = {}

    def _connect(self) -> sqlite3.Connection | None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=60)
            db.execute("CREATE TABLE IF NOT EXISTS digests (path TEXT, size INTEGER, mtime_ns INTEGER, "
                       "sha256 TEXT, PRIMARY KEY (path, size, mtime_ns))")
            return db
        except (OSError, sqlite3.Error):
            return None

    def of(self, path: str | os.PathLike) -> str:
        """The SHA-256 of one file (see `of_many`)."""
        return self.of_many([path])[0]

    def of_many(self, paths: Iterable[str | os.PathLike]) -> list[str]:
        """SHA-256 of each file, hashing only files not seen before with their current size and mtime."""
        keys = []
        for p in paths:
            resolved = Path(p).resolve()
            stat = resolved.stat()
            keys.append((str(resolved), stat.st_size, stat.st_mtime_ns))
        todo = [k for k in dict.fromkeys(keys) if k not in self._memo]
        if todo:
            db = self._connect()
            if db is not None:
                with db:
                    for key in todo:
                        row = db.execute("SELECT sha256 FROM digests WHERE path=? AND size=? AND mtime_ns=?",
                                         key).fetchone()
                        if row is not None:
                            self._memo[key] = row[0]
            fresh = [(k, sha256_file(k[0])) for k in todo if k not in self._memo]
            self._memo.update(fresh)
            if db is not None and fresh:
                try:
                    with db:
                        db.executemany("INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?)",
                                       [(*k, d) for k, d in fresh])
                except sqlite3.Error:
                    pass  # a read-only store: the digests are still right, only not remembered
            if db is not None:
                db.close()
        return [self._memo[k] for k in keys]
