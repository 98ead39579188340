"""Pseudo-labelled support (DESIGN section 6): the backbone labels an unlabelled pool, and the clips it
labels consistently join each episode's support set S.

- Pool: a fixed random subset (`pool_size`, seeded; all when null) of the training pool, drawn
  without reading any label. Per episode, the pool clips outside its support and query sets whose
  pseudo label is one of the episode's classes are added to S with that label.
- Pseudo label: `samples` sampled answers per clip (`Backbone.sample_answers`, seeded per clip),
  each matched to a class name (`calm.baselines.answer_matching`). The class named most often is the
  clip's label if it is named by at least `min_agreement` of the samples and by more samples than
  any other class; a tie for the most votes labels nothing (no majority).
- The pool clips' true labels are read only for the report: `pseudo_labels.tsv` in the job folder
  and the accuracy of the kept labels in results.json.
- Answers are stored under the cache folder, keyed by the dataset (name and source: clip ids are
  unique only within one), the backbone, the prompt and the sampling settings, so a sweep over shots
  or estimators answers each clip once.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock

from calm.atomic_write import write_json_atomic
from calm.backbones.base import Backbone, check_sampling
from calm.baselines.answer_matching import match_answer
from calm.baselines.generation import generate_in_batches
from calm.data.prompts import ClipPrompt, PaperPrompt
from calm.data.table import SUPPORT_SPLIT, Clip, ClipTable
from calm.digests import canonical_json, digest, seeded_int
from calm.errors import ConfigError
from calm.protocols import Episode

TSV_NAME = "pseudo_labels.tsv"
STORE_FOLDER = "pseudo_label_answers"
SUFFIX = "+pl"
# Tag of every seed drawn here (pool subset, per-clip sampling); changing it changes every pseudo label.
_SEED_TAG = "calm.pseudo_label.v1"


@dataclass(frozen=True)
class PseudoLabelSettings:
    """The `pseudo_label` block of a method config, checked before any model is loaded."""

    refit: tuple[str, ...]
    samples: int = 8
    min_agreement: float = 0.5
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 16
    pool_size: int | None = None
    seed: int = 0
    batch_size: int = 8

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], estimators: Collection[str], prompt: ClipPrompt) -> PseudoLabelSettings:
        """Settings from the config; `estimators` are the method's names, `prompt` the job's prompt."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(cfg) - fields)
        if unknown:
            raise ConfigError(f"unknown pseudo_label settings {unknown}", f"use {sorted(fields)}")
        settings = cls(**{**cfg, "refit": tuple(cfg.get("refit") or ())})
        settings.check(estimators, prompt)
        return settings

    def check(self, estimators: Collection[str], prompt: ClipPrompt) -> None:
        if not self.refit or not set(self.refit) <= set(estimators):
            raise ConfigError(f"pseudo_label.refit={list(self.refit)} must name estimators of the method "
                              f"({sorted(estimators)})", "e.g. pseudo_label.refit=[calm,sav]")
        check_sampling(self.samples, self.temperature, self.top_p)
        if isinstance(self.min_agreement, bool) or not isinstance(self.min_agreement, Real) \
                or not 0 < self.min_agreement <= 1:
            raise ConfigError(f"pseudo_label.min_agreement must be in (0, 1], got {self.min_agreement!r}",
                              "set min_agreement to e.g. 0.5 (at least half of the samples agree)")
        for name in ("max_new_tokens", "batch_size") + (("pool_size",) if self.pool_size is not None else ()):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
                raise ConfigError(f"pseudo_label.{name} must be a positive integer, got {value!r}",
                                  f"set pseudo_label.{name} to a positive number" +
                                  (" or null (the whole training pool)" if name == "pool_size" else ""))
        if isinstance(prompt, PaperPrompt):
            raise ConfigError("pseudo-labelling cannot use prompt=paper: its options show each clip's true label, "
                              "which the unlabelled pool must never see", "use prompt=clean")

    def refit_methods(self, methods: Mapping[str, Any]) -> dict[str, Any]:
        """The estimators fitted on S ∪ pseudo-labelled pool, named `<name>+pl`."""
        return {f"{name}{SUFFIX}": methods[name] for name in self.refit}


@dataclass(frozen=True)
class Vote:
    """One clip's majority vote: the class (None: no single class named most often), its votes, the samples."""

    label: int | None
    votes: int
    samples: int

    @property
    def agreement(self) -> float:
        return self.votes / self.samples if self.samples else 0.0

    def kept(self, min_agreement: float) -> bool:
        """A labelled clip whose class got at least `min_agreement` of the samples (4 of 8 pass 0.5)."""
        return self.label is not None and self.votes >= min_agreement * self.samples - 1e-9


