"""The one way calm opens a small SQLite table of facts about files (content digests, durations) kept
next to the cache: keyed by (resolved path, size, mtime in ns), shared safely between concurrent jobs,
and optional, since a store that cannot be opened (no folder, a read-only cache) only means nothing is
remembered."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def open_file_table(path: Path | None, table: str, value: str) -> sqlite3.Connection | None:
    """A connection with `table (path, size, mtime_ns, <value>)` created, or None where none can be had."""
    if path is None:
        return None
    db = None
    try:
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, timeout=60)
        db.execute(
            f"CREATE TABLE IF NOT EXISTS {table} (path TEXT, size INTEGER, mtime_ns INTEGER, {value}, "
            "PRIMARY KEY (path, size, mtime_ns))"
        )
        return db
    except (OSError, sqlite3.Error):
        if db is not None:
            db.close()
        return None
