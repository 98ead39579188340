"""Timing for the benchmarks (scripts/bench_*.py): each prints a ratio of medians, never asserts a time."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def time_round_robin(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds per function after one warm-up call each, interleaving the functions (so a slow
    stretch of the machine hits every function alike)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}
