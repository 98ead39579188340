"""One job, the steps of DESIGN.md section 2 in order: dataset table, prompt, backbone, activation
cache, protocol, methods, metrics and tracking. Everything cheap is checked before a model loads."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from calm.backbones import Backbone, build_backbone
from calm.baselines import (
    ZERO_SHOT_ROW,
    PseudoLabelSettings,
    answer_clips,
    check_single_label,
    generation_device,
    pseudo_label_episodes,
    zero_shot_accuracy,
)
from calm.cache import ActivationCache
from calm.config_objects import build
from calm.data.prompts import ClipPrompt, build_prompt
from calm.data.registry import read_dataset, warn_missing
from calm.data.table import ClipTable
from calm.errors import ConfigError
from calm.extract import extract_missing
from calm.figures import HeadCollector, HeadGrid, write_job_figures
from calm.metrics import (
    accuracy,
    detector_scores,
    eer,
    exact_match,
    macro_f1,
    mean_ci95,
    summarize,
    top_label_sets,
)
from calm.protocols import (
    Episode,
    EpisodicProtocol,
    PaperProtocol,
    Pools,
    Protocol,
    multilabel_targets,
)
from calm.search import check_objective, search_record
from calm.selection import CalmGrid, paper_grid_report
from calm.selection.rows import tuned_row_names
from calm.sweeps import load_finished, mark_finished
from calm.tracking import NullTracker, Tracker, build_tracker, write_results

log = logging.getLogger(__name__)
# Set by Lightning's DDP launcher, torchrun and SLURM in every process of a multi-process run.
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")


def launched_as_main() -> bool:
    """False in the extra processes of a multi-process (DDP) run: they only extract their share."""
    return all(os.environ.get(name, "0") in ("", "0") for name in RANK_VARIABLES)


def build_methods(method_cfg: DictConfig) -> dict[str, Any]:
    """The estimators named in the `method` config group, instantiated (and so validated) up front."""
    estimators = method_cfg.get("estimators") or {}
    if not estimators and not method_cfg.get("zero_shot"):
        raise ConfigError("the method config lists no estimators",
                          "use method=calm_vs_sav, method=calm, method=sav or method=zero_shot")
    return {name: instantiate(spec) for name, spec in estimators.items()}


def build_protocol(cfg: DictConfig) -> Protocol:
    """The Protocol subclass the `protocol` config group names by `_target_`, with its settings."""
    return build(cfg.protocol, "protocol", base=Protocol, named=True)


def cache_key_fields(backbone: Backbone, prompt: ClipPrompt) -> dict[str, Any]:
    """Only what changes the numbers: the backbone's fields, and the prompt if the backbone reads it."""
    fields = {"backbone": backbone.key_fields()}
    if backbone.uses_prompt_text:
        fields["prompt"] = prompt.key_fields()
    return fields


def open_cache(cfg: DictConfig, backbone: Backbone, prompt: ClipPrompt) -> ActivationCache:
    return ActivationCache.open(
        Path(cfg.paths.cache_dir), cache_key_fields(backbone, prompt), backbone.n_heads, backbone.head_dim,
        label=backbone.name, head_names=backbone.head_names(),
    )


def validate_pools(protocol: Protocol, table: ClipTable) -> None:
    protocol.validate(Pools.from_table(table))


def draw_episodes(protocol: Protocol, table: ClipTable) -> list[Episode]:
    return protocol.episodes(Pools.from_table(table))


def score_method(estimator: Any, support: torch.Tensor, episode: Episode, query: torch.Tensor) -> dict[str, float]:
    """One method on one episode: accuracy and macro-F1; exact match for multi-label episodes (the
    predicted set is the top-|true set| classes); EER for two-class episodes (detection)."""
    support_labels = torch.tensor(episode.support_labels)
    query_labels = torch.tensor(episode.query_labels)
    pred = estimator.fit(support, support_labels, n_classes=episode.ways).predict(query)
    metrics = {"accuracy": accuracy(pred, query_labels), "macro_f1": macro_f1(pred, query_labels, episode.ways)}
    if episode.query_label_sets is not None or episode.ways == 2:
        scores = estimator.predict_scores(query)
    if episode.query_label_sets is not None:
        targets = multilabel_targets(episode, "query")
        true_sets = [frozenset(np.flatnonzero(row).tolist()) for row in targets]
        metrics["exact_match"] = exact_match(top_label_sets(scores, targets.sum(axis=1)), true_sets)
    if episode.ways == 2 and len(set(episode.query_labels.tolist())) == 2:
        metrics["eer"] = eer(detector_scores(scores, 1), episode.query_labels == 1)
    return metrics


