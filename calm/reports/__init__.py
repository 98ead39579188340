"""The reports a job runs after extraction, in order, each on the same episodes and features.

`job_reports` (calm.reports.registry) is the one place that decides which reports a job runs, by a
walk over the report classes, each of which says when it applies: the estimators always; the zero-shot
answers, the text zero-shot of an embedding backbone (CLAP) and the pseudo-labelled support when the
method asks for them (under support=replace every report sees the relabelled episodes of
`Report.relabel`); the reports a method declares under `method.reports`; the search objective when a
search runs; the tuned rows when protocol=paper sweeps a method.
"""

from __future__ import annotations

from calm.reports.base import Report, ReportOutput
from calm.reports.console import print_table
from calm.reports.episodic import EpisodicMethods, evaluate, result_rows, score_method
from calm.reports.generation import PseudoLabels, ZeroShot
from calm.reports.paper_grid import PaperGrid, paper_notes, tuned_methods, tuned_rows
from calm.reports.registry import job_reports, report_walk
from calm.reports.search import SearchObjective
from calm.reports.text_zero_shot import TextZeroShot

__all__ = [
    "EpisodicMethods",
    "PaperGrid",
    "PseudoLabels",
    "Report",
    "ReportOutput",
    "SearchObjective",
    "TextZeroShot",
    "ZeroShot",
    "evaluate",
    "job_reports",
    "paper_notes",
    "print_table",
    "report_walk",
    "result_rows",
    "score_method",
    "tuned_methods",
    "tuned_rows",
]
