"""What a result table holds, read from `configs/tables/<name>.yaml`.

A table is a list of row groups, each naming one experiment file under `configs/experiment/` (the
jobs' settings), the shot settings it runs (its own `shots` list, else the table's), the metric to
show, and the paper's number for it (docs/fidelity.md#the-papers-reported-numbers). The columns are every
shot setting of any group, by K (the whole list last). Everything is checked here, before any job is
composed, so a typo fails in a second, not after the first hour of extraction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from calm.config.assets import REPO_ROOT
from calm.errors import ConfigError

CONFIGS_DIR = REPO_ROOT / "configs"
TABLES_DIR = CONFIGS_DIR / "tables"
EXPERIMENTS_DIR = CONFIGS_DIR / "experiment"
# The metrics a row group may show (results.json has `<metric>_mean` / `<metric>_ci95` per row).
# Per-label question rows (AudioSet under protocol=paper) score a clip by its questions: all right
# (`exact_match_questions`, the authors' runner) or the predicted label set equal to the clip's.
METRIC_NAMES = {
    "accuracy": "accuracy (%)",
    "exact_match": "exact match (%)",
    "eer": "EER (%)",
    "macro_f1": "macro-F1 (%)",
    "exact_match_questions": "exact match, every question right (%)",
    "exact_match_sets": "exact match, label sets equal (%)",
}
ALL_SHOTS = "all"
AT_MOST = re.compile(r"^(?:<=|≤)\s*(\d+)$")


@dataclass(frozen=True)
class ShotSetting:
    """One column of a table: `k` clips per class, at most `k` (`at_most`: a class with fewer gives all
    it has), or the whole training list (`k` None). The experiment file sets the matching support draw
    (`protocol.at_most`, `protocol.support_draw`); `calm.tables.jobs` checks that it does."""

    k: int | None
    at_most: bool = False

    @property
    def key(self) -> str:
        """As written in the table file and numbers.csv: "20", "<=20" or "all"."""
        if self.k is None:
            return ALL_SHOTS
        return f"<={self.k}" if self.at_most else str(self.k)

    @property
    def header(self) -> str:
        """The column header: "20-shot", "≤20-shot", or "all (whole train list)"."""
        if self.k is None:
            return "all (whole train list)"
        return f"≤{self.k}-shot" if self.at_most else f"{self.k}-shot"

    @property
    def folder(self) -> str:
        """The job folder's name under the experiment's folder (no characters a shell would mind)."""
        if self.k is None:
            return f"shots_{ALL_SHOTS}"
        return f"shots_le{self.k}" if self.at_most else f"shots_{self.k}"


def shot_setting(raw: Any, where: str) -> ShotSetting:
    """A table file's shot entry: an int K, "<=K" (or "≤K"), or "all"."""
    if isinstance(raw, bool):
        raw = str(raw)
    if isinstance(raw, int) and raw >= 1:
        return ShotSetting(raw)
    text = str(raw).strip()
    if text == ALL_SHOTS:
        return ShotSetting(None)
    if text.isdigit() and int(text) >= 1:
        return ShotSetting(int(text))
    match = AT_MOST.match(text)
    if match and int(match.group(1)) >= 1:
        return ShotSetting(int(match.group(1)), at_most=True)
    raise ConfigError(
        f"{where}: shot entry {raw!r} is not a shot setting",
        'write a positive int K (exactly K per class), "<=K" (at most K per class) or "all" (the whole training list)',
    )


@dataclass(frozen=True)
class RowGroup:
    """One experiment file's jobs: one row per method, one job per shot setting of the group.
    `paper`: method -> the paper's number for the row that reproduces it; `note`: what a reader must
    know about the group's settings (shown under the table); `replay`: the group reads the authors' own
    manifests (`paper.manifests_dir`); `seeds`: one job per seed (`paper.seed=<seed>`), each row shown as
    mean ± sd over them."""

    experiment: str
    label: str
    metric: str = "accuracy"
    paper: dict[str, float] = field(default_factory=dict)
    shots: tuple[ShotSetting, ...] = ()
    note: str = ""
    smoke_overrides: tuple[str, ...] = ()
    replay: bool = False
    seeds: tuple[int, ...] = ()


