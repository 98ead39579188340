"""The settings of a cache folder: ``key.json`` (what keys its rows) and ``meta.json`` (their shape and
format), checked on every open and written only when absent, under the folder's lock.

Checking needs no lock and writes nothing (both files are written atomically), so a read-only folder
whose files are complete and match opens; anything that must be written and cannot is a CacheError
that names the folder and the fix, not an OSError.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any

from filelock import FileLock

from calm.cache.index import FORMAT_VERSION, READABLE_FORMATS
from calm.errors import CacheError
from calm.storage.atomic_write import write_json_atomic
from calm.storage.digests import canonical_json, digest

KEY_FILE = "key.json"
META_FILE = "meta.json"
DATA_FILE = "rows.f16"
INDEX_FILE = "index.tsv"
LOCK_FILE = "cache.lock"
NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # a write refused for lack of room
NOT_PERMITTED = (errno.EACCES, errno.EPERM, errno.EROFS)  # a write refused for lack of permission


def cache_key(fields: dict) -> str:
    """SHA-256 (hex) of the canonical JSON of the settings that change the cached numbers."""
    return digest(fields)


def delete_fix(folder: Path) -> str:
    """The fix for a folder that cannot be used as it is."""
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


def unwritable(folder: Path, err: OSError) -> CacheError:
    """The error for a folder rows must be written to and cannot, with the fix its cause calls for: room
    (a full disk, a quota, a file size limit) or permissions (read-only); "File too large" once got
    "make the folder writable"."""
    where = f" ({err.filename})" if err.filename else ""
    elsewhere = "or point paths.cache_dir (or CALM_CACHE) at a folder on another disk"
    if err.errno in NO_ROOM:
        fix = (
            f"free space on that disk, or raise the quota or file size limit (`ulimit -f`) that refused the "
            f"write, {elsewhere}; the rows written so far are kept"
        )
    elif err.errno in NOT_PERMITTED:
        fix = (
            "make the folder writable, or point paths.cache_dir (or CALM_CACHE) at a writable folder "
            "(a read-only cache serves a job only when it already holds every row the job needs)"
        )
    else:
        fix = f"check that the folder exists and can be written to, {elsewhere}"
    return CacheError(f"cannot write the activation cache folder {folder}: {err.strerror or err}{where}", fix)


def read_json(path: Path) -> dict:
    """A JSON object from a folder's file, or a CacheError with the fix."""
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CacheError(f"cannot read {path}: {e}", delete_fix(path.parent)) from e
    if not isinstance(payload, dict):
        raise CacheError(f"{path} does not hold a JSON object", delete_fix(path.parent))
    return payload


def write_meta(path: Path, meta_format: int, n_heads: int, head_dim: int, head_names: list[str] | None) -> None:
    """meta.json, atomically."""
    write_json_atomic(
        path,
        {"format": meta_format, "n_heads": n_heads, "head_dim": head_dim, "dtype": "float16", "head_names": head_names},
        sort_keys=True,
    )


def check_or_write_key(folder: Path, key: str, key_fields: dict) -> None:
    """Write key.json into a new folder; otherwise raise unless it holds this key (naming what differs)."""
    key_path = folder / KEY_FILE
    if not key_path.exists():
        strays = [n for n in (META_FILE, DATA_FILE, INDEX_FILE) if (folder / n).exists()]
        if strays:
            raise CacheError(
                f"cache folder {folder} holds {', '.join(strays)} but no {KEY_FILE}, "
                "so the settings its activations came from are unknown",
                delete_fix(folder),
            )
        write_json_atomic(key_path, {"key": key, "fields": json.loads(canonical_json(key_fields))}, sort_keys=True)
        return
    stored = read_json(key_path)
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
        delete_fix(folder),
    )


def checked_meta(folder: Path, stored: dict, n_heads: int, head_dim: int, head_names: list[str] | None) -> dict:
    """`stored` meta, if its rows are readable here: a known format, the same shape and head names."""
    wanted = {"n_heads": n_heads, "head_dim": head_dim, "dtype": "float16"}
    diffs = [
        f"{name}: cached {_short(stored.get(name))}, requested {_short(wanted[name])}"
        for name in wanted
        if stored.get(name) != wanted[name]
    ]
    if stored.get("format") not in READABLE_FORMATS:
        diffs.insert(0, f"format: cached {_short(stored.get('format'))}, readable {list(READABLE_FORMATS)}")
    stored_names = stored.get("head_names")
    if head_names is not None and stored_names is not None and stored_names != head_names:
        diffs.append(f"head_names: cached {_short(stored_names)}, requested {_short(head_names)}")
    if diffs:
        raise CacheError(
            f"cache folder {folder} holds rows of another shape or format ({'; '.join(diffs)})",
            delete_fix(folder),
        )
    return stored


def check_or_write_meta(
    folder: Path, n_heads: int, head_dim: int, head_names: list[str] | None
) -> tuple[list[str] | None, int]:
    """Head names and format, after writing meta.json where it is absent or lacks the head names."""
    meta_path = folder / META_FILE
    if not meta_path.exists():
        write_meta(meta_path, FORMAT_VERSION, n_heads, head_dim, head_names)
        return head_names, FORMAT_VERSION
    stored = checked_meta(folder, read_json(meta_path), n_heads, head_dim, head_names)
    if stored.get("head_names") is None and head_names is not None:
        write_meta(meta_path, stored["format"], n_heads, head_dim, head_names)
        return head_names, stored["format"]
    return stored.get("head_names"), stored["format"]


def settle(
    folder: Path, key_fields: dict, n_heads: int, head_dim: int, head_names: list[str] | None
) -> tuple[list[str] | None, int]:
    """Check (and where absent, write) the folder's key and meta; return its head names and format.

    Raises CacheError when the folder was written under other settings or shape, or cannot be written
    although something must be.
    """
    key = cache_key(key_fields)
    if (folder / KEY_FILE).is_file() and (folder / META_FILE).is_file():
        check_or_write_key(folder, key, key_fields)
        stored = checked_meta(folder, read_json(folder / META_FILE), n_heads, head_dim, head_names)
        if stored.get("head_names") is not None or head_names is None:
            return stored.get("head_names"), stored["format"]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder / LOCK_FILE)):
            check_or_write_key(folder, key, key_fields)
            return check_or_write_meta(folder, n_heads, head_dim, head_names)
    except OSError as err:
        raise unwritable(folder, err) from err
