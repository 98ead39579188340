"""Writer process for the cache tests: fills a cache with deterministic rows in small batches.

Usage: python cache_writer_proc.py FOLDER START STOP BATCH SLEEP [--reverse] [--wait-go]
With --wait-go it prints "ready" once the cache is open and waits for a line on stdin, so that
several writers can be released together. It prints "written N" when done.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from calm.cache import ActivationCache

KEY_FIELDS = {"backbone": "test-writer", "revision": "r1", "dtype": "float16", "position": -1}
N_HEADS = 6
HEAD_DIM = 8


def clip_id(i: int) -> str:
    """The id of clip number ``i``."""
    return f"clip{i:05d}"


def row_for(i: int) -> np.ndarray:
    """The deterministic float32 row of clip number ``i``."""
    return np.random.default_rng(i).standard_normal((N_HEADS, HEAD_DIM)).astype(np.float32)


def fill(folder: Path, numbers: list[int], batch: int, sleep: float) -> int:
    """Write the rows of ``numbers`` to the cache in ``folder`` in batches; returns rows written."""
    cache = ActivationCache.open_path(folder, KEY_FIELDS, N_HEADS, HEAD_DIM)
    written = 0
    for start in range(0, len(numbers), batch):
        chunk = numbers[start : start + batch]
        rows = np.stack([row_for(i) for i in chunk])
        written += cache.write([clip_id(i) for i in chunk], rows)
        if sleep:
            time.sleep(sleep)
    return written


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("start", type=int)
    parser.add_argument("stop", type=int)
    parser.add_argument("batch", type=int)
    parser.add_argument("sleep", type=float)
    parser.add_argument("--reverse", action="store_true")
    parser.add_argument("--wait-go", action="store_true")
    args = parser.parse_args()
    numbers = list(range(args.start, args.stop))
    if args.reverse:
        numbers.reverse()
    if args.wait_go:
        ActivationCache.open_path(args.folder, KEY_FIELDS, N_HEADS, HEAD_DIM)
        print("ready", flush=True)
        sys.stdin.readline()
    written = fill(args.folder, numbers, args.batch, args.sleep)
    print(f"written {written}", flush=True)


if __name__ == "__main__":
    main()