@dataclass(frozen=True)
class TableSpec:
    """A table: its file name, caption, the columns (every group's shot settings, in `column_order`),
    the row groups in order, and its smoke run's settings (`smoke_shots`: real K -> the K the smoke
    run uses; `smoke_overrides`: for every group's smoke jobs, besides each group's own)."""

    name: str
    title: str
    shots: tuple[ShotSetting, ...]
    groups: tuple[RowGroup, ...]
    smoke_shots: dict[int, int] = field(default_factory=dict)
    smoke_overrides: tuple[str, ...] = ()
    smoke_seeds: int | None = None


def column_order(shots: ShotSetting) -> tuple[bool, int, bool]:
    """Columns left to right: by K (each K before its "<=K"), the whole list last."""
    return shots.k is None, shots.k or 0, shots.at_most


def table_names(folder: Path = TABLES_DIR) -> list[str]:
    """The tables that can be built: one YAML file each under `folder`."""
    return sorted(p.stem for p in Path(folder).glob("*.yaml"))


def shot_list(raw: Any, where: str) -> tuple[ShotSetting, ...]:
    """A `shots` list of a table or a group, each entry checked."""
    if not isinstance(raw, list) or not raw:
        raise ConfigError(
            f"{where}: `shots` must be a non-empty list, got {raw!r}",
            'e.g. shots: [20, 40], shots: ["<=20"] or shots: [all]',
        )
    return tuple(shot_setting(entry, where) for entry in raw)


def load_table(name: str, folder: Path = TABLES_DIR, experiments: Path = EXPERIMENTS_DIR) -> TableSpec:
    """Read `<folder>/<name>.yaml`, checking every experiment it names exists, every metric is known and
    every shot entry parses."""
    path = Path(folder) / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"no table named {name!r} ({path} does not exist)", f"choose from {table_names(folder)}")
    spec = yaml.safe_load(path.read_text())
    table_shots = shot_list(spec["shots"], f"table {name!r}") if "shots" in spec else ()
    groups = []
    for raw in spec["groups"]:
        experiment = raw["experiment"]
        if not (Path(experiments) / f"{experiment}.yaml").is_file():
            raise ConfigError(
                f"table {name!r} names experiment {experiment!r}, which has no file",
                f"add configs/experiment/{experiment}.yaml or fix {path}",
            )
        metric = raw.get("metric", "accuracy")
        if metric not in METRIC_NAMES:
            raise ConfigError(f"table {name!r}: unknown metric {metric!r}", f"use one of {sorted(METRIC_NAMES)}")
        shots = shot_list(raw["shots"], f"table {name!r}, group {experiment!r}") if "shots" in raw else table_shots
        if not shots:
            raise ConfigError(
                f"table {name!r}: group {experiment!r} has no shot settings",
                f"give the group or the table a `shots` list in {path}",
            )
        groups.append(
            RowGroup(
                experiment,
                raw.get("label", experiment),
                metric,
                {k: float(v) for k, v in (raw.get("paper") or {}).items()},
                shots,
                str(raw.get("note", "")).strip(),
                tuple(raw.get("smoke_overrides") or ()),
                bool(raw.get("replay", False)),
                seed_list(raw.get("seeds"), f"table {name!r}, group {experiment!r}"),
            )
        )
    columns = tuple(sorted({*table_shots, *(s for g in groups for s in g.shots)}, key=column_order))
    smoke = spec.get("smoke") or {}
    smoke_shots = {int(k): int(v) for k, v in (smoke.get("shots") or {}).items()}
    seeds = smoke.get("seeds")
    return TableSpec(
        name,
        spec.get("title", name),
        columns,
        tuple(groups),
        smoke_shots,
        tuple(smoke.get("overrides") or ()),
        None if seeds is None else int(seeds),
    )


def seed_list(raw: Any, where: str) -> tuple[int, ...]:
    """A group's `seeds`: distinct non-negative ints (none: one job per shot setting)."""
    if raw is None:
        return ()
    if (
        not isinstance(raw, list)
        or not raw
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in raw)
        or len(set(raw)) != len(raw)
    ):
        raise ConfigError(
            f"{where}: `seeds` must be a non-empty list of distinct non-negative ints, got {raw!r}",
            "e.g. seeds: [123, 456, 101]",
        )
    return tuple(raw)
