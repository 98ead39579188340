"""The one way calm turns settings into digests and seeds: canonical JSON, then SHA-256.

Python's `hash()` is salted per process, and `json.dumps` without fixed separators and key order
gives different texts for equal settings; every cache key, job key, file name and derived seed
goes through these functions so the same inputs give the same digest on every machine.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(value: Any) -> str:
    """The one JSON text of `value`: sorted keys, no whitespace, UTF-8, no NaN; other objects as str()."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                      default=str)


def digest(value: Any) -> str:
    """SHA-256 (hex) of the canonical JSON of `value`: cache keys, job keys, store names."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def seeded_int(tag: str, *parts: Any) -> int:
    """A non-negative 63-bit seed from (tag, parts), valid for numpy and torch.

    SHA-256 of the compact JSON list [tag, *parts] (insertion order kept: the parts are positional),
    first 8 bytes, shifted right by one. `tag` names the use (e.g. "calm.episode.v1") so two uses
    with equal parts never share a seed.
    """
    key = json.dumps([tag, *parts], separators=(",", ":"))
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") >> 1
