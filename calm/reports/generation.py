"""Reports that run the backbone itself: zero-shot answers, and the estimators refitted on support
sets grown with pseudo-labelled clips. Both use the episodes every other method sees."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from calm.baselines import (
    ZERO_SHOT_ROW,
    PseudoLabelSettings,
    answer_clips,
    generation_device,
    pseudo_label_episodes,
    zero_shot_accuracy,
    zero_shot_store,
)
from calm.protocols import Episode
from calm.reports.base import ReportOutput
from calm.reports.episodic import evaluate, evaluation_device
from calm.tracking import Tracker

if TYPE_CHECKING:
    from calm.job import PreparedJob

log = logging.getLogger(__name__)
ANSWERS_FILE = "zero_shot_answers.tsv"


class ZeroShot:
    """The backbone answers every query clip of the run once; answers are scored per episode. Answers
    that name no class (under matching=option_letter: that give no offered letter) count as wrong, are
    listed in zero_shot_answers.tsv and counted in results.json (`zero_shot_unmatched`)."""

    def run(self, job: PreparedJob, features: torch.Tensor | None, episodes: list[Episode],
            tracker: Tracker) -> ReportOutput:
        table = job.table
        settings = job.zero_shot  # parsed and checked against the prompt by calm.job.prepare
        query_ids = [table.clips[i].id for episode in episodes for i in episode.query]
        store = zero_shot_store(Path(job.cfg.paths.cache_dir), job.backbone, job.prompt, settings, table)
        answers = answer_clips(job.backbone, table, job.prompt, query_ids, settings,
                               generation_device(job.cfg.trainer), store)
        answers.write(job.out_dir / ANSWERS_FILE, table.class_names)
        out = ReportOutput(per_method={ZERO_SHOT_ROW: []}, extra={
            "zero_shot_unmatched": len(answers.unmatched),
            "zero_shot_decoding": {"matching": settings.matching, **settings.decoding_key()},
            "notes": settings.notes(len(answers.unmatched), len(answers.answers))})
        for episode in episodes:
            acc = zero_shot_accuracy(episode, table, answers)
            out.per_method[ZERO_SHOT_ROW].append(acc)
            out.episode_rows.append({"episode": episode.index, "seed": episode.seed, "method": ZERO_SHOT_ROW,
                                     "accuracy": acc, "macro_f1": float("nan")})
        if answers.unmatched:
            log.warning("zero-shot: %d of %d answers name no %s (counted wrong); see %s", len(answers.unmatched),
                        len(answers.answers), "class" if settings.matching == "class_names" else "offered letter",
                        job.out_dir / ANSWERS_FILE)
        return out


def relabelled_support(job: PreparedJob, episodes: list[Episode]) -> tuple[list[Episode], ReportOutput]:
    """Under pseudo_label.support=replace (the authors' S = V): the episodes with their support sets
    relabelled by the backbone, for every report of the job (estimators and tuned rows alike), and the
    pseudo-label record. The true support labels are never read past this point."""
    relabelled, record = pseudo_label_episodes(job.pseudo, job.backbone, job.table, job.prompt, episodes, job.out_dir,
                                               Path(job.cfg.paths.cache_dir), generation_device(job.cfg.trainer))
    return relabelled, ReportOutput(extra={"pseudo_label": record, "notes": job.pseudo.notes()})


class PseudoLabelRefit:
    """The estimators refitted on the support set grown with pseudo-labelled pool clips (S ∪ V), as
    `<name>+pl` rows on the same episodes and queries (support=union; under support=replace the whole
    job runs on the relabelled support instead: `relabelled_support`)."""

    def __init__(self, settings: PseudoLabelSettings) -> None:
        self.settings = settings

    def run(self, job: PreparedJob, features: torch.Tensor | None, episodes: list[Episode],
            tracker: Tracker) -> ReportOutput:
        augmented, record = pseudo_label_episodes(self.settings, job.backbone, job.table, job.prompt, episodes,
                                                  job.out_dir, Path(job.cfg.paths.cache_dir),
                                                  generation_device(job.cfg.trainer))
        per_method, episode_rows = evaluate(augmented, features, self.settings.refit_methods(job.methods), tracker,
                                            device=evaluation_device(job.cfg.evaluate.device), table=job.table)
        return ReportOutput(per_method=per_method, episode_rows=episode_rows,
                            extra={"pseudo_label": record, "notes": self.settings.notes()})
