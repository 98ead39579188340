"""Pseudo-labelled support: the majority vote and agreement filter on crafted answers, the augmented
support per episode, that pool labels are never read, and sampled generation through the real
backbones (Whisper tiny.en end to end on real FSDD speech, a tiny Qwen2-Audio)."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

from calm.backbones import build_backbone
from calm.baselines.answer_matching import match_answer
from calm.baselines.generation import generation_device
from calm.baselines.pseudo_label import (
    STORE_FOLDER,
    TSV_NAME,
    PseudoLabelSettings,
    Vote,
    augment_episode,
    majority_vote,
    option_classes,
    pseudo_label_episodes,
    replace_support,
    unlabelled_pool,
    vote_answers,
)
from calm.data.prompts import PaperPrompt, Prompt
from calm.data.table import Clip, ClipTable
from calm.errors import ConfigError, DataError
from calm.methods import CALM, SAV
from calm.protocols import Episode
from calm.run.pipeline import run_job
from tests.cli import compose_config, small_fsdd

DIGITS = [str(d) for d in range(10)]


# ---- majority vote and agreement filter ---------------------------------------------------------


def test_four_of_eight_is_kept_three_of_eight_is_dropped() -> None:
    four = majority_vote([3, 3, None, 3, 1, None, 3, 2])
    assert four == Vote(3, 4, 8) and four.agreement == 0.5 and four.kept(0.5)
    three = majority_vote([3, None, 3, None, 1, None, 3, 2])
    assert three == Vote(3, 3, 8) and not three.kept(0.5)
    assert majority_vote([5] * 8).kept(1.0) and not majority_vote([5] * 7 + [None]).kept(1.0)
    assert majority_vote([1, 1, 1, 2, 2]).kept(0.6), "3 of 5 passes 0.6 despite float rounding"


def test_a_tie_for_the_most_votes_labels_nothing_whatever_the_order() -> None:
    tie = [1, 1, 1, 1, 2, 2, 2, 2]
    rng = np.random.default_rng(0)
    for _ in range(5):
        vote = majority_vote(list(rng.permutation(tie)))
        assert vote == Vote(None, 4, 8) and not vote.kept(0.5)
    assert majority_vote([4, 4, 4, 4, 4, 1, 1, None]) == Vote(4, 5, 8), "only a tie at the top counts"
    assert majority_vote([None] * 8) == Vote(None, 0, 8)
    assert majority_vote([]) == Vote(None, 0, 0) and not majority_vote([]).kept(0.5)


def test_spoken_digit_answers_are_matched_then_voted() -> None:
    assert [match_answer(a, DIGITS) for a in ("Seven.", "7", "seven!", "Three", "Heaven.", "Someone", "Seventy")] == [
        7,
        7,
        7,
        3,
        None,
        None,
        None,
    ]
    assert match_answer("7.", ["zero", "one", "two", "three", "four", "five", "six", "seven"]) == 7
    assert vote_answers(["Seven.", "7", "Heaven.", "seven", "8", "Eight.", "Bye.", "7."], DIGITS) == Vote(7, 4, 8)
    assert vote_answers(["Seven.", "7", "Heaven.", "Hey.", "3", "three", "Bye.", "8"], DIGITS) == Vote(None, 2, 8)


# ---- settings -------------------------------------------------------------------------------------


def test_method_config_builds_valid_settings(tmp_path: Path) -> None:
    cfg = compose_config(["backbone=whisper_tiny", "method=pseudo_label"], tmp_path)
    from omegaconf import OmegaConf

    settings = PseudoLabelSettings.from_config(
        OmegaConf.to_container(cfg.method.pseudo_label, resolve=True), cfg.method.estimators, Prompt()
    )
    assert (settings.samples, settings.min_agreement, settings.refit) == (8, 0.5, ("calm", "sav"))
    assert (settings.agreement, settings.ties, settings.prompt, settings.support) == ("all", "none", "clean", "union")
    assert (settings.temperature, settings.top_p, settings.temperature_range, settings.max_new_tokens) == (
        1.0,
        1.0,
        None,
        16,
    ), "the clean sampling settings are unchanged"
    assert set(settings.refit_methods({"calm": CALM(), "sav": SAV()})) == {"calm+pl", "sav+pl"}


@pytest.mark.parametrize(
    ("backbone", "temperature", "temperature_range"),
    [("qwen2_audio", 1.1, None), ("qwen2_5_omni", 1.0, [0.5, 1.5]), ("whisper_tiny", 1.0, None)],
)
def test_protocol_paper_turns_on_the_authors_modes(
    tmp_path: Path, backbone: str, temperature: float, temperature_range: list[float] | None
) -> None:
    from omegaconf import OmegaConf

    cfg = compose_config([f"backbone={backbone}", "method=pseudo_label", "protocol=paper", "prompt=paper"], tmp_path)
    block = OmegaConf.to_container(cfg.method.pseudo_label, resolve=True)
    settings = PseudoLabelSettings.from_config(block, cfg.method.estimators, PaperPrompt())
    assert (settings.agreement, settings.ties, settings.prompt, settings.support) == (
        "non_empty",
        "first_seen",
        "multiple_choice",
        "replace",
    )
    assert (settings.temperature, settings.temperature_range, settings.max_new_tokens) == (
        temperature,
        None if temperature_range is None else tuple(temperature_range),
        32,
    )
    assert settings.top_p == (1.0 if backbone == "whisper_tiny" else 0.95), (
        "a backbone the authors never ran samples plainly"
    )
    one_off = compose_config(
        ["backbone=qwen2_audio", "method=pseudo_label", "protocol=paper", "method.pseudo_label.support=union"], tmp_path
    )
    assert one_off.method.pseudo_label.support == "union" and one_off.method.pseudo_label.ties == "first_seen"


@pytest.mark.parametrize(
    "bad",
    [
        {"samples": 0},
        {"samples": 2.5},
        {"temperature": 0.0},
        {"top_p": 0.0},
        {"top_p": 1.5},
        {"min_agreement": 0.0},
        {"min_agreement": 1.2},
        {"pool_size": 0},
        {"max_new_tokens": 0},
        {"batch_size": -1},
        {"refit": []},
        {"refit": ["grw"]},
        {"sample": 8},
    ],
)
def test_bad_settings_are_config_errors(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        PseudoLabelSettings.from_config({"refit": ["calm"], **bad}, ["calm", "sav"], Prompt())


def test_paper_prompts_are_refused_because_they_show_the_label() -> None:
    with pytest.raises(ConfigError, match="true label"):
        PseudoLabelSettings.from_config({"refit": ["calm"]}, ["calm"], PaperPrompt())
    knowingly = {"refit": ["calm"], "prompt": "multiple_choice"}
    assert PseudoLabelSettings.from_config(knowingly, ["calm"], PaperPrompt()).prompt == "multiple_choice"
    with pytest.raises(ConfigError, match="prompt=paper"):
        PseudoLabelSettings.from_config(knowingly, ["calm"], Prompt())


@pytest.mark.parametrize(
    "bad",
    [
        {"agreement": "some"},
        {"ties": "last"},
        {"support": "both"},
        {"prompt": "paper"},
        {"temperature_range": [1.5, 0.5]},
        {"temperature_range": [0.0, 1.0]},
    ],
)
def test_bad_authors_mode_settings_are_config_errors(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        PseudoLabelSettings.from_config({"refit": ["calm"], **bad}, ["calm"], Prompt())


# ---- the authors' vote: agreement over matched answers, ties to the first seen -------------------


def test_agreement_over_non_empty_answers_keeps_what_the_clean_rule_drops() -> None:
    answers = ["dog", "", "", "dog", "cat", "", "", ""]  # "" names no class: 2 dog, 1 cat, 5 unmatched
    authors = vote_answers(answers, ["cat", "dog"], agreement="non_empty", ties="first_seen")
    assert authors == Vote(1, 2, 3) and authors.kept(0.5), "2 of the 3 matched answers: 0.67 >= 0.5"
    clean = vote_answers(answers, ["cat", "dog"])
    assert clean == Vote(1, 2, 8) and not clean.kept(0.5), "2 of all 8 samples: 0.25 < 0.5"


def test_a_tie_goes_to_the_class_named_first_under_the_authors_rule() -> None:
    assert vote_answers(["dog", "cat"], ["cat", "dog"], "non_empty", "first_seen") == Vote(1, 1, 2)
    assert vote_answers(["cat", "dog"], ["cat", "dog"], "non_empty", "first_seen") == Vote(0, 1, 2)
    assert vote_answers(["dog", "cat"], ["cat", "dog"]).label is None, "the clean rule labels nothing"
    assert majority_vote([None, None], "non_empty", "first_seen") == Vote(None, 0, 0)
    assert not majority_vote([None, None], "non_empty").kept(0.5)


def test_multiple_choice_answers_are_matched_to_the_offered_options_only() -> None:
    names = ["dog", "rain", "siren", "clock_tick", "cat"]
    assert option_classes(["B. rain", "cat", "siren"], [3, 1, 0, 2], names) == [1, None, 2], (
        "cat is a class but not offered to this clip"
    )


# ---- augmented support ----------------------------------------------------------------------------


def test_augmented_support_adds_only_pool_clips_of_the_episode_classes() -> None:
    episode = Episode(
        index=3,
        seed=11,
        classes=[2, 5, 7],
        support=[0, 1, 2],
        support_labels=[0, 1, 2],
        query=[10, 11, 12],
        query_labels=[2, 1, 0],
    )
    pseudo = {1: 2, 10: 5, 20: 7, 21: 4, 22: 2, 23: 5}  # 1: support clip, 10: query clip, 21: class not in episode
    out = augment_episode(episode, pseudo)
    assert out.support.tolist() == [0, 1, 2, 20, 22, 23]
    assert out.support_labels.tolist() == [0, 1, 2, 2, 0, 1]
    assert (out.index, out.seed, out.classes.tolist()) == (3, 11, [2, 5, 7])
    assert out.query.tolist() == [10, 11, 12] and out.query_labels.tolist() == [2, 1, 0]
    assert augment_episode(episode, {}).support.tolist() == [0, 1, 2]


class FakeBackbone:
    """Answers are a function of the audio only (each wave is a constant that names a clip)."""

    name = "fake"
    sample_rate = 16000
    uses_prompt_text = False

    def __init__(self, answers_by_level: dict[int, list[str]]) -> None:
        self.answers_by_level = answers_by_level
        self.calls: list[tuple[int, int]] = []
        self.model = torch.nn.Linear(1, 1)

    def key_fields(self, digests: Any = None) -> dict[str, Any]:
        return {"family": "fake"}

    def sample_answers(self, waves, prompts, seeds, samples, temperature, top_p, max_new_tokens):
        levels = [round(float(w.mean()) * 1000) for w in waves]
        self.calls.extend(zip(levels, seeds, strict=True))
        return [self.answers_by_level[level][:samples] for level in levels]


def write_table(root: Path, pool_labels: list[int], offset: int = 0) -> ClipTable:
    """Five labelled support-pool clips s0..s4 (class i), six pool clips p0..p5, two test clips; each
    clip's audio is a constant (i + 1 + offset) / 1000, the level that names it."""
    clips = []
    for i, (name, split, label) in enumerate(
        [(f"s{c}", "train", c) for c in range(5)]
        + [(f"p{k}", "train", y) for k, y in enumerate(pool_labels)]
        + [("q0", "test", 0), ("q1", "test", 1)]
    ):
        path = root / f"{name}.wav"
        if not path.exists():
            sf.write(path, np.full(1600, (i + 1 + offset) / 1000, dtype=np.float32), 16000, subtype="FLOAT")
        clips.append(Clip(name, path, label, split))
    return ClipTable("toy", tuple(clips), tuple(f"class{c}" for c in range(5)), source=str(root))


