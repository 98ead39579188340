"""Pseudo-labelled support (docs/design/formulas.md): the backbone labels clips by sampling answers, and the
clips it labels consistently join (or, in the authors' mode, replace) each episode's support set S.

- Pool (`support=union`, the clean default): a fixed random subset (`pool_size`, seeded; all when
  null) of the training pool, drawn without reading any label. Per episode, the pool clips outside
  its support and query sets whose pseudo label is one of the episode's classes are added to S with
  that label; the refit estimators are reported as `<name>+pl`.
- `support=replace` (the authors': S = V): the pool is the episodes' support clips themselves, and
  each episode's support becomes its clips that got a pseudo label of one of the episode's classes,
  with that label; clips without one are dropped (the authors' pseudo-labelled file keeps only the
  clips that passed). Every report of the job is then fitted on those labels, under its plain row
  names (`calm.reports.generation.PseudoLabels.relabel`), and never reads the true support labels.
- Pseudo label: `samples` sampled answers per clip (`calm.baselines.decoding`, seeded per clip). With
  `prompt=clean` each answer is matched to a class name; with `prompt=multiple_choice` (the authors')
  the job's multiple-choice prompt is asked and each answer is matched to the clip's offered options
  (their names). The class named most often is the label if its votes are at least `min_agreement`
  of the base, where the base is all samples (`agreement=all`) or only the matched answers
  (`agreement=non_empty`, the authors'); a tie for the most votes labels nothing (`ties=none`) or goes
  to the tied class named first (`ties=first_seen`, the authors': their vote is a Counter's
  most_common).
- The pool clips' true labels are read only for the report: `pseudo_labels.tsv` in the job folder
  and the accuracy of the kept labels in results.json. Under `prompt=multiple_choice` the options
  themselves contain each clip's true label (so the backbone sees it, exactly as in the authors'
  runs); the report says so (`options_show_true_label`).
- Answers are stored under the cache folder (`calm.baselines.answer_store`), keyed by the dataset
  (name and source: clip ids are unique only within one), the backbone, the prompt and the sampling
  settings, so a sweep over shots or estimators answers each clip once; each answer is stored with its
  clip's audio and prompt-text digests, and one whose clip's inputs changed (audio overwritten, label
  corrected under the multiple-choice prompt) is generated again.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import torch

from calm.backbones.base import Backbone
from calm.baselines.answer_matching import match_answer
from calm.baselines.answer_store import AnswerStore
from calm.baselines.decoding import SAMPLING_TAG, Sampling
from calm.baselines.generation import stored_or_generated
from calm.config.builder import build
from calm.data.manifest_prompt import ManifestPrompt
from calm.data.prompts import ClipPrompt, PaperPrompt
from calm.data.table import SUPPORT_SPLIT, Clip, ClipTable
from calm.errors import ConfigError, DataError
from calm.extraction.row_inputs import model_key_fields
from calm.protocols import Episode
from calm.storage.atomic_write import write_lines_atomic
from calm.storage.digests import seeded_int
from calm.storage.file_digests import FileDigests

TSV_NAME = "pseudo_labels.tsv"
STORE_FOLDER = "pseudo_label_answers"
SUFFIX = "+pl"
PROMPTS = ("clean", "multiple_choice")
AGREEMENTS = ("all", "non_empty")
TIES = ("none", "first_seen")
SUPPORTS = ("union", "replace")


@dataclass(frozen=True)
class PseudoLabelSettings:
    """The `pseudo_label` block of a method config (configs/method/pseudo_label.yaml holds the defaults a
    job runs with and says what each key means), checked before any model is loaded."""

    refit: tuple[str, ...]
    samples: int = 8
    min_agreement: float = 0.5
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 16
    pool_size: int | None = 200
    seed: int = 0
    batch_size: int = 8
    temperature_range: tuple[float, float] | None = None
    prompt: str = "clean"
    agreement: str = "all"
    ties: str = "none"
    support: str = "union"

    def __post_init__(self) -> None:
        object.__setattr__(self, "refit", tuple(self.refit or ()))  # config lists, kept hashable and comparable
        if self.temperature_range is not None:
            object.__setattr__(self, "temperature_range", tuple(self.temperature_range))

    @classmethod
    def from_config(
        cls, cfg: Mapping[str, Any], estimators: Collection[str], prompt: ClipPrompt
    ) -> PseudoLabelSettings:
        """Settings from the `method.pseudo_label` block (built by `calm.config.builder.build`: an unknown
        or missing key is a ConfigError naming the accepted ones), checked against the method's
        `estimators` and the job's `prompt`."""
        settings = build(cfg, "method", cls=cls, key="method.pseudo_label")
        settings.check(estimators, prompt)
        return settings

    def check(self, estimators: Collection[str], prompt: ClipPrompt) -> None:
        if not self.refit or not set(self.refit) <= set(estimators):
            raise ConfigError(
                f"pseudo_label.refit={list(self.refit)} must name estimators of the method ({sorted(estimators)})",
                "e.g. pseudo_label.refit=[calm,sav]",
            )
        self.sampling.check(self.samples, "pseudo_label")
        for name, allowed in (("prompt", PROMPTS), ("agreement", AGREEMENTS), ("ties", TIES), ("support", SUPPORTS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"pseudo_label.{name} must be one of {list(allowed)}, got {getattr(self, name)!r}",
                    f"set method.pseudo_label.{name}={allowed[0]} (clean) or {allowed[1]} (the authors')",
                )
        if (
            isinstance(self.min_agreement, bool)
            or not isinstance(self.min_agreement, Real)
            or not 0 < self.min_agreement <= 1
        ):
            raise ConfigError(
                f"pseudo_label.min_agreement must be in (0, 1], got {self.min_agreement!r}",
                "set min_agreement to e.g. 0.5 (at least half of the samples agree)",
            )
        for name in ("max_new_tokens", "batch_size") + (("pool_size",) if self.pool_size is not None else ()):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
                raise ConfigError(
                    f"pseudo_label.{name} must be a positive integer, got {value!r}",
                    f"set pseudo_label.{name} to a positive number"
                    + (" or null (the whole training pool)" if name == "pool_size" else ""),
                )
        if self.prompt == "clean" and isinstance(prompt, (PaperPrompt, ManifestPrompt)):
            raise ConfigError(
                f"pseudo-labelling with pseudo_label.prompt=clean cannot use prompt={prompt.name}: its "
                "options show each clip's true label, which the unlabelled pool must never see",
                "use prompt=clean, or method.pseudo_label.prompt=multiple_choice to ask the authors' "
                "multiple-choice question knowingly (its options contain the true label)",
            )
        if self.prompt == "multiple_choice" and not isinstance(prompt, (PaperPrompt, ManifestPrompt)):
            raise ConfigError(
                "pseudo_label.prompt=multiple_choice needs a multiple-choice prompt, got "
                f"prompt={getattr(prompt, 'name', prompt)}",
                "use prompt=paper (or prompt=manifest with dataset=manifest: each entry's own "
                "question and options), or method.pseudo_label.prompt=clean",
            )

    def notes(self) -> list[str]:
        """What a reader of the `+pl` rows must know under the authors' modes (results.json notes)."""
        notes = []
        if self.prompt == "multiple_choice":
            notes.append(
                "pseudo labels come from the multiple-choice prompt, whose options contain each clip's "
                "true label (as in the authors' runs), so the backbone is shown the answer among the choices"
            )
        if self.support == "replace":
            notes.append(
                "every row of this job is fitted on the support set relabelled by the backbone (S = V): "
                "clips without an agreed pseudo label are dropped; the true support labels are never read"
            )
        return notes

    @property
    def sampling(self) -> Sampling:
        return Sampling(self.temperature, self.top_p, self.temperature_range, self.seed)

    def refit_methods(self, methods: Mapping[str, Any]) -> dict[str, Any]:
        """The estimators refitted on S ∪ V (support=union), named `<name>+pl`."""
        return {f"{name}{SUFFIX}": methods[name] for name in self.refit}


@dataclass(frozen=True)
class Vote:
    """One clip's majority vote: the class (None: no label), its votes, and the base they are counted
    against (all samples, or only the matched ones)."""

    label: int | None
    votes: int
    samples: int

    @property
    def agreement(self) -> float:
        return self.votes / self.samples if self.samples else 0.0

    def kept(self, min_agreement: float) -> bool:
        """A labelled clip whose class got at least `min_agreement` of the base (4 of 8 pass 0.5)."""
        return self.label is not None and self.votes >= min_agreement * self.samples - 1e-9


def majority_vote(classes: Sequence[int | None], agreement: str = "all", ties: str = "none") -> Vote:
    """The class named by the most samples; None entries are unmatched answers.

    `agreement=all`: the base is every sample; `non_empty`: only the matched ones. `ties=none`: a tie for
    the most votes gives label None (the result never depends on the order of samples); `first_seen`:
    the tied class named first wins.
    """
    counts = Counter(c for c in classes if c is not None)
    base = len(classes) if agreement == "all" else sum(counts.values())
    if not counts:
        return Vote(None, 0, base)
    top = max(counts.values())
    winners = [c for c, n in counts.items() if n == top]  # in first-seen order (Counter keeps insertion order)
    return Vote(winners[0] if len(winners) == 1 or ties == "first_seen" else None, top, base)


def vote_answers(
    answers: Sequence[str], class_names: Sequence[str], agreement: str = "all", ties: str = "none"
) -> Vote:
    """Match every sampled answer to a class name, then take the majority vote."""
    return majority_vote([match_answer(answer, class_names) for answer in answers], agreement, ties)


def option_classes(answers: Sequence[str], offered: Sequence[int], class_names: Sequence[str]) -> list[int | None]:
    """Each answer matched to one of the clip's offered options (by name), as a dataset class index."""
    names = [class_names[c] for c in offered]
    return [None if (i := match_answer(answer, names)) is None else offered[i] for answer in answers]


def unlabelled_pool(table: ClipTable, pool_size: int | None, seed: int) -> np.ndarray:
    """Rows of the training-pool clips to pseudo-label: a seeded subset of `pool_size`, labels unread."""
    rows = np.flatnonzero(table.split_mask(SUPPORT_SPLIT))
    if pool_size is None or pool_size >= len(rows):
        return rows
    rng = np.random.default_rng(seeded_int(SAMPLING_TAG, "pool", int(seed), table.name))
    return np.sort(rng.choice(rows, size=pool_size, replace=False))


def answer_store(
    cache_dir: Path, backbone: Backbone, prompt: ClipPrompt, settings: PseudoLabelSettings, table: ClipTable
) -> AnswerStore:
    """The store for this dataset, backbone and prompt (keyed as rows are:
    `calm.extraction.row_inputs.model_key_fields`,
    weights by content) and sampling settings.

    The dataset's name and source are part of the key because clip ids are only unique within a
    dataset: two datasets whose clips share ids must never read each other's answers.
    """
    digests = FileDigests(cache_dir)
    fields = {
        "dataset": {"name": table.name, "source": table.source},
        **model_key_fields(backbone, prompt, digests),
        "sampling": {
            "samples": settings.samples,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "max_new_tokens": settings.max_new_tokens,
            "seed": settings.seed,
        },
    }
    if settings.temperature_range is not None:  # absent otherwise, so the stores of earlier runs stay valid
        fields["sampling"]["temperature_range"] = list(settings.temperature_range)
    return AnswerStore(Path(cache_dir) / STORE_FOLDER, fields, backbone.name, digests)


def answer_pool(
    backbone: Backbone,
    table: ClipTable,
    prompt: ClipPrompt,
    rows: Sequence[int],
    settings: PseudoLabelSettings,
    store: AnswerStore | None = None,
    device: torch.device | None = None,
) -> tuple[dict[str, list[str]], int]:
    """Sampled answers for every pool clip, and how many clips had to be generated (not in the store, or
    stored from other inputs: another audio content or rendered prompt text, see `AnswerStore.current`).

    Generation runs on `device` (default CPU). Each batch is stored as soon as it is answered, so an
    interrupted job loses one batch at most.
    """

    def sample(waves: list[np.ndarray], prompts: list[str], clips: list[Clip]) -> list[list[str]]:
        return [
            list(texts)
            for texts in settings.sampling.sample(
                backbone, waves, prompts, [c.id for c in clips], settings.samples, settings.max_new_tokens
            )
        ]

    clips = [table.clips[i] for i in rows]
    generation = {"batch_size": settings.batch_size, "device": device or torch.device("cpu"), "generate": sample}
    return stored_or_generated(backbone, table, prompt, clips, store, **generation)


@dataclass(frozen=True)
class PoolLabels:
    """The pool's rows in the clip table, every clip's sampled answers and its vote."""

    rows: np.ndarray
    answers: dict[str, list[str]]
    votes: dict[int, Vote]

    @classmethod
    def from_answers(
        cls,
        table: ClipTable,
        rows: Sequence[int],
        answers: Mapping[str, list[str]],
        settings: PseudoLabelSettings | None = None,
        prompt: ClipPrompt | None = None,
    ) -> PoolLabels:
        """Each row's vote under `settings` (default: the clean rules); `prompt` offers the options
        answers are matched to under `settings.prompt=multiple_choice`."""
        settings = settings or PseudoLabelSettings(refit=())
        votes = {}
        for row in rows:
            clip = table.clips[row]
            if settings.prompt == "multiple_choice":
                classes = option_classes(answers[clip.id], prompt.option_ids(clip, table), table.class_names)
            else:
                classes = [match_answer(answer, table.class_names) for answer in answers[clip.id]]
            votes[int(row)] = majority_vote(classes, settings.agreement, settings.ties)
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
        episode,
        support=np.concatenate([episode.support, np.asarray(added, dtype=np.int64)]),
        support_labels=np.concatenate([episode.support_labels, np.asarray(labels, dtype=np.int64)]),
        support_label_sets=None if sets is None else (*sets, *((y,) for y in labels)),
    )


