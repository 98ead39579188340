"""The reports a job runs after extraction, in order, each on the same episodes and features.

`job_reports` is the one place that decides which reports a job runs: the estimators always; the
zero-shot answers, the text zero-shot of an embedding backbone (CLAP) and the pseudo-label refit
(support=union) when the method asks for them (under support=replace every report sees the
relabelled episodes of `relabelled_support` instead); the search objective when a search runs; the
tuned rows when protocol=paper sweeps a method (`tuned_methods`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from calm.reports.base import Report, ReportOutput
from calm.reports.console import print_table
from calm.reports.episodic import EpisodicMethods, evaluate, result_rows, score_method
from calm.reports.generation import PseudoLabelRefit, ZeroShot, relabelled_support
from calm.reports.paper_grid import (
    PaperGrid,
    grid_rows,
    paper_notes,
    tuned_methods,
    tuned_rows,
)
from calm.reports.search import SearchObjective
from calm.reports.text_zero_shot import TextZeroShot

if TYPE_CHECKING:
    from calm.job import PreparedJob


def job_reports(job: PreparedJob) -> list[Report]:
    """The reports of `job`, in the order their rows appear in results.json."""
    reports: list[Report] = [EpisodicMethods()]
    if job.cfg.method.get("zero_shot"):
        reports.append(ZeroShot())
    if job.text_zero_shot is not None:
        reports.append(TextZeroShot(job.text_zero_shot))
    if job.pseudo is not None and job.pseudo.support != "replace":  # replace: relabelled_support, before all
        reports.append(PseudoLabelRefit(job.pseudo))
    reports.append(SearchObjective())
    if tuned_methods(job.cfg):
        reports.append(PaperGrid())
    return reports


__all__ = [
    "EpisodicMethods",
    "PaperGrid",
    "PseudoLabelRefit",
    "Report",
    "ReportOutput",
    "SearchObjective",
    "TextZeroShot",
    "ZeroShot",
    "evaluate",
    "grid_rows",
    "job_reports",
    "paper_notes",
    "print_table",
    "relabelled_support",
    "result_rows",
    "score_method",
    "tuned_methods",
    "tuned_rows",
]
