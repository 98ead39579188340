"""The Lightning Trainer pass that computes the planned batches and commits them to the cache.

Its own module because importing Lightning takes seconds (it loads torchmetrics and torchvision): the
extraction step imports it only when a batch has to be computed, so a job whose rows are all cached, a
sweep of such jobs and a run stopped by a config or data error start without it.
"""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader, Dataset

from calm.backbones.base import Backbone
from calm.cache import ActivationCache, RowFacts, RowInputs
from calm.data.audio import load_audio
from calm.data.prompts import Prompt
from calm.data.table import Clip, ClipTable
from calm.errors import CalmError, DataError
from calm.run.termination import at_step_end, stop_if_terminated

if TYPE_CHECKING:
    from calm.extraction.extract import ExtractionReport

QUIET_WARNINGS = (".*does not have many workers.*", ".*infer the batch indices.*", ".*LeafSpec.*")


class _DropAdvertising(logging.Filter):
    """Lightning prints a product tip on every Trainer; keep its useful device lines only."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_DropAdvertising())


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


def compute_batches(
    backbone: Backbone,
    table: ClipTable,
    prompt: Prompt,
    cache: ActivationCache,
    batches: list[list[str]],
    inputs: dict[str, RowInputs],
    durations: dict[str, float],
    report: ExtractionReport,
    trainer_kwargs: dict[str, Any],
    on_bad_clip: str,
    num_workers: int,
) -> None:
    """Load the model and run `batches` through a Trainer's predict loop, each batch written to `cache` as it
    ends; under DDP every rank computes its share and `report` ends with the totals of all ranks."""
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


def _merge_ranks(trainer: pl.Trainer, report: ExtractionReport) -> None:
    """Under DDP, wait until every rank has committed its batches, then give each the totals of all."""
    if trainer.world_size < 2 or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    parts: list[Any] = [None] * trainer.world_size
    torch.distributed.all_gather_object(parts, (report.extracted, report.skipped))
    report.extracted = sum(extracted for extracted, _ in parts)
    for skipped in (skipped for _, skipped in parts):
        report.skipped.update(skipped)
