"""A finished sweep's accuracy-vs-shots curves, one figure per (dataset, backbone), from the jobs'
results.json files; `SweepFigures` draws them when a multirun ends and logs them to a W&B run of
the sweep's group (job_type "sweep-summary") when the W&B logger is on."""

from __future__ import annotations

import json
import logging
import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from hydra.experimental.callback import Callback
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf

from calm.baselines.pseudo_label import SUFFIX as PL_SUFFIX
from calm.baselines.zero_shot import ZERO_SHOT_ROW
from calm.figures.job import DPI, plain, save_figure
from calm.run.sweeps import NOT_RESULTS, NOT_RESULTS_TRAINER
from calm.run.tracking import build_tracker, sweep_group

log = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
SUMMARY_JOB_TYPE = "sweep-summary"
# Never a reason to draw two curves: the x axis, and the seed (jobs differing only in seed are pooled).
CURVE_AXES = ("shots", "seed")
# Method-level settings that change no row's accuracy: the group's name (CALM in calm_vs_sav and CALM
# alone are the same curve), the baseline of the paired differences, and the estimators (each row
# adds only its own estimator's settings).
NOT_CURVE_METHOD = ("name", "baseline", "estimators")
# Method-level blocks that change only some rows, with their settings that change none: pseudo-labels
# only the `<estimator>+pl` refits (whichever others are refit too), zero-shot only its own row.
ROW_BLOCKS: dict[str, tuple[Callable[[str], bool], tuple[str, ...]]] = {
    "pseudo_label": (lambda row: row.endswith(PL_SUFFIX), ("refit",)),
    "zero_shot": (lambda row: row == ZERO_SHOT_ROW, ()),
}


@dataclass(frozen=True)
class Curve:
    """One method (with the settings that set it apart) across shots: mean accuracy and 95 % CI.

    `seeds` counts the independent jobs (distinct seeds) pooled into each point.
    """

    label: str
    shots: np.ndarray
    mean: np.ndarray
    ci95: np.ndarray
    seeds: np.ndarray


def read_sweep(sweep_dir: Path) -> list[dict[str, Any]]:
    """The results.json payloads of every job under the sweep folder that wrote one."""
    return [json.loads(path.read_text()) for path in sorted(Path(sweep_dir).rglob(RESULTS_FILE))]


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): json.dumps(value, sort_keys=True) if isinstance(value, list) else value}


def row_estimator(method_cfg: dict[str, Any], method: str) -> str | None:
    """The entry of `method.estimators` whose settings a results row depends on: its own, or for a
    pseudo-label refit `<est>+pl` that of `<est>`; None for rows of no estimator (zero_shot, calm[cv])."""
    estimators = method_cfg.get("estimators") or {}
    for name in (method, method.removesuffix(PL_SUFFIX)):
        if name in estimators:
            return name
    return None


def _method_settings(method_cfg: dict[str, Any], method: str) -> dict[str, Any]:
    """The method-level settings (outside `estimators`) that may change the `method` row's results."""
    kept = {}
    for key, value in method_cfg.items():
        if key in NOT_CURVE_METHOD:
            continue
        applies, inert = ROW_BLOCKS.get(key, (lambda row: True, ()))
        if applies(method):
            kept[key] = {k: v for k, v in value.items() if k not in inert} if isinstance(value, dict) else value
    return kept


def curve_settings(config: dict[str, Any], method: str) -> dict[str, Any]:
    """The settings that may set one job's `method` row apart from another's, flattened.

    Everything that changes that row's results except the curve's axes: the job's settings outside
    `method`, the method-level settings that concern the row (under "method."), and its own
    estimator's settings (under "<estimator>."), never the other estimators' (SAV's row is the same
    whatever CALM's settings).
    """
    method_cfg = config.get("method") or {}
    kept = {k: v for k, v in config.items() if k not in (*NOT_RESULTS, *CURVE_AXES, "method")}
    kept["trainer"] = {k: v for k, v in config.get("trainer", {}).items() if k not in NOT_RESULTS_TRAINER}
    kept["method"] = _method_settings(method_cfg, method)
    # a protocol's copy of an axis (episodic.yaml's `shots: ${shots}`) is that axis, not a setting
    kept["protocol"] = {
        k: v for k, v in (config.get("protocol") or {}).items() if not (k in CURVE_AXES and v == config.get(k))
    }
    flat = _flatten(kept)
    estimator = row_estimator(method_cfg, method)
    if estimator is not None:
        flat.update(_flatten(method_cfg["estimators"][estimator], f"{estimator}."))
    return flat


def _pooled(seeded: list[tuple[str, dict[str, Any]]]) -> tuple[float, float, int]:
    """Mean accuracy, 95 % CI half-width and number of seeds of one point from its (seed, row) pairs.

    Rows of one seed are the same job (same settings, same episodes): they count once, averaged in
    case they differ. Distinct seeds draw different episodes, so their means are pooled as
    independent (mean of means, CIs combined in quadrature).
    """
    by_seed: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for seed, row in seeded:
        by_seed[seed].append(row)
    means = [float(np.mean([r["accuracy_mean"] for r in rows])) for rows in by_seed.values()]
    cis = [float(np.mean([r["accuracy_ci95"] for r in rows])) for rows in by_seed.values()]
    return float(np.mean(means)), float(math.sqrt(sum(c * c for c in cis)) / len(cis)), len(cis)


