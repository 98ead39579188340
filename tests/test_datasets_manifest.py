"""dataset=manifest on manifests the tests write in the authors' exact schema (calm/tables/manifest_schema.py):
path mapping, missing files, duplicates, overlap, the verbatim question, AudioSet, pseudo-labelled
and audio-visual entries."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from calm.backbones.qwen2_audio import Qwen2AudioBackbone
from calm.data.__main__ import dataset_config, main
from calm.data.manifest import load_manifests
from calm.data.manifest_overlap import leak_shares, pair_overlaps, summarize_manifests
from calm.data.manifest_paths import PathMapper
from calm.data.manifest_prompt import ManifestPrompt
from calm.data.prompts import build_prompt
from calm.data.registry import read_dataset
from calm.data.table import QUERY_SPLIT, RELIABILITY_SPLIT, SUPPORT_SPLIT, Clip, ClipTable
from calm.errors import DataError
from calm.extraction.row_inputs import row_inputs
from calm.protocols import PaperProtocol, Pools, shared_file_marks
from calm.storage.file_digests import FileDigests
from calm.tables.manifest_schema import audioset, mcq, pseudo, write
from calm.testing.tiny import build_tiny_qwen2_audio
from tests.cli import family_backbone, run_cli

ESC = "/data/sls/scratch/sbhati/SSM/VMamba-ast/egs/esc50/data/ESC-50-master/audio_16k/"
CLASSES = ["dog", "rain", "siren", "clock_tick"]


def _esc(name: str, label: str, first: str | None = None) -> dict:
    """An ESC-50 entry; `first` puts that option first (another option order for the same clip)."""
    others = [c for c in CLASSES if c != label]
    options = [label, *others] if first is None else [first, *[c for c in [label, *others] if c != first]]
    return mcq(ESC + name, label, options, code=f"/m/07rwj{CLASSES.index(label):02d}")


def _touch(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"RIFF")


def _load(tmp_path: Path, root: Path, **roles: list[dict]) -> tuple:
    files = {role: write(tmp_path / "manifests" / f"esc_{role}.json", entries) for role, entries in roles.items()}
    return load_manifests(files, PathMapper(root, ["ESC-50-master/audio_16k/"]), extensions=[".wav", ".flac"])


def _dataset(tmp_path: Path, root: Path, settings: list[str]):
    cfg, data_dir = dataset_config("manifest", str(root), settings)
    return read_dataset(cfg, data_dir)


def test_foreign_absolute_paths_are_mapped_onto_the_root(tmp_path: Path) -> None:
    root = tmp_path / "clips"
    _touch(root, "1-100-A-0.wav", "deep/er/2-200-A-1.wav", "vgg/abc_000030.wav")
    table, missing = _load(
        tmp_path,
        root,
        support=[_esc("1-100-A-0.wav", "dog")],
        test=[
            mcq("/somewhere/else/entirely/2-200-A-1.wav", "rain", ["rain", "dog"]),
            mcq("/cluster/audio_16k/abc_000030.flac", "dog", ["siren", "dog"]),
        ],
    )
    assert missing == []
    assert [c.audio_path for c in table.clips] == [
        root / "1-100-A-0.wav",
        root / "deep/er/2-200-A-1.wav",
        root / "vgg/abc_000030.wav",
    ]
    assert [c.meta["wav"] for c in table.clips][0] == ESC + "1-100-A-0.wav"


def test_an_anchored_path_may_not_leave_the_root(tmp_path: Path) -> None:
    root = tmp_path / "clips"
    _touch(root, "x.wav")
    with pytest.raises(DataError, match="outside the dataset root"):
        PathMapper(root, ["audio_16k/"]).locate("/c/audio_16k/../../x.wav")


def test_an_ambiguous_basename_is_refused_naming_the_candidates(tmp_path: Path) -> None:
    root = tmp_path / "clips"
    _touch(root, "fold1/1-100-A-0.wav", "fold2/1-100-A-0.wav")
    with pytest.raises(DataError, match="matches 2 files") as err:
        _load(tmp_path, root, support=[mcq("/other/1-100-A-0.wav", "dog", CLASSES)], test=[_esc("none.wav", "dog")])
    assert str(root / "fold1/1-100-A-0.wav") in str(err.value) and str(root / "fold2/1-100-A-0.wav") in str(err.value)


def test_missing_files_are_an_error_counting_them_or_a_listed_skip(tmp_path: Path) -> None:
    root = tmp_path / "clips"
    _touch(root, "1-1-A-0.wav", "1-2-A-1.wav")
    support = write(
        tmp_path / "m/train.json", [_esc("1-1-A-0.wav", "dog"), _esc("gone-1.wav", "dog"), _esc("1-2-A-1.wav", "rain")]
    )
    test = write(tmp_path / "m/test.json", [_esc("gone-2.wav", "rain"), _esc("1-2-A-1.wav", "rain")])
    settings = [f"manifests.support={support}", f"manifests.test={test}"]
    with pytest.raises(DataError, match=r"2 manifest entries name files not found") as err:
        _dataset(tmp_path, root, settings)
    assert "train:1 " + ESC + "gone-1.wav" in str(err.value) and "on_missing=skip" in str(err.value)
    loaded = _dataset(tmp_path, root, [*settings, "on_missing=skip"])
    assert loaded.missing == ("train:1 " + ESC + "gone-1.wav", "test:0 " + ESC + "gone-2.wav")
    assert loaded.table.ids == ["train:0", "train:2", "test:1"]
    loaded.write_missing(tmp_path / "missing_clips.txt")
    assert (tmp_path / "missing_clips.txt").read_text().splitlines() == list(loaded.missing)


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory: pytest.TempPathFactory) -> Qwen2AudioBackbone:
    backbone = family_backbone(
        Qwen2AudioBackbone, path=str(build_tiny_qwen2_audio(tmp_path_factory.mktemp("tiny_qwen2_audio")))
    )
    backbone.load()
    return backbone


def test_a_clip_twice_in_support_is_two_rows_sharing_the_audio_digest(tmp_path: Path, tiny_qwen) -> None:
    root = tmp_path / "clips"
    _touch(root, "1-1-A-0.wav", "1-2-A-1.wav")
    (root / "1-2-A-1.wav").write_bytes(b"RIFF-other")
    support = [_esc("1-1-A-0.wav", "dog"), _esc("1-2-A-1.wav", "rain"), _esc("1-1-A-0.wav", "dog", first="siren")]
    table, _ = _load(tmp_path, root, support=support, test=[_esc("1-2-A-1.wav", "rain")])
    assert table.ids == ["esc_support:0", "esc_support:1", "esc_support:2", "esc_test:0"]
    assert table.clips[0].audio_path == table.clips[2].audio_path and table.clips[0].label == table.clips[2].label
    assert json.loads(table.clips[2].meta["options"])[0] == "siren"
    inputs = row_inputs(
        tiny_qwen,
        table,
        build_prompt({"_target_": "calm.data.manifest_prompt.ManifestPrompt", "name": "manifest"}),
        FileDigests(None),
    )
    assert inputs["esc_support:0"].audio == inputs["esc_support:2"].audio
    assert inputs["esc_support:0"].prompt != inputs["esc_support:2"].prompt  # two questions, two cache rows
    summary = {s.name: s for s in summarize_manifests(tmp_path / "manifests", PathMapper(root))[0]}
    assert (summary["esc_support.json"].entries, len(summary["esc_support.json"].clips)) == (3, 2)
    assert summary["esc_support.json"].per_class == (1, 1.5, 2)


def test_clips_in_support_and_test_are_counted_as_overlap_and_leak(tmp_path: Path, capsys) -> None:
    root = tmp_path / "clips"
    names = [f"1-{i}-A-0.wav" for i in range(6)]
    _touch(root, *names)
    support = [_esc(n, "dog") for n in names[:4]] + [_esc(names[3], "dog", first="rain")]
    test = [_esc(n, "dog") for n in names[2:6]]
    table, _ = _load(tmp_path, root, support=support, val=[_esc(names[5], "dog")], test=test)
    pair = {
        (p.first, p.second): p for p in pair_overlaps(summarize_manifests(tmp_path / "manifests", PathMapper(root))[0])
    }
    shared = pair[("esc_support.json", "esc_test.json")]
    assert (shared.shared, shared.of_first, shared.of_second) == (2, 50.0, 50.0)
    assert pair[("esc_support.json", "esc_val.json")].shared == 0
    shares = leak_shares(table)
    assert (shares[SUPPORT_SPLIT].rows, shares[SUPPORT_SPLIT].leaking_rows) == (5, 3)  # the repeat counts twice
    assert (shares[SUPPORT_SPLIT].files, shares[SUPPORT_SPLIT].leaking_files) == (4, 2)
    assert shares[RELIABILITY_SPLIT].row_share == 1.0
    assert main(["manifests", str(tmp_path / "manifests"), "--root", str(root), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    listed = {(p["first"], p["second"]): p["shared_clips"] for p in report["pairs"]}
    assert listed == {
        ("esc_support.json", "esc_test.json"): 2,
        ("esc_support.json", "esc_val.json"): 0,
        ("esc_test.json", "esc_val.json"): 1,
    }
    assert [
        (m["manifest"], m["entries"], m["distinct_clips"], m["found"], m["missing"]) for m in report["manifests"]
    ] == [("esc_support.json", 5, 4, 4, 0), ("esc_test.json", 4, 4, 4, 0), ("esc_val.json", 1, 1, 1, 0)]


def test_the_rendered_prompt_holds_the_manifest_question_byte_for_byte(tmp_path: Path, tiny_qwen) -> None:
    root = tmp_path / "clips"
    _touch(root, "1-1-A-0.wav")
    entry = _esc("1-1-A-0.wav", "dog")
    entry["question"] = "What caption does the given audio belong to?\nA. dog  B. café_{x} C. rain_ wind D. siren"
    table, _ = _load(tmp_path, root, support=[entry], test=[_esc("1-1-A-0.wav", "dog")])
    prompt = build_prompt(dataset_config_prompt())
    text = prompt.text_for(table.clips[0], table)
    assert text == entry["question"] + " Answer with the class name."
    rendered = tiny_qwen.render_prompt(text)
    assert entry["question"].encode() in rendered.encode()
    ids = tiny_qwen.collate([np.zeros(1600, dtype=np.float32)], [text])["input_ids"][0]
    assert entry["question"] in tiny_qwen.processor.tokenizer.decode(ids)


def dataset_config_prompt() -> dict:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from calm.config.assets import REPO_ROOT

    with initialize_config_dir(str(REPO_ROOT / "configs"), version_base="1.3"):
        return OmegaConf.to_container(compose("config", overrides=["prompt=manifest"]).prompt, resolve=True)


def test_audioset_entries_are_one_row_per_question_grouped_by_clip(tmp_path: Path) -> None:
    root = tmp_path / "audioset"
    _touch(root, "--4gqARaEJE.flac", "--BfvyPmVMo.flac", "-0BIyqJj9ZU.flac")
    base = "/data/sls/audioset/dave_version/audio/"
    train = audioset(
        base + "--4gqARaEJE.flac", ["Dog", "Bark"], 0, [["Coo", "Hammer"], ["Music", "Coo"]], test=False
    ) + audioset(base + "-0BIyqJj9ZU.flac", ["Hammer"], 986, [["Dog", "Coo"]], test=False)
    test = audioset(base + "--BfvyPmVMo.flac", ["Music", "Dog"], 3, [["Bark", "Coo"], ["Hammer", "Bark"]], test=True)
    assert "correct_label" in test[0] and "mapped_label" not in test[0]
    files = {"support": write(tmp_path / "m/as_train.json", train), "test": write(tmp_path / "m/as_test.json", test)}
    table, _ = load_manifests(files, PathMapper(root, ["dave_version/audio/"]))
    assert table.class_names == ("Bark", "Dog", "Hammer", "Music")
    names = [table.class_names[c.label] for c in table.clips]
    assert names == ["Dog", "Bark", "Hammer", "Music", "Dog"]
    assert [c.split for c in table.clips] == [SUPPORT_SPLIT] * 3 + [QUERY_SPLIT] * 2
    assert table.clips[0].question_of == table.clips[1].question_of == "as_train:sample:0"
    assert table.clips[3].question_of == table.clips[4].question_of == "as_test:sample:3"
    assert table.clips[0].clip_labels == (1, 0) and table.clips[4].clip_labels == (1, 3)
    assert table.clips[2].question_of == "as_train:sample:986"
    assert table.clips[3].meta["answer"] == "B"


def test_pseudo_labels_use_the_models_label_and_keep_the_truth(tmp_path: Path) -> None:
    root = tmp_path / "clips"
    _touch(root, "1-1-A-0.wav", "1-2-A-1.wav", "x.flac")
    trials = ["rain", "", "rain", "rain ", "the audio is rain", "rain", "dog", "Rain"]
    support = [
        pseudo(_esc("1-1-A-0.wav", "dog"), "rain", trials),
        pseudo(_esc("1-2-A-1.wav", "rain"), "rain", ["rain"] * 8),
    ]
    as_entry = {
        **audioset("/c/x.flac", ["Dog", "Bark"], 5, [["Coo", "Hammer"], ["Coo", "Hammer"]], test=False)[1],
        "answer": "Music",
        "label": "Music",
        "mapped_label": "Music",
        "pseudo_label_confidence": 0.875,
    }
    del support[0]["vote_count"]  # votes then counted from the raw trial strings: 3 of 8 are exactly "rain"
    test = [_esc("1-1-A-0.wav", "dog"), as_entry]
    table, _ = _load(tmp_path, root, support=support, test=test)
    wrong = table.clips[0]
    assert table.class_names[wrong.label] == "rain"  # the model's label, not the truth
    assert (wrong.meta["true_label"], wrong.meta["true_class"]) == ("/m/07rwj00", "dog")
    assert (wrong.meta["votes"], wrong.meta["trials"], wrong.meta["confidence"]) == ("3", "8", "0.375")
    assert table.clips[1].meta["confidence"] == "1.0"
    music = table.clips[3]
    assert table.class_names[music.label] == "Music" and music.meta["true_label"] == "Bark"
    assert (music.meta["votes"], music.meta["trials"], music.meta["file_confidence"]) == ("7", "8", "0.875")
    assert "true_label" not in table.clips[2].meta


def test_pseudo_labels_truth_relabels_with_the_true_class_for_regenerating(tmp_path: Path) -> None:
    """dataset.pseudo_labels=truth (the replay's `regenerate`): a pseudo-labelled row gets its true class
    (the code named by a labelled entry; AudioSet's true label by name), its votes still in meta; a code no
    labelled entry names is refused; the multiple-choice options are the entry's own, as class ids."""
    root = tmp_path / "clips"
    _touch(root, "1-1-A-0.wav", "x.flac")
    support = [pseudo(_esc("1-1-A-0.wav", "dog", first="siren"), "rain", ["rain"] * 5 + ["dog"] * 3)]
    as_entry = {
        **audioset("/c/x.flac", ["Dog", "Bark"], 5, [["Coo", "Hammer"], ["Coo", "Hammer"]], test=False)[1],
        "mapped_label": "Coo",
        "pseudo_label_confidence": 0.5,
    }
    files = {
        "support": write(tmp_path / "m/s.json", support + [as_entry]),
        "test": write(tmp_path / "m/t.json", [_esc("1-1-A-0.wav", "dog")]),
    }
    mapper = PathMapper(root, ["ESC-50-master/audio_16k/"])
    shipped, _ = load_manifests(files, mapper, extensions=[".wav", ".flac"])
    truth, _ = load_manifests(files, mapper, extensions=[".wav", ".flac"], pseudo_labels="truth")
    assert [shipped.class_names[c.label] for c in shipped.clips] == ["rain", "Coo", "dog"]
    assert [truth.class_names[c.label] for c in truth.clips] == ["dog", "Bark", "dog"]
    assert truth.clips[0].meta["votes"] == "5"
    prompt = ManifestPrompt()
    assert [truth.class_names[i] for i in prompt.option_ids(truth.clips[0], truth)] == ["dog"]  # siren: no class
    files["test"] = write(tmp_path / "m/t.json", [mcq("/a/1-1-A-0.wav", "dog", ["dog"], code="/m/other")])
    with pytest.raises(DataError, match="pseudo_labels=truth needs its true class"):
        load_manifests(files, mapper, extensions=[".wav", ".flac"], pseudo_labels="truth")


def test_audio_visual_entries_map_their_video(tmp_path: Path) -> None:
    root = tmp_path / "vggsound"
    _touch(root, "audio/I2S72eajLzw_000030.wav", "video/I2S72eajLzw_000030.mp4", "audio/cUzDGcBVrlE_000030.wav")
    audio = "/data/sls/scratch/yuangong/avbyol2/egs/vggsound/preprocess/data/audio_16k/"
    video = "/data/sls/placesaudio/datasets/VGGSound/video/"
    organ = ["horse neighing", "playing hammond organ", "race car_ auto racing", "playing cymbal"]
    entries = [
        mcq(audio + f"{s}.flac", "playing hammond organ", organ, code="vgg_47", video=video + f"{s}.mp4")
        for s in ("I2S72eajLzw_000030", "cUzDGcBVrlE_000030")
    ]
    assert list(entries[0]) == ["wav", "video", "question", "answer", "label", "mapped_label", "options"]
    support = write(tmp_path / "m/vgg_video_train.json", entries[:1])
    test = write(tmp_path / "m/vgg_video_test.json", entries)
    settings = [f"manifests.support={support.name}", f"manifests.test={test.name}", f"manifests_dir={support.parent}"]
    with pytest.raises(DataError, match="1 manifest entries") as err:
        _dataset(tmp_path, root, settings)
    assert video + "cUzDGcBVrlE_000030.mp4" in str(err.value)
    table = _dataset(tmp_path, root, [*settings, "on_missing=skip"]).table
    assert [(c.audio_path, c.video_path) for c in table.clips] == [
        (root / "audio/I2S72eajLzw_000030.wav", root / "video/I2S72eajLzw_000030.mp4")
    ] * 2
    audio_only = _dataset(tmp_path, root, [*settings, "read_video=false"]).table
    assert len(audio_only) == 3 and all(c.video_path is None for c in audio_only.clips)


def test_asvspoof_entries_without_options_are_read(tmp_path: Path) -> None:
    root = tmp_path / "LA"
    _touch(root, "ASVspoof2019_LA_train/flac/LA_T_8326861.flac", "ASVspoof2019_LA_train/flac/LA_T_5837486.flac")
    question = "Is this audio bonafide or spoofed? \n bonafide\n spoofed"
    base = "/data/sls/scratch/mvideet/datasets/LA/ASVspoof2019_LA_train/flac/"
    entries = [
        {"wav": base + f"LA_T_{n}.flac", "question": question, "answer": label, "mapped_label": label}
        for n, label in (("8326861", "spoof"), ("5837486", "bonafide"))
    ]
    path = write(tmp_path / "m/LA_train.json", entries)
    table, missing = load_manifests({"support": path, "test": path}, PathMapper(root))
    assert missing == [] and table.class_names == ("bonafide", "spoof")
    assert [table.class_names[c.label] for c in table.clips[:2]] == ["spoof", "bonafide"]
    assert table.clips[0].meta["question"] == question and table.clips[0].meta["options"] == "[]"


def test_one_file_named_for_two_roles_gets_role_prefixed_ids(tmp_path: Path) -> None:
    root = tmp_path / "clips"
    _touch(root, "1-1-A-0.wav")
    path = write(tmp_path / "m/esc_mcq_test.json", [_esc("1-1-A-0.wav", "dog")])
    table, _ = load_manifests({"support": path, "val": path, "test": path}, PathMapper(root))
    assert table.ids == ["support:esc_mcq_test:0", "val:esc_mcq_test:0", "test:esc_mcq_test:0"]


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        ({"wav": "/a.wav", "question": "Q", "options": ["a"], "label": "/m/x"}, "entry 0 has no mapped_label"),
        ({"wav": "/a.wav", "options": ["a"], "mapped_label": "a"}, "entry 0 has no question"),
        ({"wav": "/a.wav", "question": "Q", "mapped_label": "a", "vote_count": "many"}, "bad pseudo-label fields"),
        ({"wav": "/a.wav", "question": "Q", "options": "a b", "mapped_label": "a"}, "options must be a list"),
        ({"question": "Q", "options": ["a"], "mapped_label": "a"}, "entry 0 has no wav"),
    ],
)
def test_entries_outside_the_schema_are_named(tmp_path: Path, entry: dict, match: str) -> None:
    bad = write(tmp_path / "bad.json", [entry])
    with pytest.raises(DataError, match=match):
        load_manifests({"support": bad, "test": bad}, PathMapper(tmp_path))