POOL_ANSWERS = {  # audio level of p_k is 6 + k
    6: ["class1", "class1", "class1", "class1", "dog", "cat", "class2", "x"],  # 4/8: kept as 1
    7: ["class2", "class2", "class2", "dog", "dog", "cat", "class1", "x"],  # 3/8: dropped
    8: ["class3", "class3", "class3", "class3", "class4", "class4", "class4", "class4"],  # tie: dropped
    9: ["class4"] * 8,  # kept as 4, not in the episode
    10: ["Class 0."] * 6 + ["class1"] * 2,  # kept as 0
    11: ["class2"] * 5 + ["?"] * 3,  # kept as 2
}


def pool_answers_and_support(support_answer: str) -> dict[int, list[str]]:
    """POOL_ANSWERS, with the support clips s0..s4 (levels 1 to 5) all answering `support_answer`."""
    return {**POOL_ANSWERS, **{level: [support_answer] * 8 for level in range(1, 6)}}


def three_class_episode() -> Episode:
    """One episode over classes 0-2 of `write_table`: support s0, s1, s2 and queries q0, q1."""
    return Episode(
        index=0,
        seed=1,
        classes=[0, 1, 2],
        support=[0, 1, 2],
        support_labels=[0, 1, 2],
        query=[11, 12],
        query_labels=[0, 1],
    )


