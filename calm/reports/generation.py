"""Reports that run the backbone itself: zero-shot answers, and the estimators refitted on support
sets grown with pseudo-labelled clips. Both use the episodes every other method sees, and both are
chosen like every report (`calm.reports.base.Report`): their `method` block turns them on."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from calm.baselines import (
    ZERO_SHOT_ROW,
    PseudoLabelSettings,
    ZeroShotSettings,
    answer_clips,
    check_single_label,
    pseudo_label_episodes,
    zero_shot_accuracy,
    zero_shot_store,
)
from calm.baselines.pseudo_label import unlabelled_pool
from calm.protocols import Episode
from calm.reports.base import Report, ReportOutput
from calm.reports.episodic import evaluate
from calm.run.tracking import Tracker

if TYPE_CHECKING:
    from calm.data.prompts import ClipPrompt
    from calm.data.table import ClipTable
    from calm.run.job import PreparedJob

log = logging.getLogger(__name__)
ANSWERS_FILE = "zero_shot_answers.tsv"


class ZeroShot(Report):
    """The backbone answers every query clip of the run once; answers are scored per episode. Answers
    that name no class (under matching=option_letter: that give no offered letter) count as wrong, are
    listed in zero_shot_answers.tsv and counted in results.json (`zero_shot_unmatched`)."""

    key = "zero_shot"
    uses_backbone = True
    reads_features = False

    def __init__(self, settings: ZeroShotSettings) -> None:
        self.settings = settings

    @classmethod
    def check(cls, settings: Mapping[str, Any], table: ClipTable, prompt: ClipPrompt) -> None:
        ZeroShotSettings.from_config(settings, prompt, table)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], job: PreparedJob, key: str) -> ZeroShot:
        return cls(ZeroShotSettings.from_config(settings, job.prompt, job.table))

    def run(
        self, job: PreparedJob, features: torch.Tensor | None, episodes: list[Episode], tracker: Tracker
    ) -> ReportOutput:
        table, settings = job.table, self.settings
        query_ids = [table.clips[i].id for episode in episodes for i in episode.query]
        store = zero_shot_store(job.cache_dir, job.backbone, job.prompt, settings, table)
        answers = answer_clips(job.backbone, table, job.prompt, query_ids, settings, job.devices.generation, store)
        answers.write(job.out_dir / ANSWERS_FILE, table.class_names)
        out = ReportOutput(
            per_method={ZERO_SHOT_ROW: []},
            extra={
                "zero_shot_unmatched": len(answers.unmatched),
                "zero_shot_decoding": {"matching": settings.matching, **settings.decoding_key()},
                "notes": settings.notes(len(answers.unmatched), len(answers.answers)),
            },
        )
        for episode in episodes:
            acc = zero_shot_accuracy(episode, table, answers)
            out.per_method[ZERO_SHOT_ROW].append(acc)
            out.episode_rows.append(
                {
                    "episode": episode.index,
                    "seed": episode.seed,
                    "method": ZERO_SHOT_ROW,
                    "accuracy": acc,
                    "macro_f1": float("nan"),
                }
            )
        if answers.unmatched:
            log.warning(
                "zero-shot: %d of %d answers name no %s (counted wrong); see %s",
                len(answers.unmatched),
                len(answers.answers),
                "class" if settings.matching == "class_names" else "offered letter",
                job.out_dir / ANSWERS_FILE,
            )
        return out


class PseudoLabels(Report):
    """Pseudo-labelled support. support=union: the estimators refitted on the support set grown with
    pseudo-labelled pool clips (S ∪ V), as `<name>+pl` rows on the same episodes and queries.
    support=replace (the authors' S = V): `relabel` gives every report of the job the episodes with their
    support sets relabelled by the backbone, and the true support labels are never read past it."""

    key = "pseudo_label"
    uses_backbone = True

    def __init__(self, settings: PseudoLabelSettings) -> None:
        self.settings = settings

    @property
    def replaces_support(self) -> bool:
        return self.settings.support == "replace"

    @classmethod
    def check(cls, settings: Mapping[str, Any], table: ClipTable, prompt: ClipPrompt) -> None:
        check_single_label(table)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], job: PreparedJob, key: str) -> PseudoLabels:
        return cls(PseudoLabelSettings.from_config(settings, job.methods, job.prompt))

    def extra_rows(self, job: PreparedJob) -> set[int]:
        return {int(i) for i in unlabelled_pool(job.table, self.settings.pool_size, self.settings.seed)}

    def support_causes(self) -> list[str]:
        return (
            ["support clips without an agreed pseudo label dropped (pseudo_label.support=replace)"]
            if self.replaces_support
            else []
        )

    def _labelled(self, job: PreparedJob, episodes: list[Episode]) -> tuple[list[Episode], dict[str, Any]]:
        return pseudo_label_episodes(
            self.settings,
            job.backbone,
            job.table,
            job.prompt,
            episodes,
            job.out_dir,
            job.cache_dir,
            job.devices.generation,
        )

    def relabel(self, job: PreparedJob, episodes: list[Episode]) -> tuple[list[Episode], ReportOutput | None]:
        if not self.replaces_support:
            return episodes, None
        relabelled, record = self._labelled(job, episodes)
        return relabelled, ReportOutput(extra={"pseudo_label": record, "notes": self.settings.notes()})

    def run(
        self, job: PreparedJob, features: torch.Tensor | None, episodes: list[Episode], tracker: Tracker
    ) -> ReportOutput:
        if self.replaces_support:  # every report already ran on the relabelled support (`relabel`)
            return ReportOutput()
        augmented, record = self._labelled(job, episodes)
        per_method, episode_rows = evaluate(
            augmented,
            features,
            self.settings.refit_methods(job.methods),
            tracker,
            device=job.devices.evaluation,
            table=job.table,
        )
        return ReportOutput(
            per_method=per_method,
            episode_rows=episode_rows,
            extra={"pseudo_label": record, "notes": self.settings.notes()},
        )
