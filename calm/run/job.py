"""A job prepared for extraction: every check that needs no model, done before any weights load.

`prepare(cfg)` reads the dataset table (turned into one question per positive label when the prompt
asks for it: `calm.data.questions`), builds the protocol and its pools (once), the estimators,
the backbone object (weights are loaded only by extraction, and only when a clip is missing), the
prompt and the reports the job runs (`calm.reports.job_reports`), and opens the activation cache under
its key, so a bad setting, an unusable split or a cache written by another model fails in seconds.
The config is read here only: what the rest of the job needs is a built object or a typed setting of
the `PreparedJob`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from calm.backbones import Backbone, build_backbone
from calm.backbones.base import activation_dtype
from calm.baselines.generation import generation_device
from calm.cache import ActivationCache
from calm.config.builder import build
from calm.config.schema import check_settings, paper_grids
from calm.data.dataset import Dataset
from calm.data.prompts import ClipPrompt, build_prompt
from calm.data.questions import question_table
from calm.data.registry import LoadedDataset, build_dataset, warn_missing
from calm.data.table import ClipTable
from calm.errors import ConfigError
from calm.extraction.row_inputs import model_key_fields
from calm.methods.base import build_estimator
from calm.methods.precision import dtype_name
from calm.protocols import PaperProtocol, Pools, Protocol
from calm.reports import Report, job_reports, report_walk
from calm.reports.episodic import evaluation_device
from calm.run.search import SearchSettings, search_settings
from calm.run.sweeps import FinishedRecord, finished_record_of
from calm.run.tracking import Tracker, build_tracker
from calm.storage.file_digests import FileDigests

# Set by Lightning's DDP launcher, torchrun and SLURM in every process of a multi-process run.
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")


def launched_as_main() -> bool:
    """False in the extra processes of a multi-process (DDP) run: they only extract their share."""
    return all(os.environ.get(name, "0") in ("", "0") for name in RANK_VARIABLES)


def build_methods(method_cfg: DictConfig) -> dict[str, Any]:
    """The estimators named in the `method` config group, instantiated (and so validated) up front."""
    estimators = method_cfg.get("estimators") or {}
    if not estimators and not any(method_cfg.get(key) for key in ("zero_shot", "text_zero_shot", "reports")):
        raise ConfigError(
            "the method config lists no estimators",
            "use method=calm_vs_sav, method=calm, method=sav or method=zero_shot",
        )
    return {name: build_estimator(spec, key=f"method.estimators.{name}") for name, spec in estimators.items()}


def apply_evaluation_dtype(methods: dict[str, Any], setting: str, precision: str) -> None:
    """`evaluate.dtype=model`: every estimator with an `arithmetic_dtype` (CALM) left at float32 computes
    its prototypes, cosines and softmax in the dtype of the backbone's activations (`activation_dtype`:
    the dtype the cache key records), as the authors' runner did; float32 leaves every estimator as
    configured."""
    if setting != "model":
        return
    name = dtype_name(activation_dtype(precision))
    for estimator in methods.values():
        if getattr(estimator, "arithmetic_dtype", None) == "float32":
            estimator.arithmetic_dtype = name
            estimator._check()


def build_protocol(cfg: DictConfig) -> Protocol:
    """The Protocol subclass the `protocol` config group names by `_target_`, with its settings."""
    return build(cfg.protocol, "protocol", base=Protocol, named=True)


def open_cache(root: Path, backbone: Backbone, prompt: ClipPrompt) -> ActivationCache:
    """The activation cache folder for this backbone and prompt under `root` (`paths.cache_dir`, whose file
    digest store remembers the weights' content digests, so local weights are hashed once, not per run)."""
    digests = FileDigests(root)
    return ActivationCache.open(
        root,
        model_key_fields(backbone, prompt, digests),
        backbone.n_heads,
        backbone.head_dim,
        label=backbone.name,
        head_names=backbone.head_names(),
        digests=digests,
    )


@dataclass(frozen=True)
class Devices:
    """Where the job computes, resolved once: the estimators' arithmetic (`evaluate.device`), and generation
    with the backbone (the device Lightning extracts on, from `trainer`); generation is None when no report
    of the job runs the backbone, so a setting only generation uses is checked only when it is used."""

    evaluation: torch.device
    generation: torch.device | None = None


@dataclass(frozen=True)
class ExtractionSettings:
    """How missing rows are extracted: the `extract` batch and workers, the bad/long clip policies, and
    the Lightning `trainer` settings."""

    batch_size: int
    num_workers: int
    on_bad_clip: str
    on_long_clip: str
    trainer: dict[str, Any]


@dataclass(frozen=True)
class EvaluationSettings:
    """The `evaluate` settings the reports read beyond the device: CALM's arithmetic dtype (float32 | model),
    and the paper grid's test clips per chunk and streamed-memory budget."""

    dtype: str
    query_chunk: int
    memory_budget_mb: int


@dataclass(frozen=True)
class PreparedJob:
    """Everything a job needs that can be had without loading a model, as built objects and typed settings:
    after `prepare` nothing reads the run's config again. `config` (the resolved settings) is only written
    to results.json and the finished-job record, never read for a setting."""

    config: dict[str, Any]
    record: FinishedRecord  # where a finished job with these settings is recorded
    out_dir: Path
    main: bool  # False in the extra processes of a DDP run
    shots: int
    figures: bool
    dataset: Dataset
    loaded: LoadedDataset
    table: ClipTable  # the clips the job reads: `loaded.table`, or its per-label questions
    protocol: Protocol
    pools: Pools
    methods: dict[str, Any]  # the built estimators, in `method.estimators` order
    estimator_specs: dict[str, dict[str, Any]]  # their resolved configs (a grid point is one with values set)
    baseline: str | None
    backbone: Backbone
    prompt: ClipPrompt
    cache: ActivationCache
    cache_dir: Path
    extraction: ExtractionSettings
    evaluation: EvaluationSettings
    devices: Devices
    logger: dict[str, Any]  # the `logger` settings, for the tracker the job opens after the finished-job check
    search: SearchSettings | None
    grids: dict[str, Any] | None  # protocol=paper's grids per method; None under other protocols
    reports: tuple[Report, ...] = ()  # in the order their rows appear in results.json

    @property
    def reads_features(self) -> bool:
        """Whether any report reads cached rows (the estimators, a text zero-shot, a pseudo-label refit)."""
        return any(report.reads_features for report in self.reports)

    def without(self, skipped: set[str]) -> PreparedJob:
        """The job without clips that could not be decoded; the protocol re-checks the smaller pools."""
        table = self.table.without(skipped)
        pools = Pools.from_table(table)
        self.protocol.validate(pools)
        return replace(self, table=table, pools=pools)


def job_table(table: ClipTable, prompt: ClipPrompt) -> ClipTable:
    """The rows a job extracts and scores: one question per positive label of each clip when the prompt
    asks them (`prompt.per_label_questions`, AudioSet under protocol=paper), else the clips themselves.
    Done before the pools and the cache, so each question is its own cache row with its own text."""
    return question_table(table) if prompt.per_label_questions else table


def check_questions_are_read(table: ClipTable, backbone: Backbone) -> None:
    """Refuse per-label questions for a backbone that never reads the prompt: every question of a clip
    would be the same row under different labels."""
    if any(clip.question_of is not None for clip in table.clips) and not backbone.uses_prompt_text:
        raise ConfigError(
            "the job asks one question per label of each clip (prompt.per_label_questions, or an AudioSet manifest "
            f"of dataset=manifest), but backbone {backbone.name!r} does not read the prompt text, so every question "
            "of a clip would get the same features under other labels",
            "use a backbone that reads the prompt (qwen2_audio, qwen2_5_omni), or prompt.per_label_questions=false "
            "(one row per clip, scored by its top-|labels| classes)",
        )


def prepare(cfg: DictConfig) -> PreparedJob:
    """Read the table and check every setting and split; load no model. The top-level settings are
    typed first (`calm.config.schema`), before anything is read or written; the config is then resolved
    once into the job's typed parts."""
    check_settings(cfg)
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    main = launched_as_main()
    dataset = build_dataset(cfg.dataset)
    loaded = dataset.load(Path(cfg.paths.data_dir))
    warn_missing(cfg.dataset, loaded)
    if main:
        loaded.write_missing(out_dir / "missing_clips.txt")
    prompt = build_prompt(OmegaConf.to_container(cfg.prompt, resolve=True))
    table = job_table(loaded.table, prompt)
    protocol = build_protocol(cfg)
    pools = Pools.from_table(table)
    protocol.validate(pools)
    methods = build_methods(cfg.method)
    evaluation = EvaluationSettings(
        str(cfg.evaluate.get("dtype", "float32")),
        int(cfg.evaluate.query_chunk),
        int(cfg.evaluate.get("memory_budget_mb", 128)),
    )
    apply_evaluation_dtype(methods, evaluation.dtype, str(cfg.trainer.precision))
    search = search_settings(cfg)
    method = OmegaConf.to_container(cfg.method, resolve=True)
    walk = report_walk(method, table, prompt)
    backbone = build_backbone(cfg.backbone, str(cfg.trainer.precision))
    check_questions_are_read(table, backbone)
    cache_dir = Path(cfg.paths.cache_dir)
    extraction = ExtractionSettings(
        int(cfg.extract.batch_size),
        int(cfg.extract.num_workers),
        str(cfg.on_bad_clip),
        str(cfg.on_long_clip),
        OmegaConf.to_container(cfg.trainer, resolve=True),
    )
    job = PreparedJob(
        OmegaConf.to_container(cfg, resolve=True),
        finished_record_of(cfg),
        out_dir,
        main,
        int(cfg.shots),
        bool(cfg.get("figures", True)),
        dataset,
        loaded,
        table,
        protocol,
        pools,
        methods,
        {name: method["estimators"][name] for name in methods},
        method.get("baseline"),
        backbone,
        prompt,
        open_cache(cache_dir, backbone, prompt),
        cache_dir,
        extraction,
        evaluation,
        Devices(evaluation_device(str(cfg.evaluate.device))),
        OmegaConf.to_container(cfg.logger, resolve=True),
        search,
        paper_grids(cfg) if isinstance(protocol, PaperProtocol) else None,
    )
    reports = job_reports(walk, job)
    generation = generation_device(extraction.trainer) if any(r.uses_backbone for r in reports) else None
    return replace(job, reports=reports, devices=replace(job.devices, generation=generation))


def open_tracker(job: PreparedJob) -> Tracker:
    """The job's tracker (W&B or none), opened once the job is known not to be finished already."""
    return build_tracker(job.logger, job.config, job.out_dir)
