"""One job, the steps of DESIGN.md section 2 in order: dataset table, prompt, backbone, activation
cache, protocol, methods, metrics and tracking. Everything cheap is checked before a model loads."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from calm.backbones import Backbone, build_backbone
from calm.cache import ActivationCache
from calm.data.prompts import Prompt
from calm.data.registry import read_dataset, warn_missing
from calm.data.table import QUERY_SPLIT, SUPPORT_SPLIT, ClipTable
from calm.errors import ConfigError
from calm.extract import extract_missing
from calm.metrics import accuracy, macro_f1, summarize
from calm.protocols import EpisodicProtocol
from calm.tracking import Tracker, build_tracker, write_results

log = logging.getLogger(__name__)


def build_methods(method_cfg: DictConfig) -> dict[str, Any]:
    """The estimators named in the `method` config group, instantiated (and so validated) up front."""
    estimators = method_cfg.get("estimators") or {}
    if not estimators:
        raise ConfigError("the method config lists no estimators", "use method=calm_vs_sav, method=calm or method=sav")
    return {name: instantiate(spec) for name, spec in estimators.items()}


def build_protocol(cfg: DictConfig) -> EpisodicProtocol:
    if cfg.protocol.name != "episodic":
        raise ConfigError(f"unknown protocol {cfg.protocol.name!r}", "use protocol=episodic")
    return EpisodicProtocol(
        shots=cfg.shots, queries=cfg.queries, episodes=cfg.episodes, seed=cfg.seed,
        dataset=cfg.dataset.name, ways=cfg.ways,
    )


def cache_key_fields(backbone: Backbone, prompt: Prompt) -> dict[str, Any]:
    """Only what changes the numbers: the backbone's fields, and the prompt if the backbone reads it."""
    fields = {"backbone": backbone.key_fields()}
    if backbone.uses_prompt_text:
        fields["prompt"] = prompt.key_fields()
    return fields


def open_cache(cfg: DictConfig, backbone: Backbone, prompt: Prompt) -> ActivationCache:
    return ActivationCache.open(
        Path(cfg.paths.cache_dir), cache_key_fields(backbone, prompt), backbone.n_heads, backbone.head_dim,
        label=backbone.name, head_names=backbone.head_names(),
    )


def validate_pools(protocol: EpisodicProtocol, table: ClipTable) -> None:
    protocol.validate(table.labels, table.split_mask(SUPPORT_SPLIT), table.split_mask(QUERY_SPLIT), table.class_names)


def evaluate(protocol: EpisodicProtocol, table: ClipTable, features: torch.Tensor, methods: dict[str, Any],
             tracker: Tracker) -> tuple[dict[str, list[float]], list[dict[str, Any]]]:
    """Every method on the same episodes; returns per-method accuracies and the per-episode rows."""
    episodes = protocol.episodes(table.labels, table.split_mask(SUPPORT_SPLIT), table.split_mask(QUERY_SPLIT))
    per_method: dict[str, list[float]] = {name: [] for name in methods}
    rows = []
    for episode in episodes:
        support = features[torch.tensor(episode.support)]
        query = features[torch.tensor(episode.query)]
        support_labels = torch.tensor(episode.support_labels)
        query_labels = torch.tensor(episode.query_labels)
        metrics = {}
        for name, estimator in methods.items():
            pred = estimator.fit(support, support_labels).predict(query)
            acc = accuracy(pred, query_labels)
            f1 = macro_f1(pred, query_labels, episode.ways)
            per_method[name].append(acc)
            metrics[f"{name}/accuracy"] = acc
            rows.append({"episode": episode.index, "seed": episode.seed, "method": name,
                         "accuracy": acc, "macro_f1": f1})
        tracker.log_episode(episode.index, metrics)
    return per_method, rows


