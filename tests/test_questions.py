"""Per-label questions: multi-label clips become one single-label question row per positive label, each
with its own prompt text and cache row; clips are scored as a whole from their questions."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from calm.data.prompts import PaperPrompt, Prompt
from calm.data.questions import covers_whole_clips, question_groups, question_table
from calm.data.table import Clip, ClipTable
from calm.errors import ConfigError, DataError
from calm.protocols import Episode
from calm.reports.episodic import clip_groups, score_method
from calm.run.job import check_questions_are_read, job_table
from calm.storage.file_digests import FileDigests

NAMES = ("c0", "c1", "c2", "c3", "c4", "c5")


def three_clips() -> ClipTable:
    """a: {0, 2} (train), b: {1} (train), c: {2, 0, 3} (test), in that file order."""
    clips = (
        Clip("a", Path("a.flac"), 0, "train", labels=(0, 2)),
        Clip("b", Path("b.flac"), 1, "train", labels=(1,)),
        Clip("c", Path("c.flac"), 2, "test", video_path=Path("c.mp4"), labels=(2, 0, 3)),
    )
    return ClipTable("toy", clips, NAMES)


def options(text: str) -> set[str]:
    match = re.fullmatch(
        r"What sound is this\?\nA\. (\S+) B\. (\S+) C\. (\S+) D\. (\S+) Answer with the class name\.", text
    )
    assert match, text
    return set(match.groups())


def test_three_clips_become_their_questions_in_file_order() -> None:
    table = three_clips()
    questions = question_table(table)
    # a's two labels, b (one label: the clip itself, id kept), c's three labels in the clip's label order
    assert questions.ids == ["a#0", "a#1", "b", "c#0", "c#1", "c#2"]
    assert questions.labels.tolist() == [0, 2, 1, 2, 0, 3]
    assert [q.question_of for q in questions.clips] == ["a", "a", "b", "c", "c", "c"]
    assert [q.clip_labels for q in questions.clips] == [(0, 2), (0, 2), (1,), (2, 0, 3), (2, 0, 3), (2, 0, 3)]
    assert [q.split for q in questions.clips] == ["train", "train", "train", "test", "test", "test"]
    assert [q.audio_path for q in questions.clips] == [Path("a.flac")] * 2 + [Path("b.flac")] + [Path("c.flac")] * 3
    assert [q.video_path for q in questions.clips] == [None] * 3 + [Path("c.mp4")] * 3
    assert all(q.labels == () and q.all_labels == (q.label,) for q in questions.clips)
    assert not questions.multi_label, "protocols must see single-label rows"
    assert (questions.class_names, questions.name) == (NAMES, "toy")
    # groups: dense ids in order of first appearance among the given rows
    assert question_groups(questions, np.arange(6)).tolist() == [0, 0, 1, 2, 2, 2]
    assert question_groups(questions, np.array([3, 0, 5, 1])).tolist() == [0, 1, 0, 1]
    assert question_groups(table, np.arange(3)) is None
    assert covers_whole_clips(questions, np.array([5, 3, 4, 2]))
    assert not covers_whole_clips(questions, np.array([3, 4, 2])), "c#2 is missing"


def test_each_question_names_its_own_label_and_no_other_positive() -> None:
    questions = question_table(three_clips())
    prompt = PaperPrompt(per_label_questions=True)
    texts = [prompt.text_for(q, questions) for q in questions.clips]
    for q, text in zip(questions.clips, texts, strict=True):
        offered = options(text)
        assert NAMES[q.label] in offered
        assert not {NAMES[y] for y in q.clip_labels if y != q.label} & offered, text
    # c has 6 - 3 = 3 classes that are not its labels, so each of its questions offers exactly those three
    assert [options(t) for t in texts[3:]] == [
        {"c2", "c1", "c4", "c5"},
        {"c0", "c1", "c4", "c5"},
        {"c3", "c1", "c4", "c5"},
    ]
    # so the questions of one clip always differ (each offers its own label and none of the others)
    assert len({texts[0], texts[1]}) == 2 and len(set(texts[3:])) == 3
    # the one-label clip keeps the text it has without the expansion (so its cached row is reused)
    table = three_clips()
    assert texts[2] == PaperPrompt().text_for(table.clips[1], table)


def test_only_a_prompt_asking_per_label_questions_expands_a_multi_label_table() -> None:
    table = three_clips()
    assert job_table(table, Prompt()) is table and not Prompt.per_label_questions
    assert job_table(table, PaperPrompt()) is table
    assert job_table(table, PaperPrompt(per_label_questions=True)).ids == question_table(table).ids
    single = ClipTable("esc", (Clip("x", Path("x"), 0, "train"), Clip("y", Path("y"), 1, "test")), NAMES)
    assert question_table(single) is single, "a single-label table is already one question per clip"
    assert question_groups(single, np.arange(2)) is None


def test_ids_with_the_separator_are_refused() -> None:
    table = ClipTable("bad", (Clip("a#1", Path("a"), 0, "train", labels=(0, 1)),), NAMES)
    with pytest.raises(DataError, match=r"clip ids containing '#'.*\['a#1'\]") as err:
        question_table(table)
    assert "per_label_questions=false" in str(err.value)


def test_table_digest_sees_the_questions_clip_labels(tmp_path: Path) -> None:
    (tmp_path / "a.flac").write_bytes(b"x")
    questions = question_table(ClipTable("t", (Clip("a", tmp_path / "a.flac", 0, "train", labels=(0, 2)),), NAMES))
    other = ClipTable(
        "t",
        tuple(
            Clip(q.id, q.audio_path, q.label, q.split, question_of=q.question_of, clip_labels=(0, 2, 4))
            for q in questions.clips
        ),
        NAMES,
    )
    digests = FileDigests(None)
    assert questions.digest(digests) != other.digest(digests)


class FixedPredictions:
    """An estimator whose predictions are given: score_method's clip-level metrics are then hand-checkable."""

    def __init__(self, pred: list[int]) -> None:
        self.pred = torch.tensor(pred)

    def fit(self, *args, **kwargs) -> FixedPredictions:
        return self

    def predict(self, query: torch.Tensor) -> torch.Tensor:
        return self.pred