def test_pool_labels_are_never_read(tmp_path: Path) -> None:
    """Two tables that differ only in the pool clips' true labels give the same augmented support."""
    episode = three_class_episode()
    settings = PseudoLabelSettings(refit=("calm",), samples=8, min_agreement=0.5, pool_size=None)
    results = []
    for name, labels in (("a", [1, 2, 3, 4, 0, 2]), ("b", [4, 4, 0, 0, 3, 1])):
        table = write_table(tmp_path, labels)
        backbone = FakeBackbone(pool_answers_and_support("?"))
        out = tmp_path / name
        out.mkdir()
        augmented, report = pseudo_label_episodes(settings, backbone, table, Prompt(), [episode], out, None)
        results.append((augmented[0], report, (out / TSV_NAME).read_text().splitlines(), backbone.calls))
    (first, report_a, tsv_a, calls_a), (second, report_b, tsv_b, calls_b) = results
    assert first.support.tolist() == second.support.tolist() == [0, 1, 2, 5, 9, 10]
    assert first.support_labels.tolist() == second.support_labels.tolist() == [0, 1, 2, 1, 0, 2]
    assert calls_a == calls_b, "every pool clip is sampled with a seed of its own, whatever its label"
    assert len({seed for _, seed in calls_a}) == len(calls_a) == 11, "the whole training pool, one seed per clip"
    assert report_a["kept"] == report_b["kept"] == 4 and report_a["ties"] == 1
    assert (report_a["kept_accuracy"], report_b["kept_accuracy"]) == (100.0, 0.0), "labels are read for the report"
    assert tsv_a[0] == "clip_id\tpseudo_label\tagreement\tvotes\tkept\ttrue_label\tanswers"
    rows_a = {line.split("\t")[0]: line.split("\t") for line in tsv_a[1:]}
    assert rows_a["p0"][1:6] == ["class1", "0.5000", "4/8", "yes", "class1"]
    assert rows_a["p1"][1:5] == ["class2", "0.3750", "3/8", "no"]
    assert rows_a["p2"][1:5] == ["-", "0.5000", "4/8", "no"]
    assert [line.split("\t")[:5] for line in tsv_a] == [line.split("\t")[:5] for line in tsv_b]


