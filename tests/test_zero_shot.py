"""The zero-shot baseline end to end on real speech: Whisper tiny.en's answer is its transcription,
so spoken digits in a `folder` dataset whose classes are the digit words are mostly named right; and
with a fake backbone, that generation loads the model once, batches the clips and stays on the CPU
under trainer.accelerator=cpu."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

from calm.backbones import build_backbone
from calm.baselines.generation import generation_device
from calm.baselines.zero_shot import STORE_FOLDER, ZeroShotSettings, answer_clips, zero_shot_store
from calm.data.prompts import PaperPrompt, Prompt
from calm.data.table import Clip, ClipTable
from calm.errors import ConfigError
from calm.run.pipeline import run_job
from tests.cli import compose_config

WORDS = ["zero", "one", "two", "three", "four"]


def test_zero_shot_answers_are_matched_and_scored_on_the_episodes(
    tmp_path: Path, fsdd_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "digits"
    for digit, word in enumerate(WORDS):
        (root / word).mkdir(parents=True)
        for index in range(4):
            shutil.copy(fsdd_root / "recordings" / f"{digit}_jackson_{index}.wav", root / word)
    monkeypatch.setenv("CALM_CACHE", str(tmp_path / "cache"))
    cfg = compose_config(
        [
            "backbone=whisper_tiny",
            "logger=none",
            "dataset=folder",
            f"dataset.root={root}",
            "dataset.test_fraction=0.5",
            "method=zero_shot",
            "shots=1",
            "queries=2",
            "episodes=2",
        ],
        tmp_path / "out",
    )
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
    answers = answer_clips(
        backbone,
        table,
        Prompt(),
        ["c4", "c0", "c4", "c2"],
        ZeroShotSettings(batch_size=2),
        device=generation_device({"accelerator": "cpu"}),
    )
    assert answers.classes == {"c4": 4, "c0": 0, "c2": 2} and answers.unmatched == []
    assert backbone.loads == 1 and backbone.batches == [2, 1], "each clip answered once, in batches"
    assert next(backbone.model.parameters()).device == torch.device("cpu")


# ---- the authors' decoding and option-letter matching ------------------------------------------


def letter_table(root: Path) -> ClipTable:
    """Five test clips c0..c4 of classes 0..4 (WORDS); clip i's audio is the constant i / 100."""
    clips = []
    for level in range(5):
        path = root / f"{level}.wav"
        sf.write(path, np.full(1600, level / 100, dtype=np.float32), 16000, subtype="FLOAT")
        clips.append(Clip(f"c{level}", path, level, "test"))
    return ClipTable("toy", tuple(clips), tuple(WORDS), source=str(root))


class LetterFake(GreedyFake):
    """Reads the lettered options in its prompt and answers with the letter of the class its audio names;
    the clip of level 3 answers "none"."""

    uses_prompt_text = True

    def key_fields(self, digests: Any = None) -> dict[str, str]:
        return {"family": "letter-fake"}

    def generate_answers(self, waves: list[np.ndarray], prompts: list[str], max_new_tokens: int = 32) -> list[str]:
        answers = []
        for wave, prompt in zip(waves, prompts, strict=True):
            level = round(float(wave.mean()) * 100)
            options = self.options(prompt)
            answers.append("none" if level == 3 else f"The answer is {options[WORDS[level]]}.")
        return answers

    @staticmethod
    def options(prompt: str) -> dict[str, str]:
        """Class name -> its letter, from the prompt's option line "A. x B. y ..."."""
        tokens = prompt.splitlines()[1].split()
        return {
            tokens[i + 1]: tokens[i][0]
            for i in range(0, len(tokens) - 1, 2)
            if tokens[i].endswith(".") and len(tokens[i]) == 2
        }