def result_rows(cfg: DictConfig, per_method: dict[str, list[float]], episode_rows: list[dict[str, Any]],
                ways: int, baseline: str | None) -> list[dict[str, Any]]:
    """One row per method: accuracy mean and 95 % CI, macro-F1, and the paired difference vs baseline."""
    summary = summarize(per_method, baseline if baseline in per_method else None)
    rows = []
    for name, stats in summary.items():
        f1 = [r["macro_f1"] for r in episode_rows if r["method"] == name]
        row = {
            "method": name, "shots": cfg.shots, "ways": ways, "queries": cfg.queries, "episodes": stats["episodes"],
            "accuracy_mean": stats["mean"], "accuracy_ci95": stats["ci95"], "macro_f1_mean": float(np.mean(f1)),
        }
        if "diff_mean" in stats:
            row.update(baseline=baseline, diff_vs_baseline_mean=stats["diff_mean"],
                       diff_vs_baseline_ci95=stats["diff_ci95"])
        rows.append(row)
    return rows


def print_table(rows: list[dict[str, Any]], title: str) -> None:
    table = Table(title=title)
    for column in ("method", "shots", "ways", "episodes", "accuracy (%)", "macro-F1 (%)", "Δ vs baseline"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for row in rows:
        diff = (f"{row['diff_vs_baseline_mean']:+.2f} ± {row['diff_vs_baseline_ci95']:.2f}"
                if "diff_vs_baseline_mean" in row else "")
        table.add_row(row["method"], str(row["shots"]), str(row["ways"]), str(row["episodes"]),
                      f"{row['accuracy_mean']:.2f} ± {row['accuracy_ci95']:.2f}", f"{row['macro_f1_mean']:.2f}", diff)
    console = Console()
    console.width = max(console.width, 120)
    console.print(table)


def run_job(cfg: DictConfig) -> dict[str, Any]:
    """Run one experiment; W&B is finished (failed on error) whatever happens after it starts."""
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = OmegaConf.to_container(cfg, resolve=True)
    loaded = read_dataset(cfg.dataset, cfg.paths.data_dir)
    warn_missing(cfg.dataset, loaded)
    loaded.write_missing(out_dir / "missing_clips.txt")
    table = loaded.table
    protocol = build_protocol(cfg)
    validate_pools(protocol, table)
    methods = build_methods(cfg.method)
    backbone = build_backbone(cfg.backbone, str(cfg.trainer.precision))
    prompt = Prompt(**cfg.prompt)
    cache = open_cache(cfg, backbone, prompt)
    tracker = build_tracker(OmegaConf.to_container(cfg.logger, resolve=True), config, out_dir)
    failed = True
    try:
        started = time.perf_counter()
        report = extract_missing(
            backbone, table, prompt, cache, OmegaConf.to_container(cfg.trainer, resolve=True),
            batch_size=cfg.extract.batch_size, num_workers=cfg.extract.num_workers, on_bad_clip=cfg.on_bad_clip,
            on_long_clip=cfg.on_long_clip,
        )
        extract_seconds = time.perf_counter() - started
        report.write_skips(out_dir / "skipped_clips.tsv")
        if report.skipped:
            log.warning("skipped %d clips that could not be decoded; listed in %s",
                        len(report.skipped), out_dir / "skipped_clips.tsv")
            table = table.without(set(report.skipped))
            validate_pools(protocol, table)
        features = cache.read(table.ids)
        per_method, episode_rows = evaluate(protocol, table, features, methods, tracker)
        ways = protocol.ways or len(set(table.labels.tolist()))
        rows = result_rows(cfg, per_method, episode_rows, ways, cfg.method.get("baseline"))
        extra = {"cache": {"path": str(cache.path), "key": cache.key, "extracted": report.extracted,
                           "extract_seconds": extract_seconds},
                 "clips": len(table), "skipped": sorted(report.skipped), "missing": len(loaded.missing)}
        write_results(out_dir, config, rows, episode_rows, extra)
        tracker.log_results(rows)
        print_table(rows, f"{cfg.dataset.name} · {backbone.name} · {cfg.shots}-shot · {cfg.episodes} episodes")
        failed = False
        return {"results": rows, **extra}
    finally:
        tracker.finish(failed=failed)