def evaluate(episodes: list[Episode], features: torch.Tensor, methods: dict[str, Any], tracker: Tracker,
             collector: HeadCollector | None = None) -> tuple[dict[str, list[float]], list[dict[str, Any]]]:
    """Every method on the same episodes; returns per-method accuracies and the per-episode rows.
    `collector` reads each fit's head weights / selected heads (for the figures) while they are at hand."""
    per_method: dict[str, list[float]] = {name: [] for name in methods}
    rows = []
    for episode in episodes if methods else []:
        support = features[torch.tensor(episode.support)]
        query = features[torch.tensor(episode.query)]
        logged = {}
        for name, estimator in methods.items():
            metrics = score_method(estimator, support, episode, query)
            if collector is not None:
                collector.add(name, estimator, episode.classes)
            per_method[name].append(metrics["accuracy"])
            logged.update({f"{name}/{key}": value for key, value in metrics.items()})
            rows.append({"episode": episode.index, "seed": episode.seed, "method": name, **metrics})
        tracker.log_episode(episode.index, logged)
    return per_method, rows


def run_zero_shot(cfg: DictConfig, backbone: Backbone, table: ClipTable, prompt: ClipPrompt, episodes: list[Episode],
                  per_method: dict[str, list[float]], episode_rows: list[dict[str, Any]], out_dir: Path) -> int:
    """Answer every query clip of the run once, score the answers per episode; returns how many
    answers named no class (listed in zero_shot_answers.tsv)."""
    settings = cfg.method.zero_shot
    query_ids = [table.clips[i].id for episode in episodes for i in episode.query]
    answers = answer_clips(backbone, table, prompt, query_ids, settings.batch_size, settings.max_new_tokens,
                           generation_device(cfg.trainer))
    answers.write(out_dir / "zero_shot_answers.tsv", table.class_names)
    per_method[ZERO_SHOT_ROW] = []
    for episode in episodes:
        acc = zero_shot_accuracy(episode, table, answers)
        per_method[ZERO_SHOT_ROW].append(acc)
        episode_rows.append({"episode": episode.index, "seed": episode.seed, "method": ZERO_SHOT_ROW,
                             "accuracy": acc, "macro_f1": float("nan")})
    if answers.unmatched:
        log.warning("zero-shot: %d of %d answers name no class (counted wrong); see %s", len(answers.unmatched),
                    len(answers.answers), out_dir / "zero_shot_answers.tsv")
    return len(answers.unmatched)


def paper_grid_rows(cfg: DictConfig, episode: Episode, features: torch.Tensor) -> tuple[list[dict], dict]:
    """protocol=paper: CALM's grid on the fixed split, as two labelled rows (chosen by cross-validation
    on the support set; best of grid on test = oracle) and the JSON summary of the grid."""
    support = features[torch.tensor(episode.support)]
    query = features[torch.tensor(episode.query)]
    multi = episode.query_label_sets is not None
    report = paper_grid_report(
        support, torch.tensor(episode.support_labels), query, torch.tensor(episode.query_labels),
        CalmGrid.from_config(OmegaConf.to_container(cfg.protocol.grid, resolve=True)),
        folds=cfg.protocol.folds, seed=cfg.protocol.cv_seed, n_classes=episode.ways,
        query_targets=multilabel_targets(episode, "query") if multi else None,
        support_targets=multilabel_targets(episode, "support") if multi else None,
        positive_class=1 if episode.ways == 2 else None,
    )
    rows = []
    cv_row, oracle_row = tuned_row_names("calm")
    for method, record in ((cv_row, report.cv_choice), (oracle_row, report.oracle)):
        test = record["test"]
        row = {"method": method, "shots": cfg.shots, "ways": episode.ways, "queries": len(episode.query),
               "episodes": 1, "accuracy_mean": test["accuracy"], "accuracy_ci95": float("nan"),
               "macro_f1_mean": test["macro_f1"], "selection": record["label"], "setting": record["setting"]}
        row.update({f"{k}_mean": v for k, v in test.items() if k not in ("accuracy", "macro_f1")})
        rows.append(row)
    return rows, report.summary()


