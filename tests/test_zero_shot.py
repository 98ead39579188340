"""The zero-shot baseline end to end on real speech: Whisper tiny.en's answer is its transcription,
so spoken digits in a `folder` dataset whose classes are the digit words are mostly named right; and
with a fake backbone, that generation loads the model once, batches the clips and stays on the CPU
under trainer.accelerator=cpu."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from calm.baselines.generation import generation_device
from calm.baselines.zero_shot import answer_clips
from calm.data.prompts import Prompt
from calm.data.table import Clip, ClipTable
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


class GreedyFake:
    """Answers with the class its audio level names; `load` builds a CPU module, as real backbones do."""

    name = "fake"
    sample_rate = 16000
    uses_prompt_text = False

    def __init__(self) -> None:
        self.model: torch.nn.Module | None = None
        self.loads = 0
        self.batches: list[int] = []

    def load(self) -> torch.nn.Module:
        self.loads += 1
        self.model = torch.nn.Linear(1, 1)
        return self.model

    def generate_answers(self, waves: list[np.ndarray], prompts: list[str], max_new_tokens: int = 32) -> list[str]:
        self.batches.append(len(waves))
        return [WORDS[round(float(w.mean()) * 100)] for w in waves]


def test_generation_under_accelerator_cpu_stays_on_the_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    clips = []
    for level in range(5):
        path = tmp_path / f"{level}.wav"
        sf.write(path, np.full(1600, level / 100, dtype=np.float32), 16000, subtype="FLOAT")
        clips.append(Clip(f"c{level}", path, level, "test"))
    table = ClipTable("toy", tuple(clips), tuple(WORDS))
    backbone = GreedyFake()
    answers = answer_clips(backbone, table, Prompt(), ["c4", "c0", "c4", "c2"], batch_size=2,
                           device=generation_device({"accelerator": "cpu"}))
    assert answers.classes == {"c4": 4, "c0": 0, "c2": 2} and answers.unmatched == []
    assert backbone.loads == 1 and backbone.batches == [2, 1], "each clip answered once, in batches"
    assert next(backbone.model.parameters()).device == torch.device("cpu")
