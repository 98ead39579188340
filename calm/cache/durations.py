"""Clip durations remembered next to the cache, so planning a resumed or widened extraction reads no
audio header twice.

Extraction plans its batches by duration (longest first) and checks every clip before the model loads.
For a 100k-clip table reading every header again on each resume costs minutes; a clip's duration and
the fact that it passed the checks are stored here, keyed by the file's resolved path, size and
modification time (a changed file is probed again), in an SQLite file that concurrent jobs can share.
A store that cannot be written (a read-only cache) still answers; it only remembers nothing new.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path

from calm.storage.file_store import open_file_table

STORE_NAME = "clip_durations.sqlite"
# Named after the checks its clips passed: "durations" held clips passed before the header pass read a
# file's last frames, so a FLAC cut short that it let through is checked again, not served from here.
TABLE = "passed_tail_check"
FileKey = tuple[str, int, int]


def file_key(path: str | os.PathLike) -> FileKey | None:
    """(resolved path, size, mtime in ns) of a file; None when it cannot be read."""
    try:
        resolved = Path(path).resolve()
        stat = resolved.stat()
    except OSError:
        return None
    return str(resolved), stat.st_size, stat.st_mtime_ns


class DurationStore:
    """Durations (seconds) of clips that passed the pre-model checks, under `folder` (`paths.cache_dir`)."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.path = Path(folder) / STORE_NAME

    def _connect(self) -> sqlite3.Connection | None:
        return open_file_table(self.path, TABLE, "seconds REAL")

    def known(self, keys: Sequence[FileKey]) -> dict[FileKey, float]:
        """The remembered durations among `keys`."""
        db = self._connect()
        if db is None or not keys:
            return {}
        found: dict[FileKey, float] = {}
        try:
            db.execute("CREATE TEMP TABLE wanted (path TEXT, size INTEGER, mtime_ns INTEGER)")
            db.executemany("INSERT INTO wanted VALUES (?, ?, ?)", keys)
            for path, size, mtime_ns, seconds in db.execute(
                f"SELECT d.path, d.size, d.mtime_ns, d.seconds FROM {TABLE} d JOIN wanted w "
                "ON d.path = w.path AND d.size = w.size AND d.mtime_ns = w.mtime_ns"
            ):
                found[(path, size, mtime_ns)] = seconds
        except sqlite3.Error:
            return {}
        finally:
            db.close()
        return found

    def remember(self, durations: Mapping[FileKey, float]) -> None:
        """Store durations of clips that passed the checks; nothing happens where the store is read-only."""
        if not durations:
            return
        db = self._connect()
        if db is None:
            return
        try:
            with db:
                db.executemany(
                    f"INSERT OR REPLACE INTO {TABLE} VALUES (?, ?, ?, ?)",
                    [(*key, seconds) for key, seconds in durations.items()],
                )
        except sqlite3.Error:
            pass
        finally:
            db.close()