def test_episode_rows_report_both_clip_exact_matches_only_for_whole_clips() -> None:
    questions = question_table(three_clips())
    # queries: a#0, a#1 (clip a, true {0, 2}) and c#0, c#1, c#2 (clip c, true {2, 0, 3}); classes 0..3 local
    whole = Episode(
        0, 7, np.array([0, 1, 2, 3]), np.array([2]), np.array([1]), np.array([0, 1, 3, 4, 5]), np.array([0, 2, 2, 0, 3])
    )
    # a answered (2, 0): the set is right, the questions are not; c answered right -> questions 50 %, sets 100 %
    metrics = score_method(
        FixedPredictions([2, 0, 2, 0, 3]),
        torch.zeros(1, 2, 2),
        whole,
        torch.zeros(5, 2, 2),
        question_groups(questions, whole.query),
    )
    assert metrics["exact_match_questions"] == pytest.approx(50.0)
    assert metrics["exact_match_sets"] == pytest.approx(100.0)
    assert metrics["accuracy"] == pytest.approx(60.0)
    partial = Episode(
        1, 7, whole.classes, whole.support, whole.support_labels, np.array([0, 1, 3]), np.array([0, 2, 2])
    )
    assert clip_groups(questions, [whole])[0].tolist() == [0, 0, 1, 1, 1]
    assert clip_groups(questions, [whole, partial]) == [None, None], "c#1, c#2 missing: left out for every episode"
    plain = Episode(2, 7, whole.classes, np.array([0]), np.array([0]), np.array([1, 2]), np.array([1, 2]))
    assert clip_groups(three_clips(), [plain]) == [None], "not a question table"
    assert clip_groups(None, [whole]) == [None]