def test_option_letters_name_the_lettered_option_of_each_clip(tmp_path: Path) -> None:
    """Each clip's options are shuffled per clip, so the same letter names different classes; the letter
    is read through the clip's own options. "none" names no letter and is reported unmatched."""
    table = letter_table(tmp_path)
    prompt = PaperPrompt(options=4)
    settings = ZeroShotSettings(matching="option_letter")
    answers = answer_clips(LetterFake(), table, prompt, list(table.ids), settings)
    assert answers.classes == {"c0": 0, "c1": 1, "c2": 2, "c3": None, "c4": 4}
    assert answers.unmatched == ["c3"]
    letters = {cid: answers.answers[cid][-2] for cid in ("c0", "c1", "c2", "c4")}
    assert len(set(letters.values())) > 1, "the options really are shuffled per clip"
    with pytest.raises(ConfigError, match="option_letter"):
        ZeroShotSettings.from_config({"matching": "option_letter"}, Prompt())


class SamplingFake(GreedyFake):
    """Sampled answers: a word drawn from the torch generator the caller seeded, and the temperature
    it was asked for, so the test sees both the seeding and the temperature per call."""

    def key_fields(self, digests: Any = None) -> dict[str, str]:
        return {"family": "sampling-fake"}

    def sample_answers(self, waves, prompts, seeds, samples, temperature, top_p, max_new_tokens):
        self.batches.append(len(waves))
        out = []
        for seed in seeds:
            generator = torch.Generator().manual_seed(int(seed))
            out.append(
                [f"{WORDS[int(torch.randint(5, (1,), generator=generator))]}@{temperature:.3f}" for _ in range(samples)]
            )
        return out


def test_sampled_answers_are_keyed_by_every_decoding_input(tmp_path: Path) -> None:
    table = letter_table(tmp_path)
    cache = tmp_path / "cache"

    def run(**sampling: Any) -> tuple[dict[str, str], int]:
        settings = ZeroShotSettings(decoding="sample", **sampling)
        backbone = SamplingFake()
        store = zero_shot_store(cache, backbone, Prompt(), settings, table)
        answers = answer_clips(backbone, table, Prompt(), list(table.ids), settings, store=store)
        return answers.answers, sum(backbone.batches)

    first, generated = run(temperature=0.7)
    assert generated == 5 and all(text.endswith("@0.700") for text in first.values())
    again, generated_again = run(temperature=0.7)
    assert (again, generated_again) == (first, 0), "the same inputs read the store"
    hotter, generated_hotter = run(temperature=1.3)
    assert generated_hotter == 5 and all(text.endswith("@1.300") for text in hotter.values()), (
        "another temperature is another store, never the stale answers"
    )
    assert run(temperature=0.7, seed=1)[1] == 5 and run(temperature=0.7, top_p=0.9)[1] == 5
    drawn, _ = run(temperature_range=(0.5, 1.5))
    temperatures = {float(text.split("@")[1]) for text in drawn.values()}
    assert len(temperatures) == 5 and all(0.5 <= t <= 1.5 for t in temperatures), "one draw per call"
    assert run(temperature_range=(0.5, 1.5)) == (drawn, 0)
    assert len(list((cache / STORE_FOLDER).glob("*.json"))) == 5


def test_sampled_decoding_is_seeded_on_tiny_qwen2_audio(tmp_path: Path) -> None:
    """Real sampling through generate: a rerun with the same seed gives the same answers; another seed
    or temperature other ones (a random tiny model's tokens are near-uniform, so sampled answers differ)."""
    cfg = compose_config(["backbone=tiny_qwen2_audio", f"paths.data_dir={tmp_path}"], tmp_path / "out")
    backbone = build_backbone(cfg.backbone, "32-true")
    table = letter_table(tmp_path)
    ids = list(table.ids)[:2]

    def answers(**sampling: Any) -> dict[str, str]:
        settings = ZeroShotSettings(decoding="sample", max_new_tokens=4, batch_size=2, **sampling)
        return answer_clips(backbone, table, Prompt(), ids, settings).answers

    first = answers(temperature=1.1, top_p=0.95)
    assert answers(temperature=1.1, top_p=0.95) == first
    assert answers(temperature=1.1, top_p=0.95, seed=5) != first
    ranged = answers(temperature_range=(0.5, 1.5), top_p=0.95)
    assert answers(temperature_range=(0.5, 1.5), top_p=0.95) == ranged