def majority_vote(classes: Sequence[int | None]) -> Vote:
    """The class named by the most samples (None entries are unmatched answers, counted as samples).

    A tie for the most votes gives label None, so the result never depends on the order of samples.
    """
    counts = Counter(c for c in classes if c is not None)
    if not counts:
        return Vote(None, 0, len(classes))
    top = max(counts.values())
    winners = [c for c, n in counts.items() if n == top]
    return Vote(winners[0] if len(winners) == 1 else None, top, len(classes))


def vote_answers(answers: Sequence[str], class_names: Sequence[str]) -> Vote:
    """Match every sampled answer to a class name, then take the majority vote."""
    return majority_vote([match_answer(answer, class_names) for answer in answers])


def unlabelled_pool(table: ClipTable, pool_size: int | None, seed: int) -> np.ndarray:
    """Rows of the training-pool clips to pseudo-label: a seeded subset of `pool_size`, labels unread."""
    rows = np.flatnonzero(table.split_mask(SUPPORT_SPLIT))
    if pool_size is None or pool_size >= len(rows):
        return rows
    rng = np.random.default_rng(seeded_int(_SEED_TAG, "pool", int(seed), table.name))
    return np.sort(rng.choice(rows, size=pool_size, replace=False))


class AnswerStore:
    """Sampled answers per clip id in one JSON file under the cache folder, keyed by what changes them."""

    def __init__(self, folder: Path, key_fields: Mapping[str, Any], label: str) -> None:
        self.path = Path(folder) / f"{label}-{digest(key_fields)[:16]}.json"
        self.key_fields = json.loads(canonical_json(key_fields))  # as stored: plain JSON values

    def load(self) -> dict[str, list[str]]:
        if not self.path.is_file():
            return {}
        return dict(json.loads(self.path.read_text())["answers"])

    def add(self, answers: Mapping[str, list[str]]) -> None:
        """Merge `answers` into the file (atomically, under a lock: parallel jobs may share it)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.path) + ".lock"):
            merged = {**self.load(), **answers}
            write_json_atomic(self.path, {"key": self.key_fields, "answers": merged}, indent=1, sort_keys=True)


def answer_store(cache_dir: Path, backbone: Backbone, prompt: ClipPrompt, settings: PseudoLabelSettings,
                 table: ClipTable) -> AnswerStore:
    """The store for this dataset, backbone, prompt (when the backbone reads it) and sampling settings.

    The dataset's name and source are part of the key because clip ids are only unique within a
    dataset: two datasets whose clips share ids must never read each other's answers.
    """
    fields = {
        "dataset": {"name": table.name, "source": table.source},
        "backbone": backbone.key_fields(),
        "prompt": prompt.key_fields() if backbone.uses_prompt_text else None,
        "sampling": {"samples": settings.samples, "temperature": settings.temperature, "top_p": settings.top_p,
                     "max_new_tokens": settings.max_new_tokens, "seed": settings.seed},
    }
    return AnswerStore(Path(cache_dir) / STORE_FOLDER, fields, backbone.name)


def answer_pool(backbone: Backbone, table: ClipTable, prompt: ClipPrompt, rows: Sequence[int],
                settings: PseudoLabelSettings, store: AnswerStore | None = None,
                device: torch.device | None = None) -> tuple[dict[str, list[str]], int]:
    """Sampled answers for every pool clip, and how many clips had to be generated (not in the store).

    Generation runs on `device` (default CPU). Each batch is stored as soon as it is answered, so an
    interrupted job loses one batch at most.
    """
    answers = store.load() if store is not None else {}
    todo = [table.clips[i] for i in rows if table.clips[i].id not in answers]

    def sample(waves: list[np.ndarray], prompts: list[str], clips: list[Clip]) -> list[list[str]]:
        seeds = [seeded_int(_SEED_TAG, "clip", int(settings.seed), c.id) for c in clips]
        return backbone.sample_answers(waves, prompts, seeds, settings.samples, settings.temperature,
                                       settings.top_p, settings.max_new_tokens)

    for batch, sampled in generate_in_batches(backbone, table, prompt, todo, settings.batch_size,
                                              device or torch.device("cpu"), sample):
        new = {c.id: list(texts) for c, texts in zip(batch, sampled, strict=True)}
        answers.update(new)
        if store is not None:
            store.add(new)
    return {table.clips[i].id: answers[table.clips[i].id] for i in rows}, len(todo)


@dataclass(frozen=True)
class PoolLabels:
    """The pool's rows in the clip table, every clip's sampled answers and its vote."""

    rows: np.ndarray
    answers: dict[str, list[str]]
    votes: dict[int, Vote]

    @classmethod
    def from_answers(cls, table: ClipTable, rows: Sequence[int], answers: Mapping[str, list[str]]) -> PoolLabels:
        votes = {int(i): vote_answers(answers[table.clips[i].id], table.class_names) for i in rows}
        return cls(np.asarray(rows, dtype=np.int64), dict(answers), votes)

    def kept(self, min_agreement: float) -> dict[int, int]:
        """Row -> pseudo label (dataset class index) of the clips that pass the agreement filter."""
        return {row: vote.label for row, vote in self.votes.items() if vote.kept(min_agreement)}


def augment_episode(episode: Episode, pseudo: Mapping[int, int]) -> Episode:
    """The episode with pool clips added to its support: those outside its support and queries whose
    pseudo label is one of its classes, labelled with that class's local index. Queries are unchanged."""
    local = {int(c): i for i, c in enumerate(episode.classes)}
    taken = set(episode.support.tolist()) | set(episode.query.tolist())
    added = sorted(row for row, label in pseudo.items() if label in local and row not in taken)
    labels = [local[pseudo[row]] for row in added]
    sets = episode.support_label_sets
    return dataclasses.replace(
        episode, support=np.concatenate([episode.support, np.asarray(added, dtype=np.int64)]),
        support_labels=np.concatenate([episode.support_labels, np.asarray(labels, dtype=np.int64)]),
        support_label_sets=None if sets is None else (*sets, *((y,) for y in labels)))