def replace_support(episode: Episode, pseudo: Mapping[int, int]) -> Episode:
    """The episode whose support is V: its support clips with a pseudo label of one of its classes,
    labelled with that label (local index); the true support labels are never read. Queries unchanged."""
    local = {int(c): i for i, c in enumerate(episode.classes)}
    kept = [int(row) for row in episode.support.tolist() if pseudo.get(int(row)) in local]
    labels = [local[pseudo[row]] for row in kept]
    missing = sorted(set(range(len(local))) - set(labels))
    if missing:
        raise DataError(
            f"pseudo_label.support=replace: episode {episode.index} keeps no support clip of class(es) "
            f"{[int(episode.classes[i]) for i in missing]} (no pseudo label of theirs passed the vote)",
            "lower method.pseudo_label.min_agreement, raise shots, or use method.pseudo_label.support=union",
        )
    return dataclasses.replace(
        episode,
        support=np.asarray(kept, dtype=np.int64),
        support_labels=np.asarray(labels, dtype=np.int64),
        support_label_sets=None if episode.support_label_sets is None else tuple((y,) for y in labels),
    )


def write_tsv(path: Path, table: ClipTable, pool: PoolLabels, min_agreement: float) -> None:
    """One line per pool clip: pseudo label, agreement, kept, the true label (report only) and the answers."""
    names = table.class_names
    lines = ["clip_id\tpseudo_label\tagreement\tvotes\tkept\ttrue_label\tanswers"]
    for row in pool.rows.tolist():
        clip, vote = table.clips[row], pool.votes[row]
        answers = " | ".join(a.replace("\t", " ").replace("\n", " ").replace("|", "/") for a in pool.answers[clip.id])
        lines.append(
            f"{clip.id}\t{names[vote.label] if vote.label is not None else '-'}\t{vote.agreement:.4f}\t"
            f"{vote.votes}/{vote.samples}\t{'yes' if vote.kept(min_agreement) else 'no'}\t"
            f"{names[clip.label]}\t{answers}"
        )
    write_lines_atomic(path, lines)


