import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from calm.backbones.whisper import WhisperBackbone
from calm.cache import INDEX_FILE, ActivationCache
from calm.data.audio import load_audio
from calm.data.fsdd import load_fsdd
from calm.data.prompts import Prompt
from calm.errors import DataError
from calm.extraction.extract import extract_missing, plan_batches
from calm.extraction.row_inputs import model_key_fields

TRAINER = {"accelerator": "cpu", "devices": 1, "precision": "32-true", "enable_progress_bar": False}


def _small_fsdd(fsdd_root: Path, dest: Path, names: list[str]) -> Path:
    (dest / "recordings").mkdir(parents=True)
    for name in names:
        shutil.copy(fsdd_root / "recordings" / f"{name}.wav", dest / "recordings")
    return dest


def _open(tmp_path: Path, backbone: WhisperBackbone) -> ActivationCache:
    return ActivationCache.open(
        tmp_path / "cache",
        model_key_fields(backbone, Prompt()),
        backbone.n_heads,
        backbone.head_dim,
        label=backbone.name,
    )


NAMES = ["0_george_0", "1_jackson_5", "2_lucas_9", "3_nicolas_1", "4_yweweler_20"]


def test_lightning_extraction_fills_the_cache_with_the_backbone_rows(tmp_path: Path, fsdd_root: Path, whisper) -> None:
    table = load_fsdd(_small_fsdd(fsdd_root, tmp_path / "fsdd", NAMES))
    backbone = WhisperBackbone(path=whisper.source)
    cache = _open(tmp_path, backbone)
    report = extract_missing(backbone, table, Prompt(), cache, TRAINER, batch_size=2)
    assert report.extracted == 5 and not report.skipped
    rows = cache.read(table.ids)
    waves = [load_audio(c.audio_path, 16000) for c in table.clips]
    direct = whisper.capture(whisper.collate(waves, ["q"] * 5)).to(torch.float16).float()
    torch.testing.assert_close(rows, direct, atol=2e-3, rtol=2e-3)

    again = WhisperBackbone(path=whisper.source)
    report = extract_missing(again, table, Prompt(), _open(tmp_path, again), TRAINER, batch_size=2)
    assert report.extracted == 0 and again.model is None, "a fully cached table must not load the model"


def test_bad_clip_is_an_error_before_the_model_loads(tmp_path: Path, fsdd_root: Path, whisper) -> None:
    root = _small_fsdd(fsdd_root, tmp_path / "fsdd", NAMES[:3])
    (root / "recordings" / "5_george_1.wav").write_bytes(b"RIFF....garbage")
    table = load_fsdd(root)
    backbone = WhisperBackbone(path=whisper.source)
    with pytest.raises(DataError, match="5_george_1.wav"):
        extract_missing(backbone, table, Prompt(), _open(tmp_path, backbone), TRAINER)
    assert backbone.model is None


def test_bad_clips_are_skipped_and_listed_when_asked(tmp_path: Path, fsdd_root: Path, whisper) -> None:
    root = _small_fsdd(fsdd_root, tmp_path / "fsdd", NAMES[:3])
    (root / "recordings" / "5_george_1.wav").write_bytes(b"RIFF....garbage")
    sf.write(root / "recordings" / "6_george_2.wav", np.zeros(0, np.float32), 8000)
    table = load_fsdd(root)
    backbone = WhisperBackbone(path=whisper.source)
    cache = _open(tmp_path, backbone)
    report = extract_missing(backbone, table, Prompt(), cache, TRAINER, on_bad_clip="skip")
    assert sorted(report.skipped) == ["5_george_1", "6_george_2"]
    assert report.extracted == 3 and sorted(cache.cached_ids()) == sorted(NAMES[:3])
    report.write_skips(tmp_path / "skipped_clips.tsv")
    lines = (tmp_path / "skipped_clips.tsv").read_text().splitlines()
    assert lines[0] == "clip_id\treason" and lines[1].startswith("5_george_1\tcannot decode")
    assert "empty" in lines[2]


def test_batches_are_planned_from_the_whole_table_longest_first() -> None:
    durations = {"a": 1.0, "b": 3.0, "c": 2.0, "d": 3.0}
    assert plan_batches(list(durations), durations, 2) == [["b", "d"], ["c", "a"]]


