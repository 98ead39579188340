"""Fill the activation cache with Lightning: a datamodule of missing clips, a module whose
`predict_step` captures head outputs, and a prediction writer that commits each batch to the cache.

Batches are cut from the full clip list (sorted by duration) before dropping cached ones, so a
resumed run computes every row in the same batch as an uninterrupted run would: same numbers.
A cached row counts only if it was computed from the clip's current inputs (the content of its
media files and, for a backbone that reads it, its rendered prompt text); a row of other inputs is
recomputed like a missing one, and the report says how many and why.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader, Dataset

from calm.backbones.base import Backbone
from calm.cache import REASONS, ActivationCache, RowFacts, RowInputs
from calm.cache.durations import DurationStore
from calm.data.audio import load_audio
from calm.data.prompts import Prompt
from calm.data.table import Clip, ClipTable
from calm.errors import CalmError, DataError
from calm.extraction.plan import (
    PROBE_WORKERS,
    check_long_clips,
    plan_batches,
    preflight,
)
from calm.extraction.row_inputs import row_inputs
from calm.run.termination import at_step_end, stop_if_terminated
from calm.storage.atomic_write import write_lines_atomic

log = logging.getLogger(__name__)
QUIET_WARNINGS = (".*does not have many workers.*", ".*infer the batch indices.*", ".*LeafSpec.*")


class _DropAdvertising(logging.Filter):
    """Lightning prints a product tip on every Trainer; keep its useful device lines only."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_DropAdvertising())


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


class PlannedBatches(Dataset):
    """Item i is planned batch i, decoded and collated; a bad clip becomes an error entry when skipping.

    Serving whole batches (DataLoader batch_size=None) keeps the batch plan exactly as computed,
    whatever sampler Lightning puts in front of it.
    """

    def __init__(
        self, table: ClipTable, batches: list[list[str]], prompt: Prompt, backbone: Backbone, on_bad_clip: str
    ) -> None:
        self.table = table
        self.batches = batches
        self.prompt = prompt
        self.backbone = backbone
        self.on_bad_clip = on_bad_clip
        self.index = {c.id: i for i, c in enumerate(table.clips)}

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict[str, Any]:
        needs_video = getattr(self.backbone, "needs_video", False)
        ids, waves, prompts, videos, errors = [], [], [], [], {}
        for clip_id in self.batches[i]:
            clip = self.table.clips[self.index[clip_id]]
            try:
                wave, video = self._decode(clip, needs_video)
            except CalmError as err:
                if self.on_bad_clip == "error":
                    raise
                errors[clip_id] = str(err)
                continue
            ids.append(clip_id)
            waves.append(wave)
            videos.append(video)
            prompts.append(self.prompt.text_for(clip, self.table))
        if not ids:
            inputs = {}
        elif needs_video:
            inputs = self.backbone.collate(waves, prompts, videos=videos)
        else:
            inputs = self.backbone.collate(waves, prompts)
        return {"ids": ids, "errors": errors, "inputs": inputs}

    def _decode(self, clip: Clip, needs_video: bool) -> tuple[Any, Any]:
        """Audio (from the video file when the backbone also reads frames) and, if needed, the frames."""
        if not needs_video:
            return load_audio(clip.audio_path, self.backbone.sample_rate), None
        if clip.video_path is None:
            raise DataError(
                f"clip {clip.id} ({clip.audio_path}) has no video file",
                "use backbone.modality=audio, or a dataset whose clips are videos (e.g. vggsound mp4)",
            )
        return load_audio(clip.video_path, self.backbone.sample_rate), self.backbone.load_video(clip.video_path)


def trimmed_for_capture(backbone: Backbone, batch: dict[str, Any]) -> dict[str, Any]:
    """A served batch whose model inputs hold only what `backbone.capture` reads (a new dict)."""
    if not batch["ids"]:
        return batch
    return {**batch, "inputs": backbone.trim_for_capture(batch["inputs"])}


class ClipBatches(pl.LightningDataModule):
    """Serves the planned batches; under DDP each rank takes every world_size-th batch."""

    def __init__(
        self,
        table: ClipTable,
        batches: list[list[str]],
        prompt: Prompt,
        backbone: Backbone,
        on_bad_clip: str,
        num_workers: int,
    ) -> None:
        super().__init__()
        self.args = (table, batches, prompt, backbone, on_bad_clip)
        self.num_workers = num_workers

    def on_before_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """Trim on the CPU what the capture never reads, before Lightning copies the batch to the device."""
        return trimmed_for_capture(self.args[3], batch)

    def predict_dataloader(self) -> DataLoader:
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        table, batches, prompt, backbone, on_bad_clip = self.args
        dataset = PlannedBatches(table, batches[rank::world], prompt, backbone, on_bad_clip)
        return DataLoader(dataset, batch_size=None, num_workers=self.num_workers)


class HeadExtractor(pl.LightningModule):
    """Holds the backbone's model so Lightning places it on the device and applies precision."""

    def __init__(self, backbone: Backbone, model: torch.nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.model = model

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        rows = None
        if batch["ids"]:
            inputs = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch["inputs"].items()}
            rows = self.backbone.capture(inputs).to(torch.float16).cpu()
        return {"ids": batch["ids"], "rows": rows, "errors": batch["errors"]}


class CacheWriter(BasePredictionWriter):
    """Commits each batch to the cache as soon as it is computed, so a killed run loses one batch at most;
    each row is stored with the inputs it was computed from, the size of its batch and its clip's duration.
    After a SIGTERM no new batch starts, and the one being computed is committed before the job stops
    (calm.run.termination)."""

    def __init__(
        self,
        cache: ActivationCache,
        report: ExtractionReport,
        inputs: dict[str, RowInputs],
        durations: dict[str, float],
    ) -> None:
        super().__init__(write_interval="batch")
        self.cache = cache
        self.report = report
        self.inputs = inputs
        self.durations = durations

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        stop_if_terminated()

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        self.report.skipped.update(prediction["errors"])
        ids = prediction["ids"]
        if ids:
            facts = [RowFacts(len(ids), self.durations[cid]) for cid in ids]
            self.report.extracted += self.cache.write(
                ids, prediction["rows"].numpy(), [self.inputs[cid] for cid in ids], facts
            )
        stop_if_terminated()


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
    model = backbone.load()
    datamodule = ClipBatches(table, batches, prompt, backbone, on_bad_clip, num_workers)
    trainer = pl.Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        callbacks=[CacheWriter(cache, report, inputs, durations)],
        **trainer_kwargs,
    )
    with warnings.catch_warnings(), at_step_end():
        for noise in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=noise)
        trainer.predict(HeadExtractor(backbone, model), datamodule=datamodule, return_predictions=False)
    report.rank = trainer.global_rank
    _merge_ranks(trainer, report)
    return report


def _merge_ranks(trainer: pl.Trainer, report: ExtractionReport) -> None:
    """Under DDP, wait until every rank has committed its batches, then give each the totals of all."""
    if trainer.world_size < 2 or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    parts: list[Any] = [None] * trainer.world_size
    torch.distributed.all_gather_object(parts, (report.extracted, report.skipped))
    report.extracted = sum(extracted for extracted, _ in parts)
    for skipped in (skipped for _, skipped in parts):
        report.skipped.update(skipped)
