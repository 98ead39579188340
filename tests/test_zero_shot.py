"""The zero-shot baseline end to end on real speech: Whisper tiny.en's answer is its transcription,
so spoken digits in a `folder` dataset whose classes are the digit words are mostly named right."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from calm.pipeline import run_job
from tests.cli import compose_config

WORDS = ["zero", "one", "two", "three", "four"]


def test_zero_shot_answers_are_matched_and_scored_on_the_episodes(tmp_path: Path, fsdd_root: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "digits"
    for digit, word in enumerate(WORDS):
        (root / word).mkdir(parents=True)
        for index in range(4):
            shutil.copy(fsdd_root / "recordings" / f"{digit}_jackson_{index}.wav", root / word)
    monkeypatch.setenv("CALM_CACHE", str(tmp_path / "cache"))
    cfg = compose_config(["backbone=whisper_tiny", "logger=none", "dataset=folder", f"dataset.root={root}",
                          "dataset.test_fraction=0.5", "method=zero_shot", "shots=1", "queries=2", "episodes=2"],
                         tmp_path / "out")
    run_job(cfg)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    row = next(r for r in results["results"] if r["method"] == "zero_shot")
    assert row["episodes"] == 2 and row["accuracy_mean"] >= 60.0
    answers = (tmp_path / "out" / "zero_shot_answers.tsv").read_text().splitlines()
    assert answers[0] == "clip_id\tclass\tanswer" and len(answers) > 1
    named = [line.split("\t") for line in answers[1:]]
    assert all(cls == "-" or cls in WORDS for _, cls, _ in named)
    assert results["zero_shot_unmatched"] == sum(cls == "-" for _, cls, _ in named)
    assert results["cache"]["extracted"] == 0, "zero-shot alone needs no head activations"