@pytest.mark.parametrize(
    ("protocol", "expected"),
    [("paper", ("sample", "option_letter", 1.1, 0.95)), ("episodic", ("greedy", "class_names", 1.1, 0.95))],
)
def test_protocol_paper_turns_on_sampling_and_option_letters(
    tmp_path: Path, protocol: str, expected: tuple[str, str, float, float]
) -> None:
    from omegaconf import OmegaConf

    cfg = compose_config(["backbone=qwen2_audio", "method=zero_shot", f"protocol={protocol}", "prompt=paper"], tmp_path)
    settings = ZeroShotSettings.from_config(OmegaConf.to_container(cfg.method.zero_shot, resolve=True), PaperPrompt())
    assert (settings.decoding, settings.matching, settings.temperature, settings.top_p) == expected
    notes = settings.notes(2, 10)
    assert notes == [] if protocol == "episodic" else "2 of 10 answers gave no offered letter" in notes[0]


def test_option_letters_with_a_clean_prompt_are_refused_when_the_job_is_prepared(tmp_path: Path) -> None:
    """protocol=paper turns option-letter matching on; with the default clean prompt the job stops in
    `prepare` (no model loaded, nothing extracted), naming both fixes."""
    from calm.run.job import prepare

    cfg = compose_config(
        [
            "experiment=quickstart",
            "method=zero_shot",
            "protocol=paper",
            "logger=none",
            f"paths.cache_dir={tmp_path / 'cache'}",
        ],
        tmp_path / "job",
    )
    with pytest.raises(ConfigError, match="option_letter") as err:
        prepare(cfg)
    assert "prompt=paper" in err.value.fix and "matching=class_names" in err.value.fix
    assert not (tmp_path / "cache").exists()


# ---- stored answers are keyed by each clip's inputs --------------------------------------------


class PromptSpy(GreedyFake):
    """Reads its prompt: answers with the first offered letter and records (audio level, prompt) per clip."""

    uses_prompt_text = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, str]] = []

    def key_fields(self, digests: Any = None) -> dict[str, str]:
        return {"family": "prompt-spy"}

    def generate_answers(self, waves: list[np.ndarray], prompts: list[str], max_new_tokens: int = 32) -> list[str]:
        self.seen.extend((round(float(w.mean()) * 100), p) for w, p in zip(waves, prompts, strict=True))
        return [f"{p.splitlines()[1][0]} ({len(w)})" for w, p in zip(waves, prompts, strict=True)]


