"""Read an offline W&B run file (`run-*.wandb`) so tests can check what was logged, e.g. the exit code.

The file is W&B's LevelDB-style log: a 7-byte header, then 32 KiB blocks of records, each with a
7-byte header (crc32c, little-endian length, type: 1 full, 2 first, 3 middle, 4 last) and a
protobuf `Record` payload.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path) -> list[wandb_internal_pb2.Record]:
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    records, pos, pending = [], HEADER, b""
    while pos + HEADER <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < HEADER:
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        payload = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == 0 and length == 0:
            pos += BLOCK - pos % BLOCK if pos % BLOCK else 0
            continue
        if kind in (FULL, FIRST):
            pending = payload
        else:
            pending += payload
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def exit_code(run_dir: Path, wait_seconds: float = 10.0) -> int | None:
    """The exit code the run was finished with, or None if it never finished.

    W&B's service process writes the file; allow it a moment to flush the final record.
    """
    deadline = time.monotonic() + wait_seconds
    while True:
        run_file = next(Path(run_dir).glob("run-*.wandb"))
        codes = [r.exit.exit_code for r in read_records(run_file) if r.WhichOneof("record_type") == "exit"]
        if codes or time.monotonic() > deadline:
            return codes[-1] if codes else None
        time.sleep(0.2)


def history_keys(run_dir: Path) -> set[str]:
    run_file = next(Path(run_dir).glob("run-*.wandb"))
    keys = set()
    for record in read_records(run_file):
        if record.WhichOneof("record_type") == "history":
            keys.update(item.key or "/".join(item.nested_key) for item in record.history.item)
    return keys


def run_record(run_dir: Path) -> wandb_internal_pb2.RunRecord:
    """The run's own record: display name, group, job type, tags."""
    run_file = next(Path(run_dir).glob("run-*.wandb"))
    return next(r.run for r in read_records(run_file) if r.WhichOneof("record_type") == "run")


def logged_images(run_dir: Path) -> dict[str, dict[str, object]]:
    """Every image logged to the run: key -> its fields (`path` in files/, `sha256`, `width`, ...).

    The run file stores a logged wandb.Image as flattened history items `<key>/_type`, `<key>/path`, ...
    """
    run_file = next(Path(run_dir).glob("run-*.wandb"))
    fields: dict[str, dict[str, object]] = {}
    for record in read_records(run_file):
        if record.WhichOneof("record_type") == "history":
            for item in record.history.item:
                key, _, field = (item.key or "/".join(item.nested_key)).rpartition("/")
                fields.setdefault(key, {})[field] = json.loads(item.value_json)
    return {key: value for key, value in fields.items() if value.get("_type") == "image-file"}
