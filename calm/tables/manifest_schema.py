"""Entries of manifests in the authors' exact schema (field names and nesting of their SAVs/data files):
single-label (ESC-50 / VGGSound), pseudo-labelled, AudioSet per-label (training and test kinds),
audio-visual and ASVspoof entries. The one writer of such files: the paper table's smoke run writes its
small manifests with it (calm.tables.smoke_manifests) and the tests write theirs."""

from __future__ import annotations

import json
import string
from collections.abc import Sequence
from pathlib import Path

from calm.storage.atomic_write import write_text_atomic

CAPTION = "What caption does the given audio belong to?"
AUDIOSET_QUESTION = "What audio event is present in this audio clip? Choose from: "
SPOOF_QUESTION = "Is this audio bonafide or spoofed? \n bonafide\n spoofed"


def mcq(wav: str, label: str, options: Sequence[str], code: str | None = None, video: str | None = None) -> dict:
    """A single-label entry as in esc_mcq_*.json / vggsound_mcq_*.json (vgg_video_*.json with `video`)."""
    letters = string.ascii_uppercase
    listed = " ".join(f"{letters[i]}. {name}" for i, name in enumerate(options))
    entry = {"wav": wav}
    if video is not None:
        entry["video"] = video
    entry.update(
        {
            "question": f"{CAPTION}\n{listed}",
            "answer": letters[list(options).index(label)],
            "label": code or f"/m/07rwj{label}",
            "mapped_label": label,
            "options": list(options),
        }
    )
    return entry


def pseudo(entry: dict, model_label: str, trials: Sequence[str]) -> dict:
    """A pseudo-labelled entry as in pseudolabeled_esc_*_8trials.json: `mapped_label` is the model's
    label, `label` keeps the true class code; votes are the raw trial strings equal to the label."""
    votes = sum(t == model_label for t in trials)
    return {
        **entry,
        "mapped_label": model_label,
        "pseudo_label_confidence": votes / len(trials),
        "trial_predictions": list(trials),
        "vote_count": votes,
    }


def audioset(
    wav: str, labels: Sequence[str], sample: int, distractors: Sequence[Sequence[str]], test: bool
) -> list[dict]:
    """One entry per positive label as in audioset_*_individual_mcqs*.json; test files give the class in
    `correct_label`, training files in `mapped_label`; `label_index_in_original` only for several labels."""
    entries = []
    for k, label in enumerate(labels):
        options = [*distractors[k][:1], label, *distractors[k][1:3]]
        listed = ", ".join(f"{string.ascii_uppercase[i]}) {o}" for i, o in enumerate(options))
        entry = {
            "wav": wav,
            "question": AUDIOSET_QUESTION + listed,
            "options": options,
            "correct_answer": "B",
            "correct_answer_index": 1,
        }
        entry["correct_label" if test else "mapped_label"] = label
        entry.update({"original_labels": list(labels), "original_sample_id": sample})
        if len(labels) > 1:
            entry["label_index_in_original"] = k
        entries.append(entry)
    return entries


def spoof(wav: str, label: str) -> dict:
    """An ASVspoof entry as in LA_train.json / LA_eval.json: the class name as answer, no options list."""
    return {"wav": wav, "question": SPOOF_QUESTION, "answer": label, "mapped_label": label}


def write(path: Path, entries: list[dict]) -> Path:
    """A manifest file: the entries as a JSON list."""
    return write_text_atomic(path, json.dumps(entries, indent=2))