class LabelSpy:
    """An estimator that records the support labels it is fitted on (and predicts class 0)."""

    def __init__(self) -> None:
        self.fitted: list[list[int]] = []

    def fit(self, support: torch.Tensor, labels: torch.Tensor, n_classes: int) -> LabelSpy:
        self.fitted.append(labels.tolist())
        return self

    def predict(self, query: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(query), dtype=torch.long)


def test_replace_fits_on_the_pseudo_labels_never_the_true_support_labels(tmp_path: Path) -> None:
    """S = V: support clips s0, s1, s2 (true classes 0, 1, 2) are asked the multiple-choice question
    (all 5 classes offered); the backbone names s0 "class1" and s1 "class0", so the estimator must be
    fitted on labels [1, 0, 2], not [0, 1, 2]. Only the support clips are answered (no pool)."""
    from calm.reports.episodic import evaluate
    from calm.run.tracking import NullTracker

    table = write_table(tmp_path, [0] * 6)
    episode = three_class_episode()
    backbone = FakeBackbone(
        {
            1: ["B. class1"] * 3 + [""] * 5,  # 3 of 3 matched: class1
            2: ["class0", "", "class3", "?", "class0", "", "", ""],  # 2 of 3 matched: class0
            3: ["class2", "class4"],
        }
    )  # tie: first seen, class2
    settings = PseudoLabelSettings(
        refit=("calm",),
        samples=8,
        prompt="multiple_choice",
        agreement="non_empty",
        ties="first_seen",
        support="replace",
    )
    prompt = PaperPrompt(options=5)
    replaced, report = pseudo_label_episodes(settings, backbone, table, prompt, [episode], tmp_path, None)
    assert sorted(level for level, _ in backbone.calls) == [1, 2, 3], "the support clips, and nothing else"
    assert replaced[0].support.tolist() == [0, 1, 2] and replaced[0].support_labels.tolist() == [1, 0, 2]
    assert replaced[0].query.tolist() == [11, 12] and replaced[0].query_labels.tolist() == [0, 1]
    assert report["kept"] == 3 and report["kept_accuracy"] == pytest.approx(100 / 3)
    assert report["options_show_true_label"] and report["support"] == "replace"
    assert [note.split(" ")[:3] for note in settings.notes()] == [["pseudo", "labels", "come"], ["every", "row", "of"]]
    assert PseudoLabelSettings(refit=("calm",)).notes() == [], "the clean modes need no note"
    spy = LabelSpy()
    evaluate(replaced, torch.zeros(13, 2, 3), {"spy+pl": spy}, NullTracker())
    assert spy.fitted == [[1, 0, 2]]


