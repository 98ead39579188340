"""A job prepared for extraction: every check that needs no model, done before any weights load.

`prepare(cfg)` reads the dataset table (turned into one question per positive label when the prompt
asks for it: `calm.data.questions`), builds the protocol and its pools (once), the estimators,
the backbone object (weights are loaded only by extraction, and only when a clip is missing), the
prompt and the pseudo-labelling settings, and opens the activation cache under its key, so a bad
setting, an unusable split or a cache written by another model fails in seconds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from calm.backbones import Backbone, build_backbone
from calm.backbones.base import activation_dtype
from calm.baselines import PseudoLabelSettings, ZeroShotSettings, check_single_label
from calm.baselines.text_zero_shot import TextZeroShotSettings, check_text_tower
from calm.cache import ActivationCache
from calm.config_objects import build
from calm.config_schema import check_settings
from calm.data.prompts import ClipPrompt, build_prompt
from calm.data.questions import question_table
from calm.data.registry import LoadedDataset, read_dataset, warn_missing
from calm.data.table import ClipTable
from calm.errors import ConfigError
from calm.file_digests import FileDigests
from calm.methods.base import build_estimator
from calm.methods.precision import dtype_name
from calm.protocols import Pools, Protocol
from calm.row_inputs import model_key_fields
from calm.search import check_objective

# Set by Lightning's DDP launcher, torchrun and SLURM in every process of a multi-process run.
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")


def launched_as_main() -> bool:
    """False in the extra processes of a multi-process (DDP) run: they only extract their share."""
    return all(os.environ.get(name, "0") in ("", "0") for name in RANK_VARIABLES)


def build_methods(method_cfg: DictConfig) -> dict[str, Any]:
    """The estimators named in the `method` config group, instantiated (and so validated) up front."""
    estimators = method_cfg.get("estimators") or {}
    if not estimators and not method_cfg.get("zero_shot") and not method_cfg.get("text_zero_shot"):
        raise ConfigError("the method config lists no estimators",
                          "use method=calm_vs_sav, method=calm, method=sav or method=zero_shot")
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


def open_cache(cfg: DictConfig, backbone: Backbone, prompt: ClipPrompt) -> ActivationCache:
    """The activation cache folder for this backbone and prompt under `paths.cache_dir` (whose file digest
    store remembers the weights' content digests, so local weights are hashed once, not per run)."""
    root = Path(cfg.paths.cache_dir)
    digests = FileDigests(root)
    return ActivationCache.open(
        root, model_key_fields(backbone, prompt, digests), backbone.n_heads, backbone.head_dim,
        label=backbone.name, head_names=backbone.head_names(), digests=digests,
    )


@dataclass(frozen=True)
class PreparedJob:
    """Everything a job needs that can be had without loading a model."""

    cfg: DictConfig
    config: dict[str, Any]  # the resolved settings, as written to results.json
    out_dir: Path
    main: bool  # False in the extra processes of a DDP run
    loaded: LoadedDataset
    table: ClipTable  # the clips the job reads: `loaded.table`, or its per-label questions
    protocol: Protocol
    pools: Pools
    methods: dict[str, Any]
    backbone: Backbone
    prompt: ClipPrompt
    pseudo: PseudoLabelSettings | None
    zero_shot: ZeroShotSettings | None
    cache: ActivationCache
    text_zero_shot: TextZeroShotSettings | None = None  # an embedding backbone's text zero-shot (CLAP)

    @property
    def reads_features(self) -> bool:
        """Whether any report reads cached rows: the estimators, or a text zero-shot (audio embeddings)."""
        return bool(self.methods) or self.text_zero_shot is not None

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
            "(one row per clip, scored by its top-|labels| classes)")


def prepare(cfg: DictConfig) -> PreparedJob:
    """Read the table and check every setting and split; load no model. The top-level settings are
    typed first (`calm.config_schema`), before anything is read or written."""
    check_settings(cfg)
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    main = launched_as_main()
    loaded = read_dataset(cfg.dataset, cfg.paths.data_dir)
    warn_missing(cfg.dataset, loaded)
    if main:
        loaded.write_missing(out_dir / "missing_clips.txt")
    prompt = build_prompt(OmegaConf.to_container(cfg.prompt, resolve=True))
    table = job_table(loaded.table, prompt)
    protocol = build_protocol(cfg)
    pools = Pools.from_table(table)
    protocol.validate(pools)
    methods = build_methods(cfg.method)
    apply_evaluation_dtype(methods, str(cfg.evaluate.get("dtype", "float32")), str(cfg.trainer.precision))
    check_objective(cfg)
    if cfg.method.get("pseudo_label"):
        check_single_label(table)
    backbone = build_backbone(cfg.backbone, str(cfg.trainer.precision))
    check_questions_are_read(table, backbone)
    pseudo = (PseudoLabelSettings.from_config(OmegaConf.to_container(cfg.method.pseudo_label, resolve=True), methods,
                                             prompt) if cfg.method.get("pseudo_label") else None)
    zero_shot = (ZeroShotSettings.from_config(OmegaConf.to_container(cfg.method.zero_shot, resolve=True), prompt,
                                              table)
                 if cfg.method.get("zero_shot") else None)
    text_zero_shot = None
    if cfg.method.get("text_zero_shot"):
        text_zero_shot = TextZeroShotSettings.from_config(OmegaConf.to_container(cfg.method.text_zero_shot,
                                                                                 resolve=True))
        check_text_tower(backbone)
    return PreparedJob(cfg, OmegaConf.to_container(cfg, resolve=True), out_dir, main, loaded, table, protocol,
                       pools, methods, backbone, prompt, pseudo, zero_shot, open_cache(cfg, backbone, prompt),
                       text_zero_shot)
