"""One entry of a manifest in the reference code's JSON schema, read with the field rules of each file kind.

A manifest is a JSON list (or an object whose values are the entries) of multiple-choice questions
about one audio file each. Every kind has `wav` (an absolute path on the authors' cluster) and
`question` (the whole question with its options), and all but ASVspoof's have `options` (the option
names, in letter order); the kinds differ in where the label and the answer are:

- single-label (ESC-50, VGGSound): `mapped_label` is the class name, `answer` the letter, `label` a
  class code (`/m/07rwj43`, `vgg_47`). ASVspoof: `mapped_label` and `answer` are the class name, and
  there is no `options` list (the question lists both classes).
- AudioSet per-label: one entry per positive label of a clip; `original_labels` lists the clip's
  labels, `original_sample_id` names the clip and `label_index_in_original` the label asked about.
  Training files put the class in `mapped_label`; test files in `correct_label` (the letter in
  `correct_answer`), and have no `mapped_label`.
- pseudo-labelled (`pseudo_label_confidence`, `trial_predictions` or `vote_count` present):
  `mapped_label` holds the MODEL's label, not the truth. The truth is `label` (a class code) in the
  single-label files, `original_labels[label_index_in_original]` in AudioSet's.
- audio-visual: a `video` path next to `wav`.

The row's label is always `mapped_label`, else `correct_label`; a loader reading `label` would use
the truth of a pseudo-labelled file, or a class code.

Pseudo-label confidence (the authors' rule, kept as their files give it): votes / trials, where
votes counts the trial answers whose raw string equals the label exactly (no normalisation: "cricket"
and "" do not vote for "crickets"), the file's `vote_count` when it has one, and trials is the number
of `trial_predictions` (8 in every shipped file), else `pseudo_trials`. AudioSet's pseudo-labelled
files carry only `pseudo_label_confidence`; their votes are that confidence times the trials.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calm.errors import DataError

__all__ = ["PSEUDO_FIELDS", "ManifestEntry", "read_manifest"]

PSEUDO_FIELDS = ("pseudo_label_confidence", "trial_predictions", "vote_count")
SCHEMA = (
    "each entry needs wav, question and mapped_label (or correct_label, as in the authors' AudioSet test "
    "files), and options, when given, is a list of names; see README 'Manifest dataset'"
)


@dataclass(frozen=True)
class ManifestEntry:
    """One question of a manifest. `label`: the class the row is labelled with (see the module docstring);
    `code`: the file's own `label` field (a class code; in pseudo-labelled files the truth)."""

    index: int
    wav: str
    question: str
    options: tuple[str, ...]
    label: str
    answer: str | None = None
    video: str | None = None
    original_labels: tuple[str, ...] = ()
    sample: str | None = None
    code: str | None = None
    true_label: str | None = None
    votes: int | None = None
    trials: int | None = None
    file_confidence: float | None = None

    @property
    def pseudo(self) -> bool:
        return self.trials is not None

    @property
    def confidence(self) -> float | None:
        """votes / trials (the authors' rule over raw answer strings); None for a labelled entry."""
        return None if self.votes is None or not self.trials else self.votes / self.trials


def read_manifest(path: Path, pseudo_trials: int = 8) -> list[ManifestEntry]:
    """Every entry of one manifest file, in file order; a DataError names the file and entry at fault."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise DataError(
            f"cannot read manifest {path}: {err}", "check dataset.manifests and dataset.manifests_dir"
        ) from err
    except json.JSONDecodeError as err:
        raise DataError(
            f"manifest {path} is not JSON ({err})", "point dataset.manifests at the authors' .json files"
        ) from err
    if isinstance(data, Mapping):
        data = list(data.values())
    if not isinstance(data, list) or not data:
        raise DataError(f"manifest {path} holds no entries (expected a JSON list of questions)", SCHEMA)
    return [_entry(path, i, item, pseudo_trials) for i, item in enumerate(data)]


def _entry(path: Path, index: int, item: Any, pseudo_trials: int) -> ManifestEntry:
    where = f"manifest {path} entry {index}"
    if not isinstance(item, Mapping):
        raise DataError(f"{where} is not an object", SCHEMA)
    label = item.get("mapped_label", item.get("correct_label"))
    missing = [k for k in ("wav", "question") if not item.get(k)] + ([] if label else ["mapped_label"])
    if missing:
        raise DataError(f"{where} has no {', '.join(missing)}", SCHEMA)
    options = item.get("options", [])
    if not isinstance(options, Sequence) or isinstance(options, str) or not all(isinstance(o, str) for o in options):
        raise DataError(f"{where}: options must be a list of names, got {options!r}", SCHEMA)
    originals = tuple(str(x) for x in item.get("original_labels") or ())
    answer = item.get("answer", item.get("correct_answer"))
    sample = item.get("original_sample_id")
    fields = dict(
        index=index,
        wav=str(item["wav"]),
        question=str(item["question"]),
        options=tuple(options),
        label=str(label),
        answer=None if answer is None else str(answer),
        video=str(item["video"]) if item.get("video") else None,
        original_labels=originals,
        sample=None if sample is None else str(sample),
        code=None if item.get("label") is None else str(item["label"]),
    )
    if not any(k in item for k in PSEUDO_FIELDS):
        return ManifestEntry(**fields)
    try:
        return ManifestEntry(**fields, **_pseudo_fields(where, item, str(label), originals, pseudo_trials))
    except (TypeError, ValueError) as err:
        raise DataError(
            f"{where}: bad pseudo-label fields ({err})",
            "vote_count and label_index_in_original are "
            "integers and pseudo_label_confidence a number, as in the authors' files",
        ) from err


def _pseudo_fields(
    where: str, item: Mapping[str, Any], label: str, originals: tuple[str, ...], pseudo_trials: int
) -> dict[str, Any]:
    """Truth, votes and trials of a pseudo-labelled entry (the module docstring states the rule)."""
    trials_given = item.get("trial_predictions")
    trials = len(trials_given) if isinstance(trials_given, list) and trials_given else int(pseudo_trials)
    file_confidence = item.get("pseudo_label_confidence")
    if "vote_count" in item:
        votes = int(item["vote_count"])
    elif isinstance(trials_given, list) and trials_given:
        votes = sum(str(answer) == label for answer in trials_given)
    elif file_confidence is not None:
        votes = round(float(file_confidence) * trials)
    else:
        raise DataError(
            f"{where} is pseudo-labelled but gives no votes",
            "give vote_count, trial_predictions or pseudo_label_confidence, as the authors' pseudo-labelled files do",
        )
    position = item.get("label_index_in_original")
    if originals and position is not None and 0 <= int(position) < len(originals):
        truth: str | None = originals[int(position)]
    elif len(originals) == 1:
        truth = originals[0]
    else:
        truth = str(item["label"]) if item.get("label") is not None else None
    return dict(
        true_label=truth,
        votes=votes,
        trials=trials,
        file_confidence=None if file_confidence is None else float(file_confidence),
    )


def dumps(values: Sequence[str]) -> str:
    """A list kept in a clip's string-valued metadata (options, original labels), as JSON."""
    return json.dumps(list(values), ensure_ascii=False)