def test_a_stored_answer_is_regenerated_when_its_prompt_text_or_audio_changes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Relabelling a clip changes its multiple-choice text, overwriting its audio its content: only that
    clip is answered again (the store file is the same: same dataset name and source); unchanged clips
    are read from the store, and a store of the older format (no inputs) is regenerated whole."""
    table = letter_table(tmp_path)
    prompt, settings, cache = PaperPrompt(options=4), ZeroShotSettings(matching="option_letter"), tmp_path / "cache"

    def run(table: ClipTable) -> tuple[PromptSpy, Any, dict[str, int]]:
        backbone = PromptSpy()
        store = zero_shot_store(cache, backbone, prompt, settings, table)
        answers = answer_clips(backbone, table, prompt, list(table.ids), settings, store=store)
        return backbone, answers, store.changed

    first, answers, _ = run(table)
    assert len(first.seen) == 5
    again, same, changed = run(table)
    assert again.seen == [] and same.answers == answers.answers and sum(changed.values()) == 0

    relabelled = ClipTable(
        table.name,
        (dataclasses.replace(table.clips[0], label=1), *table.clips[1:]),
        table.class_names,
        source=table.source,
    )
    assert prompt.text_for(relabelled.clips[0], relabelled) != prompt.text_for(table.clips[0], table)
    caplog.set_level(logging.INFO, logger="calm.baselines.answer_store")
    spy, after, changed = run(relabelled)
    assert spy.seen == [(0, prompt.text_for(relabelled.clips[0], relabelled))], "only the relabelled clip"
    assert changed == {"audio": 0, "prompt": 1, "unknown": 0}
    assert "regenerating 1 stored answers whose inputs changed" in caplog.text
    offered = prompt.option_ids(relabelled.clips[0], relabelled)
    assert after.classes["c0"] == offered[0], "the new answer is read against the options it was given"
    assert {cid: after.answers[cid] for cid in ("c1", "c2", "c3", "c4")} == {
        cid: answers.answers[cid] for cid in ("c1", "c2", "c3", "c4")
    }

    sf.write(table.clips[2].audio_path, np.full(3200, 0.02, dtype=np.float32), 16000, subtype="FLOAT")
    spy, overwritten, changed = run(relabelled)
    assert [level for level, _ in spy.seen] == [2] and changed == {"audio": 1, "prompt": 0, "unknown": 0}
    assert overwritten.answers["c2"].endswith("(3200)")

    store_file = next((cache / STORE_FOLDER).glob("*.json"))
    old_format = json.loads(store_file.read_text())
    del old_format["inputs"]
    store_file.write_text(json.dumps(old_format))
    spy, _, changed = run(relabelled)
    assert len(spy.seen) == 5 and changed == {"audio": 0, "prompt": 0, "unknown": 5}, "older stores stay readable"
    assert run(relabelled)[0].seen == []


def spoof_table(root: Path) -> ClipTable:
    clips = []
    for level, label in ((0, 0), (1, 1)):
        path = root / f"spoof{level}.wav"
        sf.write(path, np.full(1600, level / 100, dtype=np.float32), 16000, subtype="FLOAT")
        clips.append(Clip(f"s{level}", path, label, "test"))
    return ClipTable("asvspoof", tuple(clips), ("bonafide", "spoof"), source=str(root))


def test_option_letters_need_a_prompt_that_shows_letters_for_the_table(tmp_path: Path) -> None:
    """prompt=paper_asvspoof_lines lists the spoofing options without letters: option-letter matching
    would leave every answer unmatched, so it is refused for a spoofing table (and without a table);
    its lettered sibling, and any table its lettered `option_format` applies to, are accepted."""
    from omegaconf import OmegaConf

    from calm.data.prompts import build_prompt

    def prompt_of(name: str) -> PaperPrompt:
        cfg = compose_config(["method=zero_shot", f"prompt={name}"], tmp_path / name)
        return build_prompt(OmegaConf.to_container(cfg.prompt, resolve=True))

    lines, lettered = prompt_of("paper_asvspoof_lines"), prompt_of("paper_asvspoof_lettered")
    spoof, digits = spoof_table(tmp_path), letter_table(tmp_path)
    cfg = {"matching": "option_letter"}
    for table in (spoof, None):
        with pytest.raises(ConfigError, match="without letters") as err:
            ZeroShotSettings.from_config(cfg, lines, table)
        assert "prompt=paper_asvspoof_lettered" in err.value.fix and "matching=class_names" in err.value.fix
    assert ZeroShotSettings.from_config(cfg, lines, digits).matching == "option_letter"
    assert ZeroShotSettings.from_config(cfg, lettered, spoof).matching == "option_letter"
    assert ZeroShotSettings.from_config({"matching": "class_names"}, lines, spoof).matching == "class_names"
    assert "A. bonafide" in lettered.text_for(spoof.clips[0], spoof)
    assert "A." not in lines.text_for(spoof.clips[0], spoof)
