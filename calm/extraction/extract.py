"""Fill the activation cache: which of the needed clips lack a row of their current inputs, planned into
batches, and the Lightning pass that computes them (calm.extraction.trainer_pass, loaded only then).

Batches are cut from the full clip list (sorted by duration) before dropping cached ones, so a
resumed run computes every row in the same batch as an uninterrupted run would: same numbers.
A cached row counts only if it was computed from the clip's current inputs (the content of its
media files and, for a backbone that reads it, its rendered prompt text); a row of other inputs is
recomputed like a missing one, and the report says how many and why.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calm.backbones.base import Backbone
from calm.cache import REASONS, ActivationCache
from calm.cache.durations import DurationStore
from calm.data.prompts import Prompt
from calm.data.table import ClipTable
from calm.extraction.plan import (
    PROBE_WORKERS,
    check_long_clips,
    plan_batches,
    preflight,
)
from calm.extraction.row_inputs import row_inputs
from calm.storage.atomic_write import write_lines_atomic

log = logging.getLogger(__name__)


@dataclass
class ExtractionReport:
    """What an extraction pass did: rows written, cached rows recomputed because their inputs changed
    (by reason: 'audio', 'prompt', or 'unknown' for rows of an older cache format), clips left out."""

    extracted: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    rank: int = 0  # this process's global rank in the extraction (0 without DDP); totals cover all ranks
    headers_read: int = 0  # audio headers read to plan (clips never checked before with this path/size/mtime)
    recomputed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    needed: int = 0  # clips whose rows the job reads (set by the pipeline)

    def add(self, other: ExtractionReport) -> None:
        """Fold in another pass (after skipped clips left the table) of the same process."""
        self.extracted += other.extracted
        self.skipped.update(other.skipped)
        self.rank = other.rank
        self.headers_read += other.headers_read
        for reason, count in other.recomputed.items():
            self.recomputed[reason] = self.recomputed.get(reason, 0) + count

    def write_skips(self, path: Path) -> None:
        """List skipped clips in a TSV so a skip is never silent."""
        if self.skipped:
            lines = ["clip_id\treason"] + [f"{cid}\t{why.splitlines()[0]}" for cid, why in sorted(self.skipped.items())]
            write_lines_atomic(path, lines)


def count_recomputed(todo: dict[str, str], report: ExtractionReport) -> None:
    """Count the cached rows that are recomputed because their inputs changed, and say so in one line."""
    for reason in todo.values():
        if reason in report.recomputed:
            report.recomputed[reason] += 1
    counts = report.recomputed
    reasons = [
        f"{words} {counts[reason]}"
        for reason, words in (("audio", "audio"), ("prompt", "prompt text"))
        if counts.get(reason)
    ]
    if counts.get("unknown"):
        reasons.append(f"{counts['unknown']} of an older cache format")
    if reasons:
        log.info("recomputing %d cached rows whose inputs changed: %s", sum(counts.values()), ", ".join(reasons))


def check_served_rows(
    backbone: Backbone,
    table: ClipTable,
    cache: ActivationCache,
    clip_ids: Sequence[str],
    on_long_clip: str,
    on_bad_clip: str,
    store: DurationStore,
    workers: int,
) -> int:
    """Apply `on_long_clip` to cached rows a job reads without extracting anything: by the clip durations
    recorded with the rows (no audio read), truncated clips are named again or, under `error`, refused as
    an uncached clip would be. Under `error`, clips whose rows recorded no duration (older cache formats)
    are checked like new clips; returns how many audio headers that read."""
    durations = {cid: facts.seconds for cid, facts in cache.facts(clip_ids).items()}
    unrecorded = [cid for cid in clip_ids if cid not in durations]
    headers_read = 0
    if on_long_clip == "error" and backbone.window_seconds is not None and unrecorded:
        probed, _, headers_read = preflight(table, unrecorded, on_bad_clip, store, workers)
        durations.update(probed)
    check_long_clips(durations, backbone.window_seconds, on_long_clip, table)
    return headers_read


def extract_missing(
    backbone: Backbone,
    table: ClipTable,
    prompt: Prompt,
    cache: ActivationCache,
    trainer_kwargs: dict[str, Any],
    batch_size: int = 16,
    num_workers: int = 0,
    on_bad_clip: str = "error",
    on_long_clip: str = "truncate",
    clip_ids: Sequence[str] | None = None,
) -> ExtractionReport:
    """Extract every clip of `clip_ids` (default: the whole table; a protocol passes the clips its
    episodes use) whose row is not in `cache` or was computed from other inputs (`row_inputs`); the
    model is loaded only if one is.

    Batches are planned over `clip_ids` by duration, and whole planned batches are recomputed (cached
    rows of unchanged inputs are not rewritten), so for a given set of clips the numbers never depend
    on which of them happened to be cached already: a resumed run gives an uninterrupted run's rows.
    Durations come from the duration store next to the cache; only clips never checked are read.
    `on_long_clip` holds for every row the job reads, cached ones included (`check_served_rows`).
    """
    report = ExtractionReport()
    needed = table.ids if clip_ids is None else list(dict.fromkeys(clip_ids))
    inputs = row_inputs(backbone, table, prompt, cache.digests, needed)
    todo = cache.outdated(inputs)
    store = DurationStore(cache.path.parent)
    workers = max(PROBE_WORKERS, num_workers)
    if not todo:
        report.headers_read = check_served_rows(
            backbone, table, cache, needed, on_long_clip, on_bad_clip, store, workers
        )
        return report
    cache.ensure_writable()
    missing = set(todo)
    durations, bad, report.headers_read = preflight(table, needed, on_bad_clip, store, workers)
    check_long_clips(
        {cid: durations[cid] for cid in needed if cid in durations}, backbone.window_seconds, on_long_clip, table
    )
    report.skipped.update({cid: why for cid, why in bad.items() if cid in missing})
    usable = [cid for cid in needed if cid not in bad]
    count_recomputed({cid: why for cid, why in todo.items() if cid not in bad}, report)
    batches = [b for b in plan_batches(usable, durations, batch_size) if missing.intersection(b)]
    if not batches:
        return report
    # Lightning is imported here, not at the top: a job whose rows are all cached starts without it.
    from calm.extraction.trainer_pass import compute_batches

    compute_batches(
        backbone, table, prompt, cache, batches, inputs, durations, report, trainer_kwargs, on_bad_clip, num_workers
    )
    return report
