"""What a report is: one step after extraction that turns the prepared job and its features into
result rows and extras (docs/design/data_flow.md#reports), and how a job chooses its reports.

Every report, built in or added by a user, is chosen the same way (`calm.reports.registry`): a class
declares the `method` block that turns it on (`key`: `method.zero_shot`, `method.pseudo_label`, ...;
or any `method.reports.<name>` with a `_target_`), whether it applies to the built job (`applies`),
and whether it runs the backbone itself (`uses_backbone`: the job then resolves a generation device).
A method that needs the backbone is therefore one `Report` subclass and one method YAML.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from calm.config.builder import build

if TYPE_CHECKING:
    import torch

    from calm.data.prompts import ClipPrompt
    from calm.data.table import ClipTable
    from calm.protocols import Episode
    from calm.run.job import PreparedJob
    from calm.run.tracking import Tracker


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


class Report(ABC):
    """One step of the job after extraction; runs on the same episodes as every other report.

    `key`: the `method.<key>` block that turns a built-in report on and holds its settings (None: the
    report is not switched by a block; `applies` alone decides). `uses_backbone`: the report generates
    with the backbone, so the job resolves `devices.generation` for it. `reads_features`: the report reads
    the cached rows of the episodes' clips (a report that only generates does not, and a job whose reports
    all only generate extracts nothing).
    """

    key: ClassVar[str | None] = None
    uses_backbone: ClassVar[bool] = False
    reads_features: bool = True

    @classmethod
    def applies(cls, job: PreparedJob) -> bool:
        """Whether the report runs in `job` (every part but the reports is built); True by default."""
        return True

    @classmethod
    def check(cls, settings: Mapping[str, Any], table: ClipTable, prompt: ClipPrompt) -> None:
        """Refuse settings, a table or a prompt the report cannot work with, before the backbone is built,
        its weights read or the cache opened (a multi-label table for pseudo-labels, option letters with a
        prompt that shows none); nothing by default."""
        return

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], job: PreparedJob, key: str) -> Report:
        """The report with its settings (its `method` block without `_target_`), checked against `job`;
        by default the constructor takes the settings (unknown or missing ones refused by name)."""
        return build({"_target_": f"{cls.__module__}.{cls.__qualname__}", **settings}, "report", base=Report, key=key)

    @abstractmethod
    def run(
        self, job: PreparedJob, features: torch.Tensor | None, episodes: list[Episode], tracker: Tracker
    ) -> ReportOutput: ...

    def relabel(self, job: PreparedJob, episodes: list[Episode]) -> tuple[list[Episode], ReportOutput | None]:
        """Episodes every report then sees instead of the drawn ones (pseudo_label.support=replace), and
        the record of the change; by default the episodes as drawn and no record."""
        return episodes, None

    def extra_rows(self, job: PreparedJob) -> set[int]:
        """Table rows beyond the episodes' clips whose features the report reads (a pseudo-label pool)."""
        return set()

    def support_causes(self) -> list[str]:
        """Settings of the report that can leave a class with other than `shots` support clips (notes)."""
        return []