def test_replace_drops_support_clips_without_a_label_and_names_a_class_left_empty() -> None:
    episode = Episode(
        index=4,
        seed=1,
        classes=[3, 5, 7],
        support=[10, 11, 12, 13],
        support_labels=[0, 0, 1, 2],
        query=[20],
        query_labels=[0],
        support_label_sets=((0,), (0,), (1,), (2,)),
    )
    kept = replace_support(episode, {10: 7, 12: 5, 13: 3, 14: 5})  # 11: no label; 14: not a support clip
    assert kept.support.tolist() == [10, 12, 13] and kept.support_labels.tolist() == [2, 1, 0]
    assert kept.support_label_sets == ((2,), (1,), (0,))
    with pytest.raises(DataError, match=r"class\(es\) \[5\]"):
        replace_support(episode, {10: 3, 11: 3, 13: 7})
    with pytest.raises(DataError):
        replace_support(episode, {10: 3, 12: 5, 13: 9})  # 9 is not an episode class: dropped, class 7 empty


def test_pool_draw_is_seeded_and_uses_only_training_clips(tmp_path: Path) -> None:
    table = write_table(tmp_path, [0] * 6)
    rows = unlabelled_pool(table, 4, seed=0)
    assert len(rows) == 4 and all(table.clips[i].split == "train" for i in rows)
    assert rows.tolist() == unlabelled_pool(table, 4, seed=0).tolist()
    assert unlabelled_pool(table, None, 0).tolist() == list(range(11))
    relabelled = write_table(tmp_path, [3, 1, 4, 1, 0, 2])
    assert unlabelled_pool(relabelled, 4, seed=0).tolist() == rows.tolist()


def test_pool_draw_and_sampling_seeds_are_pinned(tmp_path: Path) -> None:
    """The values the module's own SHA-256 helper gave before it moved to calm.storage.digests.seeded_int:
    the pool subset and every clip's sampling seed must not change with the refactor."""
    table = write_table(tmp_path, [0] * 6)
    assert unlabelled_pool(table, 4, seed=0).tolist() == [0, 2, 9, 10]
    episode = three_class_episode()
    backbone = FakeBackbone(pool_answers_and_support("class0"))
    pseudo_label_episodes(PseudoLabelSettings(refit=("calm",)), backbone, table, Prompt(), [episode], tmp_path, None)
    seeds = dict(backbone.calls)  # audio level -> seed: s0 is level 1, p0 level 6, p1 level 7
    assert (seeds[1], seeds[6], seeds[7]) == (5447401757409478401, 2116032143675340923, 3139831702376134415)


def test_answers_are_stored_and_reused(tmp_path: Path) -> None:
    table = write_table(tmp_path, [0] * 6)
    episode = three_class_episode()
    settings = PseudoLabelSettings(refit=("calm",), pool_size=None, batch_size=4)
    pool_answers = pool_answers_and_support("class0")
    first = FakeBackbone(pool_answers)
    _, report = pseudo_label_episodes(settings, first, table, Prompt(), [episode], tmp_path, tmp_path / "cache")
    again = FakeBackbone(pool_answers)
    _, report_again = pseudo_label_episodes(settings, again, table, Prompt(), [episode], tmp_path, tmp_path / "cache")
    assert report["generated"] == 11 and report_again["generated"] == 0 and again.calls == []
    assert {k: v for k, v in report.items() if k != "generated"} == {
        k: v for k, v in report_again.items() if k != "generated"
    }
    other = PseudoLabelSettings(refit=("calm",), pool_size=None, temperature=0.5)
    _, report_other = pseudo_label_episodes(
        other, FakeBackbone(pool_answers), table, Prompt(), [episode], tmp_path, tmp_path / "cache"
    )
    assert report_other["generated"] == 11, "other sampling settings are other answers"


