"""The search objective of a job (hparams_search=...): support-set cross-validation only."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from calm.protocols import Episode
from calm.reports.base import ReportOutput
from calm.search import search_record
from calm.tracking import Tracker

if TYPE_CHECKING:
    from calm.job import PreparedJob


class SearchObjective:
    """Writes `search` into results.json: the value the sweeper optimises, from support clips only."""

    def run(self, job: PreparedJob, features: torch.Tensor | None, episodes: list[Episode],
            tracker: Tracker) -> ReportOutput:
        record = search_record(job.cfg, episodes, features)
        return ReportOutput(extra={} if record is None else {"search": record})