def result_rows(cfg: DictConfig, per_method: dict[str, list[float]], episode_rows: list[dict[str, Any]],
                ways: int, queries: int, baseline: str | None) -> list[dict[str, Any]]:
    """One row per method: accuracy mean and 95 % CI, macro-F1, and the paired difference vs baseline."""
    summary = summarize(per_method, baseline if baseline in per_method else None)
    rows = []
    for name, stats in summary.items():
        mine = [r for r in episode_rows if r["method"] == name]
        row = {
            "method": name, "shots": cfg.shots, "ways": ways, "queries": queries, "episodes": stats["episodes"],
            "accuracy_mean": stats["mean"], "accuracy_ci95": stats["ci95"],
            "macro_f1_mean": float(np.mean([r["macro_f1"] for r in mine])),
        }
        for extra in ("exact_match", "eer"):
            if extra in mine[0]:
                row[f"{extra}_mean"], row[f"{extra}_ci95"] = mean_ci95([r[extra] for r in mine])
        if "diff_mean" in stats:
            row.update(baseline=baseline, diff_vs_baseline_mean=stats["diff_mean"],
                       diff_vs_baseline_ci95=stats["diff_ci95"])
        rows.append(row)
    return rows


def paper_notes(cfg: DictConfig) -> list[str]:
    """What a reader of protocol=paper results must know about how they differ from the reference."""
    notes = ["support is drawn only from the training pool; no clip of the test split is ever in the support set"]
    if cfg.dataset.name == "esc50":
        notes.append("the reference code drew ESC-50 support from a file that also holds the test fold; "
                     "this framework never does, so its numbers can be lower than the published ones")
    if cfg.prompt.name != "paper":
        notes.append("prompt is not `paper`: the published protocol used multiple-choice prompts containing the label")
    return notes


def _mean_ci(row: dict[str, Any], key: str) -> str:
    mean, ci = row.get(f"{key}_mean"), row.get(f"{key}_ci95")
    if mean is None:
        return ""
    sign = "+" if key == "d" else ""
    return f"{mean:{sign}.2f} ± {ci:.2f}" if ci is not None and np.isfinite(ci) else f"{mean:{sign}.2f}"