def _label(method: str, estimator: str | None, settings: dict[str, Any], varying: list[str]) -> str:
    prefixes = ("method.", *((f"{estimator}.",) if estimator else ()))
    parts = []
    for key in varying:
        short = next((key.removeprefix(p) for p in prefixes if key.startswith(p)), key)
        parts.append(f"{short}={settings.get(key)}")
    return f"{method} ({', '.join(parts)})" if parts else method


def accuracy_curves(payloads: Iterable[dict[str, Any]]) -> dict[tuple[str, str], list[Curve]]:
    """Curves per (dataset, backbone): one per method and setting, points sorted by shots.

    Rows with the same settings are pooled across distinct seeds (mean of means, CI combined as
    independent); rows of the same settings and seed are one job repeated and count once.
    """
    rows: dict[tuple[str, str], list[tuple[str, str | None, dict[str, Any], str, dict[str, Any]]]] = defaultdict(list)
    for payload in payloads:
        config = payload["config"]
        combo = (config["dataset"]["name"], config["backbone"]["name"])
        seed = json.dumps(config.get("seed"), sort_keys=True, default=str)
        for row in payload["results"]:
            estimator = row_estimator(config.get("method") or {}, row["method"])
            rows[combo].append((row["method"], estimator, curve_settings(config, row["method"]), seed, row))
    curves: dict[tuple[str, str], list[Curve]] = {}
    for combo, entries in sorted(rows.items()):
        points: dict[str, dict[int, list[tuple[str, dict[str, Any]]]]] = defaultdict(lambda: defaultdict(list))
        for method in dict.fromkeys(m for m, *_ in entries):
            mine = [(e, s, seed, r) for m, e, s, seed, r in entries if m == method]
            keys = sorted({k for _, s, _, _ in mine for k in s})
            varying = [k for k in keys if len({json.dumps(s.get(k), default=str) for _, s, _, _ in mine}) > 1]
            for estimator, settings, seed, row in mine:
                points[_label(method, estimator, settings, varying)][int(row["shots"])].append((seed, row))
        curves[combo] = []
        for label, by_shots in points.items():
            shots = sorted(by_shots)
            pooled = [_pooled(by_shots[s]) for s in shots]
            curves[combo].append(
                Curve(
                    label,
                    np.array(shots),
                    np.array([p[0] for p in pooled]),
                    np.array([p[1] for p in pooled]),
                    np.array([p[2] for p in pooled]),
                )
            )
    return curves


def curves_figure(curves: list[Curve], title: str) -> Figure:
    """Accuracy (%) against shots per curve, with its 95 % CI as a shaded band."""
    fig = Figure(figsize=(6.4, 4.2), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    for curve in curves:
        (line,) = ax.plot(curve.shots, curve.mean, marker="o", label=plain(curve.label))
        ax.fill_between(
            curve.shots,
            curve.mean - curve.ci95,
            curve.mean + curve.ci95,
            color=line.get_color(),
            alpha=0.2,
            linewidth=0,
        )
    shots = sorted({int(s) for curve in curves for s in curve.shots})
    if shots[0] > 0 and shots[-1] / shots[0] >= 8:
        ax.set_xscale("log")
    ax.set_xticks(shots, [str(s) for s in shots])
    ax.minorticks_off()
    low, high = ax.get_ylim()
    ax.set_ylim(max(low, -2.0), min(high, 102.0))  # a wide CI (few episodes) must not hide the curves
    ax.set_xlabel("shots per class")
    ax.set_ylabel("accuracy (%), 95 % CI")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(plain(title), fontsize=10)
    return fig


def _file_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def write_sweep_figures(sweep_dir: Path) -> dict[tuple[str, str], Path]:
    """accuracy_vs_shots_<dataset>_<backbone>.png in the sweep folder, per (dataset, backbone)."""
    figures = {}
    for (dataset, backbone), curves in accuracy_curves(read_sweep(sweep_dir)).items():
        path = Path(sweep_dir) / f"accuracy_vs_shots_{_file_part(dataset)}_{_file_part(backbone)}.png"
        save_figure(curves_figure(curves, f"{dataset} · {backbone}"), path)
        figures[dataset, backbone] = path
    return figures


class SweepFigures(Callback):
    """At the end of a multirun: the accuracy-vs-shots figures, in the sweep folder and in W&B."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not config.get("figures", True):
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        figures = write_sweep_figures(sweep_dir)
        if not figures:
            log.info("no finished job in %s: no accuracy-vs-shots figure", sweep_dir)
            return
        log.info("accuracy-vs-shots figures: %s", ", ".join(str(p) for p in figures.values()))
        logger = OmegaConf.to_container(config.logger, resolve=True)
        if logger.get("name") != "wandb":
            return
        group = logger.get("group") or sweep_group(sweep_dir)
        tags = sorted({name for combo in figures for name in combo})
        summary = {**logger, "group": group, "tags": tags, "run_name": f"{SUMMARY_JOB_TYPE}-{group}"}
        tracker = build_tracker(summary, {"sweep_dir": str(sweep_dir)}, sweep_dir, job_type=SUMMARY_JOB_TYPE)
        failed = True
        try:
            tracker.log_figures({f"accuracy_vs_shots/{d}/{b}": path for (d, b), path in figures.items()})
            failed = False
        finally:
            tracker.finish(failed=failed)
