"""What a report is: one step after extraction that turns the prepared job and its features into
result rows and extras (docs/design/data_flow.md#reports)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch

    from calm.job import PreparedJob
    from calm.protocols import Episode
    from calm.tracking import Tracker


@dataclass
class ReportOutput:
    """A report's share of the results.

    `per_method`: per-episode accuracies of episodic rows (summarised, with the paired difference to
    the baseline, once every report has run); `episode_rows`: episodes.csv rows; `rows`: finished
    results rows (e.g. the paper grid's); `extra`: keys of results.json.
    """

    per_method: dict[str, list[float]] = field(default_factory=dict)
    episode_rows: list[dict[str, Any]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


class Report(Protocol):
    """One step of the job after extraction; runs on the same episodes as every other report."""

    def run(self, job: PreparedJob, features: torch.Tensor | None, episodes: list[Episode],
            tracker: Tracker) -> ReportOutput: ...