def pool_report(
    table: ClipTable,
    pool: PoolLabels,
    settings: PseudoLabelSettings,
    episodes: Sequence[Episode],
    augmented: Sequence[Episode],
    generated: int,
) -> dict[str, Any]:
    """What results.json says about the pseudo labels; the only place true labels of the pool are read."""
    kept = pool.kept(settings.min_agreement)
    right = sum(table.clips[row].label == label for row, label in kept.items())
    added = [len(a.support) - len(e.support) for e, a in zip(episodes, augmented, strict=True)]
    relabelled = settings.support == "replace"
    return {
        "pool": len(pool.rows),
        "kept": len(kept),
        "kept_accuracy": 100.0 * right / len(kept) if kept else None,
        "ties": sum(v.label is None and v.votes > 0 for v in pool.votes.values()),
        # union: pool clips added per episode; replace: support clips dropped per episode (no pseudo label)
        "added_per_episode_mean": float(np.mean(added)) if added and not relabelled else 0.0,
        "dropped_per_episode_mean": float(-np.mean(added)) if added and relabelled else 0.0,
        "generated": generated,
        "samples": settings.samples,
        "min_agreement": settings.min_agreement,
        "temperature": settings.temperature,
        "top_p": settings.top_p,
        "tsv": TSV_NAME,
        "temperature_range": list(settings.temperature_range) if settings.temperature_range else None,
        "prompt": settings.prompt,
        "agreement": settings.agreement,
        "tie_rule": settings.ties,
        "support": settings.support,
        "options_show_true_label": settings.prompt == "multiple_choice",
    }


