"""Which reports a job runs, and in which order: a walk over the report classes.

The built-in reports come first (the estimators, then the backbone's own methods, each turned on by its
`method` block), then the reports the method config declares under `method.reports.<name>` (a
`_target_` naming a `Report` subclass, and its settings), then the search objective and the paper grid,
which apply when the job searches or sweeps. Each class says itself whether it applies (`Report.applies`),
so adding a report or a method that needs the backbone is one class and one YAML file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from calm.config.builder import target_class
from calm.reports.base import Report
from calm.reports.episodic import EpisodicMethods
from calm.reports.generation import PseudoLabels, ZeroShot
from calm.reports.paper_grid import PaperGrid
from calm.reports.search import SearchObjective
from calm.reports.text_zero_shot import TextZeroShot

if TYPE_CHECKING:
    from calm.data.prompts import ClipPrompt
    from calm.data.table import ClipTable
    from calm.run.job import PreparedJob

# Before the reports a method declares, and after them: the results rows keep this order.
LEADING: tuple[type[Report], ...] = (EpisodicMethods, ZeroShot, TextZeroShot, PseudoLabels)
CLOSING: tuple[type[Report], ...] = (SearchObjective, PaperGrid)


def declared_reports(method: Mapping[str, Any]) -> list[tuple[str, type[Report], dict[str, Any]]]:
    """The `method.reports.<name>` entries: where each sits, its class (a `Report` subclass) and its settings."""
    declared = []
    for name, spec in (method.get("reports") or {}).items():
        key = f"method.reports.{name}"
        cls = target_class({"name": name, **spec}, "report", Report)
        declared.append((key, cls, {k: v for k, v in spec.items() if k != "_target_"}))
    return declared


Walk = list[tuple[str, type[Report], dict[str, Any]]]


def report_walk(method: Mapping[str, Any], table: ClipTable, prompt: ClipPrompt) -> Walk:
    """The report classes a job's resolved `method` settings turn on, in results order, each with where it
    sits and its settings: a keyed built-in report when its block is set, a declared one when listed, a
    closing one always. Each checks its settings against the table and prompt here, before the backbone is
    built and the cache opened (`Report.check`)."""
    walk = [
        (f"method.{cls.key}", cls, method.get(cls.key) or None) if cls.key else (cls.__name__, cls, {})
        for cls in LEADING
    ]
    walk += declared_reports(method)
    walk += [(cls.__name__, cls, {}) for cls in CLOSING]
    walk = [(key, cls, settings) for key, cls, settings in walk if settings is not None]
    for _, cls, settings in walk:
        cls.check(settings, table, prompt)
    return walk


def job_reports(walk: Walk, job: PreparedJob) -> tuple[Report, ...]:
    """The reports of `job` (every other part built): each class of the walk that `applies` to the job,
    built from its settings."""
    return tuple(cls.from_settings(settings, job, key) for key, cls, settings in walk if cls.applies(job))