def test_datasets_with_the_same_clip_ids_never_share_answers(tmp_path: Path) -> None:
    """Two tables with ids s0..q1 but other audio (another source): each is answered from its own audio."""
    episode = three_class_episode()
    settings = PseudoLabelSettings(refit=("calm",), pool_size=None)
    answers = {level: [f"class{level % 5}"] * 8 for level in range(1, 40)}
    first, second = (tmp_path / "first", tmp_path / "second")
    first.mkdir(), second.mkdir()
    tables = [write_table(first, [0] * 6), write_table(second, [0] * 6, offset=21)]
    assert tables[0].ids == tables[1].ids
    reports, tsvs = [], []
    for table in tables:
        out = Path(table.source) / "out"
        out.mkdir()
        _, report = pseudo_label_episodes(
            settings, FakeBackbone(answers), table, Prompt(), [episode], out, tmp_path / "cache"
        )
        reports.append(report)
        tsvs.append(
            {line.split("\t")[0]: line.split("\t")[-1] for line in (out / TSV_NAME).read_text().splitlines()[1:]}
        )
    assert [r["generated"] for r in reports] == [11, 11], "the second dataset's answers are not read from the first's"
    assert tsvs[0]["p0"] == " | ".join(["class1"] * 8) and tsvs[1]["p0"] == " | ".join(["class2"] * 8)
    stores = sorted((tmp_path / "cache" / STORE_FOLDER).glob("*.json"))
    assert len(stores) == 2
    assert sorted(json.loads(p.read_text())["key"]["dataset"]["source"] for p in stores) == [str(first), str(second)]


def test_accelerator_cpu_keeps_generation_on_the_cpu_even_with_a_gpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert generation_device({"accelerator": "cpu", "devices": 1}) == torch.device("cpu")
    assert generation_device({"accelerator": "auto", "devices": 1}) == torch.device("cuda", 0)
    assert generation_device({"accelerator": "gpu", "devices": [1]}) == torch.device("cuda", 1)
    table = write_table(tmp_path, [0] * 6)
    backbone = FakeBackbone({level: ["class0"] * 8 for level in range(1, 14)})
    episode = Episode(
        index=0, seed=1, classes=[0, 1], support=[0, 1], support_labels=[0, 1], query=[11, 12], query_labels=[0, 1]
    )
    _, report = pseudo_label_episodes(
        PseudoLabelSettings(refit=("calm",)),
        backbone,
        table,
        Prompt(),
        [episode],
        tmp_path,
        None,
        generation_device({"accelerator": "cpu"}),
    )
    assert report["generated"] == 11 and next(backbone.model.parameters()).device == torch.device("cpu")


def test_a_gpu_accelerator_without_a_gpu_or_an_unknown_one_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert generation_device({"accelerator": "auto"}) == torch.device("cpu")
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        generation_device({"accelerator": "gpu"})
    with pytest.raises(ConfigError, match="trainer.accelerator=tpu"):
        generation_device({"accelerator": "tpu"})


# ---- real backbones -------------------------------------------------------------------------------