def check_single_label(table: ClipTable) -> None:
    """Pseudo-labelling gives each pool clip one label; checked up front, before any model loads."""
    if table.multi_label:
        raise ConfigError(
            f"pseudo-labelling gives one label per clip; {table.name} is multi-label",
            "use a single-label dataset with method=pseudo_label",
        )


def pseudo_label_episodes(
    settings: PseudoLabelSettings,
    backbone: Backbone,
    table: ClipTable,
    prompt: ClipPrompt,
    episodes: Sequence[Episode],
    out_dir: Path,
    cache_dir: Path | None,
    device: torch.device | None = None,
) -> tuple[list[Episode], dict[str, Any]]:
    """Label the pool (answers from the store where possible, generated on `device` otherwise), write
    the TSV, and return the episodes with augmented (or, under support=replace, relabelled) support
    sets and the report. `cache_dir=None` keeps
    no answers between jobs."""
    check_single_label(table)
    if settings.support == "replace":
        rows = np.unique(np.concatenate([e.support for e in episodes])) if episodes else np.empty(0, np.int64)
    else:
        rows = unlabelled_pool(table, settings.pool_size, settings.seed)
    store = answer_store(cache_dir, backbone, prompt, settings, table) if cache_dir is not None else None
    answers, generated = answer_pool(backbone, table, prompt, rows, settings, store, device)
    pool = PoolLabels.from_answers(table, rows, answers, settings, prompt)
    write_tsv(Path(out_dir) / TSV_NAME, table, pool, settings.min_agreement)
    kept = pool.kept(settings.min_agreement)
    grow = replace_support if settings.support == "replace" else augment_episode
    augmented = [grow(episode, kept) for episode in episodes]
    return augmented, pool_report(table, pool, settings, episodes, augmented, generated)
