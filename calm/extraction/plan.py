"""Planning an extraction before any model loads: which clips are fit to extract (header checks), how
long each is, and the batches they go in.

Checks and durations of clips that passed before are served from the duration store next to the
cache (`calm.cache.durations`), so a resumed or widened run reads no header twice; new clips are
probed by a thread pool with a progress bar. Batches are planned over the clips a run needs, longest
first, so the same set of clips always gets the same batches (exact resume).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from tqdm.auto import tqdm

from calm.cache.durations import DurationStore, FileKey, file_key
from calm.data.audio import probe_audio
from calm.data.table import ClipTable
from calm.errors import CalmError, ConfigError, DataError

log = logging.getLogger(__name__)
BAD_CLIP_POLICIES = ("error", "skip")
LONG_CLIP_POLICIES = ("truncate", "error")
PROBE_WORKERS = 8  # threads reading audio headers (I/O bound): at least this many, or extract.num_workers
PROGRESS_FROM = 200  # clips to check before a progress bar is worth showing


def preflight(
    table: ClipTable,
    clip_ids: Sequence[str],
    on_bad_clip: str,
    store: DurationStore | None = None,
    workers: int = PROBE_WORKERS,
) -> tuple[dict[str, float], dict[str, str], int]:
    """Check the clips before the model loads: durations, and bad clips (missing, undecodable, empty,
    truncated, or a float file holding NaN/Inf samples; float files are the only ones decoded here,
    see `calm.data.audio`). Returns (durations, bad clips with why, headers read).

    A clip that passed before with the same path, size and mtime is served from `store` without
    reading its header; the others are probed by `workers` threads, with a progress bar.
    """
    if on_bad_clip not in BAD_CLIP_POLICIES:
        raise ConfigError(f"on_bad_clip={on_bad_clip!r}", f"use one of {BAD_CLIP_POLICIES}")
    by_id = {c.id: c for c in table.clips}
    keys = {cid: file_key(by_id[cid].audio_path) for cid in clip_ids}
    known = store.known([k for k in keys.values() if k is not None]) if store is not None else {}
    durations = {cid: known[k] for cid, k in keys.items() if k in known}
    todo = [cid for cid in clip_ids if cid not in durations]

    def probe(cid: str) -> tuple[str, float | None, CalmError | None]:
        try:
            return cid, probe_audio(by_id[cid].audio_path, samples=True).seconds, None
        except CalmError as err:
            return cid, None, err

    bad: dict[str, str] = {}
    fresh: dict[FileKey, float] = {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(probe, todo)
        for cid, seconds, err in tqdm(
            results,
            total=len(todo),
            desc="checking audio headers",
            unit="clip",
            disable=len(todo) < PROGRESS_FROM,
            leave=False,
        ):
            if err is not None:
                if on_bad_clip == "error":
                    raise err
                bad[cid] = str(err)
                continue
            durations[cid] = seconds
            if keys[cid] is not None:
                fresh[keys[cid]] = seconds
    if store is not None:
        store.remember(fresh)
    return durations, bad, len(todo)


def check_long_clips(durations: dict[str, float], window: float | None, policy: str, table: ClipTable) -> None:
    """Clips longer than the model's audio window are truncated by its processor: say so, or refuse."""
    if policy not in LONG_CLIP_POLICIES:
        raise ConfigError(f"on_long_clip={policy!r}", f"use one of {LONG_CLIP_POLICIES}")
    if window is None:
        return
    long = sorted(cid for cid, seconds in durations.items() if seconds > window + 1e-6)
    if not long:
        return
    paths = {c.id: str(c.audio_path) for c in table.clips}
    shown = ", ".join(f"{paths[cid]} ({durations[cid]:.1f} s)" for cid in long[:5])
    more = f" and {len(long) - 5} more" if len(long) > 5 else ""
    if policy == "error":
        raise DataError(
            f"{len(long)} clips are longer than the model's {window:.0f} s audio window: {shown}{more}",
            "trim them, or set on_long_clip=truncate to keep only the first "
            f"{window:.0f} s of each (the processor's behaviour)",
        )
    log.warning(
        "%d clips are longer than the %.0f s audio window and are truncated to it: %s%s", len(long), window, shown, more
    )


def plan_batches(clip_ids: Sequence[str], durations: dict[str, float], batch_size: int) -> list[list[str]]:
    """Longest clips first (similar lengths share a batch; an OOM shows up at once), ties by id."""
    if batch_size < 1:
        raise ConfigError(f"extract.batch_size={batch_size}", "use a positive batch size")
    ordered = sorted(clip_ids, key=lambda cid: (-durations.get(cid, 0.0), cid))
    return [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]