def test_prompt_manifest_refuses_rows_without_a_question(tmp_path: Path) -> None:
    table = ClipTable("folder", (Clip("a", tmp_path / "a.wav", 0, SUPPORT_SPLIT),), ("dog",))
    prompt = build_prompt(dataset_config_prompt())
    with pytest.raises(DataError, match="prompt=manifest reads each entry's question"):
        prompt.text_for(table.clips[0], table)


def test_results_rows_are_marked_when_support_or_val_rows_are_test_clips(tmp_path: Path) -> None:
    root = tmp_path / "clips"
    names = [f"1-{i}-A-{k}.wav" for k in range(2) for i in range(3)]
    _touch(root, *names)
    label = {n: CLASSES[int(n[-5])] for n in names}
    support = [_esc(n, label[n]) for n in names[:2] + names[3:5]] + [_esc(names[0], label[names[0]], first="rain")]
    test = [_esc(n, label[n]) for n in (names[0], names[2], names[5])]
    table, _ = _load(
        tmp_path,
        root,
        support=support,
        val=[_esc(names[5], label[names[5]]), _esc(names[4], label[names[4]])],
        test=test,
    )
    episodes = PaperProtocol(shots=1, support_draw="all").episodes(Pools.from_table(table))
    fields, notes = shared_file_marks(table, episodes)
    assert fields == {"leaks_test_clips": True, "support_test_clip_share": 2 / 5, "val_test_clip_share": 1 / 2}
    assert notes[0].startswith("the same audio file as a test clip: 40.0% of the 5 support rows (1 of 4 distinct")
    clean, _ = _load(tmp_path / "clean", root, support=support[1:4], test=[_esc(n, label[n]) for n in names[2::3]])
    assert shared_file_marks(clean, PaperProtocol(shots=1, support_draw="all").episodes(Pools.from_table(clean))) == (
        {},
        [],
    )


