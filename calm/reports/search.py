"""The search objective of a job (hparams_search=...): support-set cross-validation only."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from calm.protocols import Episode
from calm.reports.base import Report, ReportOutput
from calm.run.search import search_record
from calm.run.tracking import Tracker

if TYPE_CHECKING:
    from calm.run.job import PreparedJob


class SearchObjective(Report):
    """Writes `search` into results.json: the value the sweeper optimises, from support clips only."""

    @classmethod
    def applies(cls, job: PreparedJob) -> bool:
        return job.search is not None

    def run(
        self, job: PreparedJob, features: torch.Tensor | None, episodes: list[Episode], tracker: Tracker
    ) -> ReportOutput:
        return ReportOutput(extra={"search": search_record(job.search, episodes, features)})