def test_whisper_pseudo_labels_end_to_end(tmp_path: Path, fsdd_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Five digits of one speaker Whisper tiny.en transcribes well; 6 training clips pseudo-labelled."""
    root = small_fsdd(fsdd_root, tmp_path / "fsdd", speakers=("lucas",), indices=(0, 10, 11))
    for path in (root / "recordings").glob("*.wav"):
        if int(path.name.split("_")[0]) >= 5:
            path.unlink()
    monkeypatch.setenv("CALM_CACHE", str(tmp_path / "cache"))
    overrides = [
        "backbone=whisper_tiny",
        "logger=none",
        "dataset=fsdd",
        f"dataset.root={root}",
        "method=pseudo_label",
        "shots=1",
        "queries=1",
        "episodes=2",
        "figures=false",
        "method.pseudo_label.samples=4",
        "method.pseudo_label.pool_size=6",
        "method.pseudo_label.temperature=0.7",
        "method.pseudo_label.max_new_tokens=5",
    ]
    run_job(compose_config(overrides, tmp_path / "out"))
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert {r["method"] for r in results["results"]} == {"calm", "sav", "calm+pl", "sav+pl"}
    lines = (tmp_path / "out" / TSV_NAME).read_text().splitlines()
    assert lines[0] == "clip_id\tpseudo_label\tagreement\tvotes\tkept\ttrue_label\tanswers"
    rows = [line.split("\t") for line in lines[1:]]
    assert len(rows) == 6 and all(clip.split("_")[2] in ("10", "11") for clip, *_ in rows), "training clips only"
    assert any(len(set(row[-1].split(" | "))) > 1 for row in rows), "answers are sampled, not greedy"
    kept = []
    for clip, label, agreement, votes, keep, truth, answers in rows:
        matched = [match_answer(a, DIGITS) for a in answers.split(" | ")]
        assert len(matched) == 4 and truth == clip.split("_")[0]
        counts = Counter(m for m in matched if m is not None)
        top = max(counts.values(), default=0)
        majority = [c for c, n in counts.items() if n == top]
        assert label == (DIGITS[majority[0]] if len(majority) == 1 else "-")
        assert votes == f"{top}/4" and float(agreement) == top / 4
        assert keep == ("yes" if label != "-" and top >= 2 else "no")
        if keep == "yes":
            kept.append(label == truth)
    report = results["pseudo_label"]
    assert report["pool"] == 6 and report["generated"] == 6 and report["kept"] == len(kept) >= 3
    assert report["kept_accuracy"] == pytest.approx(100.0 * sum(kept) / len(kept))
    assert report["added_per_episode_mean"] > 0

    run_job(compose_config([*overrides, "force=true"], tmp_path / "again"))
    assert json.loads((tmp_path / "again" / "results.json").read_text())["pseudo_label"]["generated"] == 0
    assert (tmp_path / "again" / TSV_NAME).read_text() == "\n".join(lines) + "\n"


def test_tiny_qwen2_audio_samples_through_generate_with_seeds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = compose_config(["backbone=tiny_qwen2_audio", f"paths.data_dir={tmp_path}"], tmp_path / "out")
    backbone = build_backbone(cfg.backbone, "32-true")
    backbone.load()
    seen = []
    real_generate = backbone.model.generate

    def spy(**kwargs):
        seen.append({k: kwargs[k] for k in ("do_sample", "temperature", "top_p", "num_return_sequences")})
        return real_generate(**kwargs)

    monkeypatch.setattr(backbone.model, "generate", spy)
    rate = backbone.sample_rate
    waves = [np.sin(np.linspace(0, 300 * s, int(rate * s))).astype(np.float32) for s in (0.4, 0.9)]
    prompts = [Prompt().text_for(None, None)] * 2
    state = torch.get_rng_state()
    first = backbone.sample_answers(waves, prompts, [1, 2], samples=3, temperature=1.0, top_p=0.9, max_new_tokens=4)
    assert torch.equal(torch.get_rng_state(), state), "the global random state is put back"
    assert seen == [{"do_sample": True, "temperature": 1.0, "top_p": 0.9, "num_return_sequences": 3}] * 2
    assert [len(answers) for answers in first] == [3, 3]
    assert backbone.sample_answers(waves, prompts, [1, 2], 3, 1.0, 0.9, 4) == first
    assert backbone.sample_answers(waves[1:], prompts[1:], [2], 3, 1.0, 0.9, 4) == first[1:], "independent of the batch"
    assert backbone.sample_answers(waves, prompts, [7, 8], 3, 1.0, 0.9, 4) != first, "another seed, other answers"
    with pytest.raises(ConfigError):
        backbone.sample_answers(waves, prompts, [1, 2], samples=3, temperature=0.0)


def test_replace_runs_every_report_of_the_job_on_the_relabelled_support(
    tmp_path: Path, fsdd_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """support=replace (S = V): the estimators and the tuned rows are all fitted on the relabelled support,
    with no `+pl` rows. The backbone's labelling is replaced by a fixed relabelling (class c -> c+1), so a
    right wiring scores far below the same job on the true labels; the answers are not what is tested."""
    import calm.reports.generation as generation

    root = small_fsdd(fsdd_root, tmp_path / "fsdd", speakers=("lucas",), indices=(0, 10, 11), digits=(0, 1, 2, 3))
    monkeypatch.setenv("CALM_CACHE", str(tmp_path / "cache"))
    calls = []

    def shifted(settings, backbone, table, prompt, episodes, *args, **kwargs):
        calls.append([e.index for e in episodes])
        moved = [dataclasses.replace(e, support_labels=(e.support_labels + 1) % e.ways) for e in episodes]
        return moved, {"kept": sum(len(e.support) for e in moved)}

    monkeypatch.setattr(generation, "pseudo_label_episodes", shifted)
    base = [
        "backbone=whisper_tiny",
        "logger=none",
        "dataset=fsdd",
        f"dataset.root={root}",
        "shots=2",
        "protocol=paper",
        "figures=false",
        "method.estimators.calm.tie_break=index",
        "method.estimators.sav.tie_break=index",
    ]
    run_job(compose_config([*base, "method=calm_vs_sav"], tmp_path / "true"))
    run_job(
        compose_config(
            [*base, "method=pseudo_label", "method.pseudo_label.prompt=clean", "method.pseudo_label.support=replace"],
            tmp_path / "relabelled",
        )
    )
    true = {r["method"]: r for r in json.loads((tmp_path / "true" / "results.json").read_text())["results"]}
    relabelled = json.loads((tmp_path / "relabelled" / "results.json").read_text())
    rows = {r["method"]: r for r in relabelled["results"]}
    assert calls == [[0]], "the relabelling runs once, on the job's one episode"
    assert set(rows) == {"sav", "calm", "sav[cv]", "sav[oracle]", "calm[cv]", "calm[oracle]"}
    for method in rows:
        assert true[method]["accuracy_mean"] >= 75.0, (method, true[method]["accuracy_mean"])
        assert rows[method]["accuracy_mean"] <= 25.0, (method, rows[method]["accuracy_mean"])
    assert any("S = V" in note for note in relabelled["notes"])


class PromptReadingFake(FakeBackbone):
    """The fake backbone, reading its prompt text (so the multiple-choice text keys its answers)."""

    uses_prompt_text = True


def test_stored_answers_are_regenerated_only_for_clips_whose_inputs_changed(tmp_path: Path) -> None:
    """Same dataset name and source: correcting a pool clip's label changes its multiple-choice text, and
    overwriting a clip's audio its content; only that clip is sampled again, the others are read."""
    episode = three_class_episode()
    settings = PseudoLabelSettings(refit=("calm",), pool_size=None, prompt="multiple_choice", agreement="non_empty")
    pool_answers = pool_answers_and_support("class0")
    prompt = PaperPrompt(options=3)

    def run(table: ClipTable) -> tuple[PromptReadingFake, dict[str, Any]]:
        backbone = PromptReadingFake(pool_answers)
        _, report = pseudo_label_episodes(settings, backbone, table, prompt, [episode], tmp_path, tmp_path / "cache")
        return backbone, report

    table = write_table(tmp_path, [1, 2, 3, 4, 0, 2])
    assert run(table)[1]["generated"] == 11
    assert run(table)[0].calls == []
    relabelled = write_table(tmp_path, [3, 2, 3, 4, 0, 2])  # p0 (level 6): label 1 -> 3
    assert prompt.text_for(relabelled.clips[5], relabelled) != prompt.text_for(table.clips[5], table)
    backbone, report = run(relabelled)
    assert [level for level, _ in backbone.calls] == [6] and report["generated"] == 1
    sf.write(relabelled.clips[8].audio_path, np.full(3200, 9 / 1000, dtype=np.float32), 16000, subtype="FLOAT")
    backbone, report = run(relabelled)  # p3 (level 9) overwritten: same level, other content
    assert [level for level, _ in backbone.calls] == [9] and report["generated"] == 1
    assert run(relabelled)[0].calls == []
    assert len(list((tmp_path / "cache" / STORE_FOLDER).glob("*.json"))) == 1, "one store file throughout"