def print_table(rows: list[dict[str, Any]], title: str) -> None:
    extras = [key for key in ("exact_match", "eer") if any(f"{key}_mean" in row for row in rows)]
    headers = {"exact_match": "exact match (%)", "eer": "EER (%)"}
    table = Table(title=title)
    for column in ("method", "shots", "ways", "episodes", "accuracy (%)", "macro-F1 (%)",
                   *(headers[k] for k in extras), "Δ vs baseline"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for row in rows:
        diff = _mean_ci({"d_mean": row.get("diff_vs_baseline_mean"), "d_ci95": row.get("diff_vs_baseline_ci95")}, "d")
        table.add_row(escape(row["method"]), str(row["shots"]), str(row["ways"]), str(row["episodes"]),
                      _mean_ci(row, "accuracy"), f"{row['macro_f1_mean']:.2f}",
                      *(_mean_ci(row, k) for k in extras), diff)
    console = Console()
    console.width = max(console.width, 120)
    console.print(table)


def run_job(cfg: DictConfig) -> dict[str, Any]:
    """Run one experiment; W&B is finished (failed on error) whatever happens after it starts."""
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = OmegaConf.to_container(cfg, resolve=True)
    main = launched_as_main()
    done = load_finished(cfg) if main else None
    if done is not None:
        log.info("an identical job already finished in %s; skipping it (force=true redoes it)", done["output_dir"])
        write_results(out_dir, done["config"], done["results"], [],
                      {k: v for k, v in done.items() if k not in ("config", "results", "output_dir")}
                      | {"resumed_from": done["output_dir"]})
        print_table(done["results"], f"{cfg.dataset.name} · {cfg.shots}-shot · already finished in {done['output_dir']}")
        return done
    loaded = read_dataset(cfg.dataset, cfg.paths.data_dir)
    warn_missing(cfg.dataset, loaded)
    if main:
        loaded.write_missing(out_dir / "missing_clips.txt")
    table = loaded.table
    protocol = build_protocol(cfg)
    validate_pools(protocol, table)
    methods = build_methods(cfg.method)
    check_objective(cfg)
    if cfg.method.get("pseudo_label"):
        check_single_label(table)
    backbone = build_backbone(cfg.backbone, str(cfg.trainer.precision))
    prompt = build_prompt(OmegaConf.to_container(cfg.prompt, resolve=True))
    pseudo = (PseudoLabelSettings.from_config(OmegaConf.to_container(cfg.method.pseudo_label, resolve=True), methods,
                                             prompt) if cfg.method.get("pseudo_label") else None)
    cache = open_cache(cfg, backbone, prompt)
    tracker = build_tracker(OmegaConf.to_container(cfg.logger, resolve=True), config, out_dir) if main else NullTracker()
    failed = True
    try:
        started = time.perf_counter()
        report = extract_missing(
            backbone, table if methods else table.subset([]), prompt, cache,
            OmegaConf.to_container(cfg.trainer, resolve=True), batch_size=cfg.extract.batch_size,
            num_workers=cfg.extract.num_workers, on_bad_clip=cfg.on_bad_clip, on_long_clip=cfg.on_long_clip,
        )
        extract_seconds = time.perf_counter() - started
        if not main or report.rank != 0:  # a DDP rank other than 0: its share is in the cache, rank 0 evaluates
            log.info("rank %d: extraction done; evaluation and results are left to rank 0", report.rank)
            failed = False
            return {"rank": report.rank, "extracted": report.extracted}
        report.write_skips(out_dir / "skipped_clips.tsv")
        if report.skipped:
            log.warning("skipped %d clips that could not be decoded; listed in %s",
                        len(report.skipped), out_dir / "skipped_clips.tsv")
            table = table.without(set(report.skipped))
            validate_pools(protocol, table)
        features = cache.read(table.ids) if methods else None
        episodes = draw_episodes(protocol, table)
        collector = HeadCollector(cache.n_heads, len(table.class_names)) if cfg.get("figures", True) else None
        per_method, episode_rows = evaluate(episodes, features, methods, tracker, collector)
        if cfg.method.get("zero_shot"):
            unmatched = run_zero_shot(cfg, backbone, table, prompt, episodes, per_method, episode_rows, out_dir)
        if pseudo is not None:  # the refit estimators on S ∪ pseudo-labelled pool, same episodes and queries
            augmented, pseudo_report = pseudo_label_episodes(pseudo, backbone, table, prompt, episodes, out_dir,
                                                             Path(cfg.paths.cache_dir), generation_device(cfg.trainer))
            refit, refit_rows = evaluate(augmented, features, pseudo.refit_methods(methods), tracker)
            per_method.update(refit)
            episode_rows.extend(refit_rows)
        queries = cfg.queries if isinstance(protocol, EpisodicProtocol) else len(episodes[0].query)
        rows = result_rows(cfg, per_method, episode_rows, episodes[0].ways, queries, cfg.method.get("baseline"))
        extra = {"cache": {"path": str(cache.path), "key": cache.key, "extracted": report.extracted,
                           "extract_seconds": extract_seconds},
                 "clips": len(table), "skipped": sorted(report.skipped), "missing": len(loaded.missing),
                 "prompt": prompt.key_fields(), "protocol": cfg.protocol.name}
        if cfg.method.get("zero_shot"):
            extra["zero_shot_unmatched"] = unmatched
        if pseudo is not None:
            extra["pseudo_label"] = pseudo_report
        search = search_record(cfg, episodes, features)  # support-set CV only; None unless a search runs
        if search is not None:
            extra["search"] = search
        if isinstance(protocol, PaperProtocol):
            grid_rows, extra["paper_grid"] = paper_grid_rows(cfg, episodes[0], features)
            rows.extend(grid_rows)
            extra["notes"] = paper_notes(cfg)
        write_results(out_dir, config, rows, episode_rows, extra)
        if collector is not None:
            tracker.log_figures(write_job_figures(
                collector, HeadGrid.from_names(cache.head_names, cache.n_heads), table.class_names, out_dir,
                f"{cfg.dataset.name} · {backbone.name} · {cfg.shots}-shot"))
        mark_finished(cfg, {"config": config, "results": rows, **extra}, out_dir)
        tracker.log_results(rows)
        print_table(rows, f"{cfg.dataset.name} · {backbone.name} · {cfg.shots}-shot · {cfg.protocol.name} protocol"
                          f" · {len(episodes)} episode{'s' if len(episodes) > 1 else ''}")
        failed = False
        return {"results": rows, **extra}
    finally:
        tracker.finish(failed=failed)