@pytest.mark.slow
def test_run_py_replays_manifests_over_real_fsdd_clips(tmp_path: Path, fsdd_root: Path) -> None:
    digits = ["zero", "one", "two"]

    def entry(digit: int, speaker: str, index: int, shift: int = 0) -> dict:
        options = [digits[(digit + shift + k) % 3] for k in range(3)]
        return mcq(
            f"/data/sls/scratch/fsdd/recordings/{digit}_{speaker}_{index}.wav",
            digits[digit],
            options,
            code=f"fsdd_{digit}",
        )

    support = [entry(d, "george", i) for d in range(3) for i in range(2)] + [entry(0, "george", 0, shift=1)]
    test = [entry(d, "lucas", i) for d in range(3) for i in range(2)] + [entry(1, "george", 1)]
    files = {role: write(tmp_path / f"m/fsdd_{role}.json", rows) for role, rows in (("train", support), ("test", test))}
    out = tmp_path / "out"
    done = run_cli(
        [
            "dataset=manifest",
            f"dataset.root={fsdd_root}",
            f"dataset.manifests.support={files['train']}",
            f"dataset.manifests.test={files['test']}",
            "prompt=manifest",
            "backbone=tiny_qwen2_audio",
            "protocol=paper",
            "protocol.support_draw=all",
            "method=calm_vs_sav",
            "logger=none",
            f"paths.data_dir={tmp_path / 'data'}",
        ],
        out,
        tmp_path / "cache",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    calm = next(r for r in results["results"] if r["method"] == "calm")
    assert (calm["queries"], calm["support_per_class_min"], calm["support_per_class_max"]) == (7, 2, 3)
    assert calm["leaks_test_clips"] and calm["support_test_clip_share"] == 1 / 7


def test_clean_pseudo_labelling_refuses_the_manifest_prompt() -> None:
    from calm.baselines.pseudo_label import PseudoLabelSettings
    from calm.data.manifest_prompt import ManifestPrompt
    from calm.errors import ConfigError

    with pytest.raises(ConfigError, match="prompt=manifest: its options show each clip's true label"):
        PseudoLabelSettings(prompt="clean", refit=("calm",)).check(["calm"], ManifestPrompt())
