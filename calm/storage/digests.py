"""The one way calm turns settings into digests and seeds: canonical JSON, then SHA-256.

Python's `hash()` is salted per process, and `json.dumps` without fixed separators and key order
gives different texts for equal settings; every cache key, job key, file name and derived seed
goes through these functions so the same inputs give the same digest on every machine.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

import numpy as np


def canonical_json(value: Any, *, allow_nan: bool = False) -> str:
    """The one JSON text of `value`: sorted keys, no whitespace, UTF-8, no NaN unless allowed (a key holding
    NaN is a bug; results may hold it where a statistic is undefined); other objects as str()."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=allow_nan, default=str
    )


def digest(value: Any, *, allow_nan: bool = False) -> str:
    """SHA-256 (hex) of the canonical JSON of `value`: cache keys, job keys, store names; with `allow_nan`,
    the content digest of a finished-job record (whose results may hold NaN)."""
    return hashlib.sha256(canonical_json(value, allow_nan=allow_nan).encode("utf-8")).hexdigest()


def text_sha256(text: str, chars: int | None = None) -> str:
    """SHA-256 (hex) of `text`'s UTF-8 bytes, cut to its first `chars` characters: for a text that is itself
    the identity (a rendered prompt, a chat template, a file listing), not settings to make canonical first."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:chars]


def chunks_sha256(chunks: Iterable[bytes]) -> str:
    """SHA-256 (hex) of the concatenated `chunks`, read one at a time (a file's blocks, a model's tensors)."""
    state = hashlib.sha256()
    for chunk in chunks:
        state.update(chunk)
    return state.hexdigest()


def mixed_seed(*seeds: int) -> int:
    """One 32-bit seed from several integer seeds: numpy's SeedSequence(seeds), its first state word
    (e.g. a fold assignment per cross-validation seed and episode)."""
    return int(np.random.SeedSequence([int(s) for s in seeds]).generate_state(1)[0])


def seeded_int(tag: str, *parts: Any) -> int:
    """A non-negative 63-bit seed from (tag, parts), valid for numpy and torch.

    SHA-256 of the compact JSON list [tag, *parts] (insertion order kept: the parts are positional),
    first 8 bytes, shifted right by one. `tag` names the use (e.g. "calm.episode.v1") so two uses
    with equal parts never share a seed.
    """
    key = json.dumps([tag, *parts], separators=(",", ":"))
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") >> 1