def test_long_clips_warn_with_their_names_or_fail_by_config(
    tmp_path: Path, fsdd_root: Path, whisper, caplog: pytest.LogCaptureFixture
) -> None:
    root = _small_fsdd(fsdd_root, tmp_path / "fsdd", NAMES[:2])
    sf.write(root / "recordings" / "9_george_3.wav", np.zeros(8000 * 31, np.float32), 8000)
    table = load_fsdd(root)
    backbone = WhisperBackbone(path=whisper.source)
    with pytest.raises(DataError, match=r"longer than the model's 30 s audio window: .*9_george_3.wav \(31.0 s\)"):
        extract_missing(backbone, table, Prompt(), _open(tmp_path, backbone), TRAINER, on_long_clip="error")
    assert backbone.model is None
    with caplog.at_level("WARNING", logger="calm.extraction.extract"):
        report = extract_missing(backbone, table, Prompt(), _open(tmp_path, backbone), TRAINER)
    assert report.extracted == 3
    assert "9_george_3.wav (31.0 s)" in caplog.text and "truncated" in caplog.text


def test_rows_of_an_older_cache_format_are_recomputed_counted_as_unknown_and_logged(
    tmp_path: Path, fsdd_root: Path, whisper, caplog: pytest.LogCaptureFixture
) -> None:
    table = load_fsdd(_small_fsdd(fsdd_root, tmp_path / "fsdd", NAMES[:2]))
    backbone = WhisperBackbone(path=whisper.source)
    cache = _open(tmp_path, backbone)
    assert extract_missing(backbone, table, Prompt(), cache, TRAINER).extracted == 2
    index, meta = cache.path / INDEX_FILE, cache.path / "meta.json"
    index.write_text("".join("\t".join(line.split("\t")[:2]) + "\n" for line in index.read_text().splitlines()))
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "format": 1}))  # as calm wrote caches before
    with caplog.at_level("INFO", logger="calm.extraction.extract"):
        report = extract_missing(backbone, table, Prompt(), _open(tmp_path, backbone), TRAINER)
    assert report.extracted == 2 and report.recomputed == {"audio": 0, "prompt": 0, "unknown": 2}
    assert "recomputing 2 cached rows whose inputs changed" in caplog.text
    again = extract_missing(backbone, table, Prompt(), _open(tmp_path, backbone), TRAINER)
    assert again.extracted == 0 and not any(again.recomputed.values())


def test_rows_record_their_batch_and_duration_and_the_long_clip_policy_holds_for_cached_rows(
    tmp_path: Path, fsdd_root: Path, whisper, caplog: pytest.LogCaptureFixture
) -> None:
    """Items 10 and 4 of issue 16. Batch composition moves fp16 rows by up to one float16 step, so each row's
    index line records the clips in its forward pass (and its clip's duration); neither keys the row. Rows
    extracted under on_long_clip=truncate do not let a later on_long_clip=error job through, whether the
    rows recorded their clip's duration or (an older cache) did not; a cached run under truncate names the
    truncated clips again."""
    root = _small_fsdd(fsdd_root, tmp_path / "fsdd", NAMES[:2])
    sf.write(root / "recordings" / "9_george_3.wav", np.zeros(8000 * 31, np.float32), 8000)
    table = load_fsdd(root)
    backbone = WhisperBackbone(path=whisper.source)
    cache = _open(tmp_path, backbone)
    assert extract_missing(backbone, table, Prompt(), cache, TRAINER, batch_size=2).extracted == 3
    seconds = {c.id: sf.info(c.audio_path).duration for c in table.clips}
    batches = plan_batches(table.ids, seconds, 2)
    assert [len(b) for b in batches] == [2, 1]
    facts = cache.facts(table.ids)
    assert {cid: facts[cid].batch_size for cid in table.ids} == {cid: len(b) for b in batches for cid in b}
    assert {cid: facts[cid].seconds for cid in table.ids} == pytest.approx(seconds)

    refused = r"longer than the model's 30 s audio window: .*9_george_3.wav \(31.0 s\)"
    with pytest.raises(DataError, match=refused):
        extract_missing(backbone, table, Prompt(), _open(tmp_path, backbone), TRAINER, on_long_clip="error")
    with pytest.raises(DataError, match=refused):  # also when only a short clip is missing
        extract_missing(
            backbone,
            table,
            Prompt(),
            _open(tmp_path, backbone),
            TRAINER,
            on_long_clip="error",
            clip_ids=["9_george_3", "0_george_0"],
        )
    caplog.clear()
    with caplog.at_level("WARNING", logger="calm.extraction.plan"):  # another batch size reuses the rows
        assert extract_missing(backbone, table, Prompt(), _open(tmp_path, backbone), TRAINER).extracted == 0
    assert "9_george_3.wav (31.0 s)" in caplog.text and "truncated" in caplog.text

    index = cache.path / INDEX_FILE  # as a cache written before rows recorded durations
    index.write_text("".join("\t".join(line.split("\t")[:4]) + "\n" for line in index.read_text().splitlines()))
    fresh = WhisperBackbone(path=whisper.source)
    with pytest.raises(DataError, match=refused):
        extract_missing(fresh, table, Prompt(), _open(tmp_path, fresh), TRAINER, on_long_clip="error")
    assert fresh.model is None, "the policy is checked before any model loads"
