"""Prompts: the clean question, the paper's multiple-choice question, and the config factory."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from calm.data.prompts import PaperPrompt, Prompt, build_prompt, option_seed
from calm.data.table import Clip, ClipTable
from calm.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
NAMES = tuple(f"class_{i}" for i in range(50))
PAPER_TEXT = re.compile(r"What sound is this\?\nA\. (\S+) B\. (\S+) C\. (\S+) D\. (\S+) Answer with the class name\.")


def clip(cid: str, label: int = 0, labels: tuple[int, ...] = ()) -> Clip:
    return Clip(cid, Path(f"{cid}.wav"), label, "train", labels=labels)


def table(clips: list[Clip], names: tuple[str, ...] = NAMES) -> ClipTable:
    return ClipTable("toy", tuple(clips), names)


def esc_like(n: int = 200) -> ClipTable:
    return table([clip(f"{i}-clip", i % 50) for i in range(n)])


def options(text: str) -> list[str]:
    match = PAPER_TEXT.fullmatch(text)
    assert match, text
    return list(match.groups())


# --- clean ---------------------------------------------------------------------------


def test_clean_prompt_is_one_fixed_question_for_every_clip() -> None:
    t = esc_like(5)
    texts = {Prompt().text_for(c, t) for c in t.clips}
    assert texts == {"What sound is this? Answer with the class name."}
    assert Prompt().text_for(t.clips[0], t, label=3) == "What sound is this? Answer with the class name."
    # the cache key of existing clean caches must not move
    assert Prompt().key_fields() == {
        "name": "clean",
        "question": "What sound is this?",
        "instruction": "Answer with the class name.",
    }


# --- paper -----------------------------------------------------------------------------


def test_paper_prompt_has_four_distinct_options_with_the_true_label() -> None:
    t = esc_like()
    prompt = PaperPrompt()
    for c in t.clips:
        names = options(prompt.text_for(c, t))
        assert len(set(names)) == 4
        assert NAMES[c.label] in names
        assert set(names) <= set(NAMES)
        assert names == prompt.option_names(c, t)


def test_paper_options_are_shuffled_and_vary_across_clips() -> None:
    t = esc_like()
    prompt = PaperPrompt()
    texts = [prompt.text_for(c, t) for c in t.clips]
    assert len(set(texts)) == len(texts), "two clips got the same options"
    letters = Counter(options(text).index(NAMES[c.label]) for text, c in zip(texts, t.clips, strict=True))
    assert set(letters) == {0, 1, 2, 3}, "the answer always sits at the same letter"
    assert min(letters.values()) > 25  # roughly uniform over 200 clips
    distractors = Counter(
        n for text, c in zip(texts, t.clips, strict=True) for n in options(text) if n != NAMES[c.label]
    )
    assert len(distractors) > 45, "distractors are not drawn from all classes"


def test_paper_options_are_deterministic_per_clip_id_and_pinned() -> None:
    t = esc_like()
    first = [PaperPrompt().text_for(c, t) for c in t.clips]
    assert first == [PaperPrompt().text_for(c, t) for c in t.clips]
    # the same clip id in another table position (or another table) keeps its options
    moved = table([t.clips[7], t.clips[3]])
    assert PaperPrompt().text_for(moved.clips[0], moved) == first[7]
    # regression pin: cached features depend on this text
    pinned = clip("1-100032-A-0.wav", 0)
    assert PaperPrompt().text_for(pinned, table([pinned])) == (
        "What sound is this?\nA. class_39 B. class_46 C. class_17 D. class_0 Answer with the class name."
    )
    assert option_seed(0, "1-100032-A-0.wav") == 1357159828684476346


def test_paper_options_do_not_depend_on_the_process_hash_seed() -> None:
    code = (
        "from pathlib import Path; from calm.data.prompts import PaperPrompt; "
        "from calm.data.table import Clip, ClipTable; "
        "c = Clip('dog-1', Path('x'), 3, 'train'); "
        "print(PaperPrompt().text_for(c, ClipTable('t', (c,), tuple(f'c{i}' for i in range(50)))))"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
            env={"PYTHONHASHSEED": seed, "PATH": ""},
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outs) == 1


def test_prompt_seed_and_option_count_change_the_text_and_the_key() -> None:
    t = esc_like(40)
    base, reseeded, five = PaperPrompt(), PaperPrompt(seed=1), PaperPrompt(options=5)
    assert [base.text_for(c, t) for c in t.clips] != [reseeded.text_for(c, t) for c in t.clips]
    text = five.text_for(t.clips[0], t)
    assert re.search(r"\nA\. \S+ B\. \S+ C\. \S+ D\. \S+ E\. \S+ Answer", text)
    keys = [p.key_fields() for p in (base, reseeded, five, PaperPrompt(question="Which sound?"), Prompt())]
    assert len({repr(sorted(k.items())) for k in keys}) == len(keys)
    assert base.key_fields()["template"] and base.key_fields()["name"] == "paper"


def test_fewer_classes_than_options_offers_every_class() -> None:
    names = ("cat", "dog", "cow")
    t = table([clip(f"c{i}", i % 3) for i in range(12)], names)
    orders = set()
    for c in t.clips:
        got = options_line(PaperPrompt().text_for(c, t))
        assert sorted(got) == sorted(names)
        orders.add(tuple(got))
    assert len(orders) > 1, "the order is not shuffled"


def options_line(text: str) -> list[str]:
    line = text.split("\n")[1]
    return re.findall(r"[A-Z]\. (\S+)", line)


def test_spoofing_prompt_has_fixed_question_and_option_order() -> None:
    for names in (("bonafide", "spoof"), ("spoof", "bonafide")):
        t = table([clip(f"LA_{i}", i % 2) for i in range(6)], names)
        texts = {PaperPrompt().text_for(c, t) for c in t.clips}
        assert texts == {"Is this audio bonafide or spoofed?\nA. bonafide B. spoof Answer with the class name."}


def test_other_two_class_datasets_keep_the_sound_question() -> None:
    t = table([clip(f"c{i}", i % 2) for i in range(4)], ("cat", "dog"))
    text = PaperPrompt().text_for(t.clips[0], t)
    assert text.startswith("What sound is this?\n") and sorted(options_line(text)) == ["cat", "dog"]


def test_multi_label_clip_true_label_and_distractors() -> None:
    c = clip("yt-1", 3, labels=(3, 7, 9))
    t = table([c])
    prompt = PaperPrompt()
    assert prompt.text_for(c, t) == prompt.text_for(c, t, label=3)
    for label in (3, 7, 9):
        ids = prompt.option_ids(c, t, label)
        assert label in ids and len(ids) == 4
        assert not ({3, 7, 9} - {label}) & set(ids), "another positive label offered as a distractor"
    with pytest.raises(ValueError, match="not one of"):
        prompt.text_for(c, t, label=4)


# --- factory ---------------------------------------------------------------------------


def test_build_prompt_from_the_config_files() -> None:
    clean = OmegaConf.load(REPO / "configs" / "prompt" / "clean.yaml")
    assert build_prompt(clean) == Prompt()
    assert build_prompt({**OmegaConf.to_container(clean), "question": "Q?"}) == Prompt(question="Q?")
    paper = build_prompt(OmegaConf.load(REPO / "configs" / "prompt" / "paper.yaml"))
    assert paper == PaperPrompt() and isinstance(paper.spoof_classes, tuple)


def test_option_seed_is_the_projects_seeded_hash() -> None:
    from calm.storage.digests import seeded_int

    for seed, clip_id in [(0, "1-100032-A-0.wav"), (7, "dog-1"), (2**40, "é/ü")]:
        assert option_seed(seed, clip_id) == seeded_int("calm.prompt.paper.v1", seed, clip_id)


def _cfg(config: str, **settings) -> dict:
    return {**OmegaConf.to_container(OmegaConf.load(REPO / "configs" / "prompt" / f"{config}.yaml")), **settings}


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"_target_": "calm.data.prompts.Prompt", "name": "fancy"}, "unknown prompt 'fancy'"),
        (_cfg("clean", name="paper"), "is the prompt of configs/prompt/paper.yaml"),
        ({"name": "clean"}, "has no _target_"),
        (_cfg("clean", _target_="calm.data.prompts.Nope"), "cannot be imported"),
        (_cfg("clean", options=4), "no setting"),
        (_cfg("paper", options=1), "options"),
        (_cfg("paper", options=27), "options"),
        (_cfg("paper", spoof_classes=["bonafide"]), "two classes"),
        (_cfg("paper", seed="x"), "seed"),
    ],
)
def test_bad_prompt_configs(cfg: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(match)) as err:
        build_prompt(cfg)
    assert "How to fix" in str(err.value)


# --- the authors' wordings ---------------------------------------------------------------------


def _composed(overrides: list[str], tmp_path: Path):
    from tests.cli import compose_config

    return build_prompt(compose_config(overrides, tmp_path).prompt)


@pytest.mark.parametrize(
    ("config", "spoof_text"),
    [
        ("paper", "Is this audio bonafide or spoofed?\nA. bonafide B. spoof Answer with the class name."),
        (
            "paper_asvspoof_lines",
            "Is this audio bonafide or spoofed? \n bonafide\n spoofed Answer with the class name.",
        ),
        (
            "paper_asvspoof_lettered",
            "Is this audio bonafide or spoofed?\nA. bonafide\nB. spoof Answer with the class name.",
        ),
    ],
)
def test_authors_spoofing_wordings(config: str, spoof_text: str, tmp_path: Path) -> None:
    prompt = _composed([f"prompt={config}"], tmp_path)
    for names in (("bonafide", "spoof"), ("spoof", "bonafide")):  # the fixed order does not follow the table
        t = table([clip(f"LA_{i}", i % 2) for i in range(4)], names)
        assert {prompt.text_for(c, t) for c in t.clips} == {spoof_text}
    # other datasets keep the default layout
    t = esc_like(3)
    assert prompt.text_for(t.clips[0], t) == PaperPrompt().text_for(t.clips[0], t)


def test_authors_esc50_and_audioset_wordings(tmp_path: Path) -> None:
    t = esc_like(4)
    default = PaperPrompt()
    caption = _composed(["prompt=paper_esc50_caption"], tmp_path)
    audioset = _composed(["prompt=paper_audioset"], tmp_path)
    for c in t.clips:
        a, b, cc, d = default.option_names(c, t)  # the same seeded options under every wording
        assert caption.text_for(c, t) == (
            f"What caption does the given audio belong to?\nA. {a} B. {b} C. {cc} D. {d} Answer with the class name."
        )
        assert audioset.text_for(c, t) == (
            f"What audio event is present in this audio clip? Choose from: A) {a}, "
            f"B) {b}, C) {cc}, D) {d} Answer with the class name."
        )
    # a wording is part of the cache key; the default wording's key is the one it had before wordings existed
    assert audioset.key_fields()["layout"] == "{question} Choose from: {options} {instruction}"
    assert default.key_fields() == {
        "name": "paper",
        "template": "calm.prompt.paper.v1",
        "question": "What sound is this?",
        "instruction": "Answer with the class name.",
        "options": 4,
        "seed": 0,
        "spoof_question": "Is this audio bonafide or spoofed?",
        "spoof_classes": ["bonafide", "spoof"],
    }
    assert PaperPrompt(per_label_questions=True).key_fields() == default.key_fields()


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["prompt=paper"], False),
        (["prompt=paper", "protocol=paper"], True),
        (["prompt=paper_audioset", "protocol=paper"], True),
        (["prompt=paper", "protocol=paper", "prompt.per_label_questions=false"], False),
        (["prompt=paper", "prompt.per_label_questions=true"], True),
    ],
)
def test_per_label_questions_follow_the_authors_switch(overrides: list[str], expected: bool, tmp_path: Path) -> None:
    assert _composed(overrides, tmp_path).per_label_questions is expected


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"layout": "{question} {instruction}"}, "prompt.layout="),
        ({"option_format": "{letter}. {label}"}, "prompt.option_format="),
        ({"spoof_layout": "{question} {options"}, "not a valid template"),
        ({"spoof_option_names": ["only one"]}, "two options"),
        ({"per_label_questions": "yes"}, "per_label_questions must be true or false"),
    ],
)
def test_bad_wordings_are_named(settings: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(match)):
        build_prompt({**_cfg("paper", per_label_questions=False), **settings})
