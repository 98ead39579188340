"""The one atomic file write: a reader sees the old file or the new one, never a torn one.

Each write goes to its own temporary name in the target's folder (process id and a random suffix),
is flushed and fsynced, then renamed over the target; concurrent writers of one path therefore never
share or delete each other's temporary file, and the last rename wins whole.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def write_text_atomic(path: str | os.PathLike, text: str, *, durable: bool = True) -> Path:
    """Write `text` (UTF-8) to `path` atomically; `durable` also fsyncs the file and its folder."""
    return write_bytes_atomic(path, text.encode("utf-8"), durable=durable)


def write_bytes_atomic(path: str | os.PathLike, data: bytes, *, durable: bool = True) -> Path:
    """Write `data` to `path` atomically; `durable` also fsyncs the file and its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        _fsync_folder(path.parent)
    return path


def write_lines_atomic(path: str | os.PathLike, lines: Iterable[str]) -> Path:
    """`lines`, each ended by a newline, written with `write_text_atomic` (the TSV and list files)."""
    return write_text_atomic(path, "\n".join(lines) + "\n")


def write_json_atomic(
    path: str | os.PathLike, payload: Any, *, indent: int | None = 2, sort_keys: bool = False, durable: bool = True
) -> Path:
    """`payload` as JSON (non-JSON values as str()), written with `write_text_atomic`."""
    text = json.dumps(payload, indent=indent, sort_keys=sort_keys, ensure_ascii=False, default=str)
    return write_text_atomic(path, text + "\n", durable=durable)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