def write_tsv(path: Path, table: ClipTable, pool: PoolLabels, min_agreement: float) -> None:
    """One line per pool clip: pseudo label, agreement, kept, the true label (report only) and the answers."""
    names = table.class_names
    lines = ["clip_id\tpseudo_label\tagreement\tvotes\tkept\ttrue_label\tanswers"]
    for row in pool.rows.tolist():
        clip, vote = table.clips[row], pool.votes[row]
        answers = " | ".join(a.replace("\t", " ").replace("\n", " ").replace("|", "/") for a in pool.answers[clip.id])
        lines.append(f"{clip.id}\t{names[vote.label] if vote.label is not None else '-'}\t{vote.agreement:.4f}\t"
                     f"{vote.votes}/{vote.samples}\t{'yes' if vote.kept(min_agreement) else 'no'}\t"
                     f"{names[clip.label]}\t{answers}")
    Path(path).write_text("\n".join(lines) + "\n")


def pool_report(table: ClipTable, pool: PoolLabels, settings: PseudoLabelSettings, episodes: Sequence[Episode],
                augmented: Sequence[Episode], generated: int) -> dict[str, Any]:
    """What results.json says about the pseudo labels; the only place true labels of the pool are read."""
    kept = pool.kept(settings.min_agreement)
    right = sum(table.clips[row].label == label for row, label in kept.items())
    added = [len(a.support) - len(e.support) for e, a in zip(episodes, augmented, strict=True)]
    return {
        "pool": len(pool.rows), "kept": len(kept),
        "kept_accuracy": 100.0 * right / len(kept) if kept else None,
        "ties": sum(v.label is None and v.votes > 0 for v in pool.votes.values()),
        "added_per_episode_mean": float(np.mean(added)) if added else 0.0,
        "generated": generated, "samples": settings.samples, "min_agreement": settings.min_agreement,
        "temperature": settings.temperature, "top_p": settings.top_p, "tsv": TSV_NAME,
    }


def check_single_label(table: ClipTable) -> None:
    """Pseudo-labelling gives each pool clip one label; checked up front, before any model loads."""
    if table.multi_label:
        raise ConfigError(f"pseudo-labelling gives one label per clip; {table.name} is multi-label",
                          "use a single-label dataset with method=pseudo_label")


def pseudo_label_episodes(settings: PseudoLabelSettings, backbone: Backbone, table: ClipTable, prompt: ClipPrompt,
                          episodes: Sequence[Episode], out_dir: Path, cache_dir: Path | None,
                          device: torch.device | None = None) -> tuple[list[Episode], dict[str, Any]]:
    """Label the pool (answers from the store where possible, generated on `device` otherwise), write
    the TSV, and return the episodes with augmented support sets and the report. `cache_dir=None` keeps
    no answers between jobs."""
    check_single_label(table)
    rows = unlabelled_pool(table, settings.pool_size, settings.seed)
    store = answer_store(cache_dir, backbone, prompt, settings, table) if cache_dir is not None else None
    answers, generated = answer_pool(backbone, table, prompt, rows, settings, store, device)
    pool = PoolLabels.from_answers(table, rows, answers)
    write_tsv(Path(out_dir) / TSV_NAME, table, pool, settings.min_agreement)
    kept = pool.kept(settings.min_agreement)
    augmented = [augment_episode(episode, kept) for episode in episodes]
    return augmented, pool_report(table, pool, settings, episodes, augmented, generated)
