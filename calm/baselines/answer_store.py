"""Generated answers per clip id in one JSON file under the cache folder, named by the digest of
everything that changes them (dataset, backbone, prompt, decoding, seed), so a sweep over shots or
estimators answers each clip once and a change of any input reads another file, never a stale one."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from filelock import FileLock

from calm.atomic_write import write_json_atomic
from calm.digests import canonical_json, digest


class AnswerStore:
    """Answers per clip id, keyed by `key_fields` (stored with them, so a file says what made it)."""

    def __init__(self, folder: Path, key_fields: Mapping[str, Any], label: str) -> None:
        self.path = Path(folder) / f"{label}-{digest(key_fields)[:16]}.json"
        self.key_fields = json.loads(canonical_json(key_fields))  # as stored: plain JSON values

    def load(self) -> dict[str, Any]:
        if not self.path.is_file():
            return {}
        return dict(json.loads(self.path.read_text())["answers"])

    def add(self, answers: Mapping[str, Any]) -> None:
        """Merge `answers` into the file (atomically, under a lock: parallel jobs may share it)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.path) + ".lock"):
            merged = {**self.load(), **answers}
            write_json_atomic(self.path, {"key": self.key_fields, "answers": merged}, indent=1, sort_keys=True)