def test_a_job_extracts_one_cache_row_per_question(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny AudioSet (official layout) through the pipeline with the tiny Qwen2-Audio, which reads the prompt:
    every question is its own cache row, computed from its own text."""
    import json

    from calm.backbones import build_backbone
    from calm.cache import ActivationCache
    from calm.data.audio import load_audio
    from calm.data.prompts import build_prompt
    from calm.extraction.row_inputs import model_key_fields
    from calm.run.pipeline import run_job
    from calm.testing.smoke_layouts import make_audioset
    from tests.cli import compose_config

    labels = [("/m/a", "alarm"), ("/m/b", "bark"), ("/m/c", "chime")]
    train = [
        ("train0000001", 0.0, 10.0, "/m/a,/m/c"),
        ("train0000002", 0.0, 10.0, "/m/b"),
        ("train0000003", 0.0, 10.0, "/m/c,/m/b"),
    ]
    evaluation = [("evalu000001", 0.0, 10.0, "/m/a,/m/b"), ("evalu000002", 0.0, 10.0, "/m/c")]
    clips = {f"{ytid}_000000.flac": "balanced_train" for ytid, *_ in train}
    clips |= {f"{ytid}_000000.flac": "eval" for ytid, *_ in evaluation}
    root = make_audioset(tmp_path / "audioset", labels, train, evaluation, clips)
    monkeypatch.setenv("CALM_CACHE", str(tmp_path / "cache"))
    cfg = compose_config(
        [
            "logger=none",
            "backbone=tiny_qwen2_audio",
            f"backbone.path={tmp_path / 'tiny'}",
            "dataset=audioset",
            f"dataset.root={root}",
            "prompt=paper",
            "prompt.per_label_questions=true",
            "shots=1",
            "queries=1",
            "episodes=2",
            "figures=false",
        ],
        tmp_path / "out",
    )
    result = run_job(cfg)
    # the test questions are evalu000001#0 (alarm), #1 (bark) and evalu000002 (chime): one query per class,
    # so every episode holds every question of its query clips and the clip-level scores are reported
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    calm = next(r for r in results["results"] if r["method"] == "calm")
    assert {"exact_match_questions_mean", "exact_match_sets_mean"} <= set(calm)
    for name in ("exact_match_questions_mean", "exact_match_sets_mean"):  # two clips per episode
        assert calm[name] in (0.0, 25.0, 50.0, 75.0, 100.0)
    backbone, prompt = build_backbone(cfg.backbone, "32-true"), build_prompt(cfg.prompt)
    cache = ActivationCache.open_path(
        Path(result["cache"]["path"]), model_key_fields(backbone, prompt), backbone.n_heads, backbone.head_dim
    )
    questions = {
        "train0000001_000000#0",
        "train0000001_000000#1",
        "train0000002_000000",
        "train0000003_000000#0",
        "train0000003_000000#1",
        "evalu000001_000000#0",
        "evalu000001_000000#1",
        "evalu000002_000000",
    }
    cached = cache.cached_ids()
    assert {"evalu000001_000000#0", "evalu000001_000000#1", "evalu000002_000000"} <= cached <= questions
    assert result["cache"]["extracted"] == len(cached)
    pair = ["evalu000001_000000#0", "evalu000001_000000#1"]
    rows = cache.read(pair)
    assert not torch.equal(rows[0], rows[1]), "two questions of one clip share a row"
    from calm.data.registry import read_dataset

    table = question_table(read_dataset(cfg.dataset, cfg.paths.data_dir).table)
    by_id = {q.id: q for q in table.clips}
    texts = [prompt.text_for(by_id[q], table) for q in pair]
    assert "alarm" in texts[0] and "bark" not in texts[0] and "bark" in texts[1] and "alarm" not in texts[1]
    backbone.load()
    waves = [load_audio(by_id[q].audio_path, backbone.sample_rate) for q in pair]
    direct = backbone.capture(backbone.collate(waves, texts))
    torch.testing.assert_close(rows, direct.to(torch.float16).float(), atol=2e-3, rtol=2e-3)


def test_per_label_questions_with_a_backbone_that_ignores_the_prompt_are_refused() -> None:
    """Whisper never reads the prompt: the questions of a clip would be one row under several labels."""
    whisper = SimpleNamespace(name="whisper_tiny", uses_prompt_text=False)
    questions = job_table(three_clips(), PaperPrompt(per_label_questions=True))
    with pytest.raises(ConfigError, match="does not read the prompt text") as err:
        check_questions_are_read(questions, whisper)
    assert "prompt.per_label_questions=false" in err.value.fix
    check_questions_are_read(questions, SimpleNamespace(name="qwen2_audio", uses_prompt_text=True))
    check_questions_are_read(three_clips(), whisper)  # one row per clip: nothing asked twice
