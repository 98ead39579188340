"""The text zero-shot of an audio-text embedding backbone (`method.text_zero_shot`, CLAP's
`clap_zero_shot`): scored per episode like every estimator (`score_method`), on the same episodes and
cached audio embeddings, with the episode's classes' text centroids as its prototypes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from calm.baselines.text_zero_shot import (
    TextPrototypes,
    TextZeroShotSettings,
    check_text_tower,
    text_centroids,
)
from calm.protocols import Episode
from calm.reports.base import Report, ReportOutput
from calm.reports.episodic import clip_groups, score_method
from calm.run.tracking import Tracker

if TYPE_CHECKING:
    from calm.run.job import PreparedJob


class TextZeroShot(Report):
    """Class names through the backbone's text tower once per job, then every episode's queries against
    the text centroids of the episode's classes."""

    key = "text_zero_shot"
    uses_backbone = True

    def __init__(self, settings: TextZeroShotSettings) -> None:
        self.settings = settings

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], job: PreparedJob, key: str) -> TextZeroShot:
        report = cls(TextZeroShotSettings.from_config(settings))
        check_text_tower(job.backbone)
        return report

    def run(
        self, job: PreparedJob, features: torch.Tensor | None, episodes: list[Episode], tracker: Tracker
    ) -> ReportOutput:
        row = self.settings.row
        centroids = text_centroids(job.backbone, job.table.class_names, self.settings, job.devices.generation)
        device = job.devices.evaluation
        out = ReportOutput(
            per_method={row: []}, extra={"text_zero_shot": {"row": row, "templates": list(self.settings.templates)}}
        )
        for episode, groups in zip(episodes, clip_groups(job.table, episodes), strict=True):
            support = features[torch.tensor(episode.support)].to(device).float()
            query = features[torch.tensor(episode.query)].to(device).float()
            estimator = TextPrototypes(centroids[torch.tensor(episode.classes)].to(device))
            metrics = score_method(estimator, support, episode, query, groups)
            out.per_method[row].append(metrics["accuracy"])
            out.episode_rows.append({"episode": episode.index, "seed": episode.seed, "method": row, **metrics})
        return out
