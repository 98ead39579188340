"""Issue 10, cases 1-3 and the cache half of 10: a cached row is served only when the exact inputs
that produced it (weights content, audio content, rendered prompt text) are unchanged, a changed one
is recomputed and counted in results.json, and a read-only cache holding every row is read without
writing. Real Whisper tiny.en heads on a few real FSDD clips (and the tiny Qwen2-Audio, which reads
the prompt text, for case 3), run in-process through `run_job`."""

from __future__ import annotations

import os
import shutil
import stat
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from calm.cache import LOCK_FILE
from calm.errors import CacheError
from calm.run.pipeline import run_job
from tests.cli import compose_config, small_fsdd

FAST = [
    "logger=none",
    "figures=false",
    "force=true",
    "shots=1",
    "queries=1",
    "ways=2",
    "episodes=1",
    "extract.batch_size=4",
    "trainer.accelerator=cpu",
]
WHISPER = ["backbone=whisper_tiny", *FAST]
INDICES = (0, 10)  # george's recordings of digits 0 and 1: one test clip and one support clip each
CLIPS = 4


def _settled(path: Path, age: float = 3600.0) -> Path:
    """Files last modified `age` seconds ago, as real data are: digests of files modified in the last
    seconds are not remembered (`calm.storage.file_digests.SETTLE_NS`)."""
    stamp = time.time() - age
    for file in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.utime(file, (stamp, stamp))
    return path


def _fsdd(fsdd_root: Path, dest: Path, indices: tuple[int, ...] = INDICES) -> Path:
    return _settled(small_fsdd(fsdd_root, dest, indices=indices, digits=(0, 1)))


@pytest.fixture(scope="module")
def fsdd_clips(tmp_path_factory: pytest.TempPathFactory, fsdd_root: Path) -> Path:
    return _fsdd(fsdd_root, tmp_path_factory.mktemp("fsdd"))


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory, fsdd_clips: Path) -> tuple[Path, dict[str, Any]]:
    """A cache holding every row of `fsdd_clips` (tests copy it), and the results of the run that filled it."""
    root = tmp_path_factory.mktemp("populated")
    return root / "cache", _run(root, "first", [*WHISPER, f"dataset.root={fsdd_clips}"])


def _copy_cache(populated: tuple[Path, dict[str, Any]], dest: Path) -> Path:
    shutil.copytree(populated[0], dest)
    return dest


def _run(tmp_path: Path, name: str, overrides: list[str], cache: Path | None = None) -> dict[str, Any]:
    cache = cache or tmp_path / "cache"
    return run_job(compose_config([*overrides, f"paths.cache_dir={cache}"], tmp_path / name))


def _copy(source: Path, dest: Path) -> Path:
    shutil.copytree(source, dest)
    for path in [dest, *dest.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)
    return dest


def test_case1_a_copy_of_the_weights_scaled_with_the_same_file_size_is_recomputed(
    tmp_path: Path, fsdd_clips: Path, whisper_dir: Path, populated: tuple[Path, dict[str, Any]]
) -> None:
    """The issue's case: copy whisper-tiny.en, scale its encoder weights by 0.5, save with safetensors
    (same file size), run with backbone.path=<copy> over a cache filled from the original."""
    cache = _copy_cache(populated, tmp_path / "cache")
    weights = _copy(whisper_dir, tmp_path / "whisper-copy")
    file = weights / "model.safetensors"
    with safe_open(str(file), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(file))
    save_file(
        {k: v * 0.5 if k.startswith("model.encoder.") else v for k, v in tensors.items()}, str(file), metadata=metadata
    )
    assert file.stat().st_size == (whisper_dir / "model.safetensors").stat().st_size
    assert not torch.equal(load_file(str(file))["model.encoder.conv1.weight"], tensors["model.encoder.conv1.weight"])

    scaled = _run(tmp_path, "scaled", [*WHISPER, f"dataset.root={fsdd_clips}", f"backbone.path={weights}"], cache=cache)
    assert scaled["cache"]["key"] != populated[1]["cache"]["key"], "other weights content must key another cache"
    assert scaled["cache"]["extracted"] == CLIPS


def test_case2_an_overwritten_clip_is_recomputed_and_counted_as_audio(
    tmp_path: Path, fsdd_root: Path, fsdd_clips: Path, populated: tuple[Path, dict[str, Any]]
) -> None:
    cache = _copy_cache(populated, tmp_path / "cache")
    data = _copy(fsdd_clips, tmp_path / "fsdd")  # the same clips (ids and bytes) as the populated cache's
    args = [*WHISPER, f"dataset.root={data}"]
    shutil.copy(fsdd_root / "recordings" / "1_jackson_0.wav", data / "recordings" / "0_george_0.wav")
    second = _run(tmp_path, "second", args, cache=cache)
    assert second["cache"]["key"] == populated[1]["cache"]["key"]
    assert second["cache"]["extracted"] == 1
    assert second["cache"]["recomputed"] == {"audio": 1, "prompt": 0, "unknown": 0}

    third = _run(tmp_path, "third", args, cache=cache)
    assert third["cache"]["extracted"] == 0
    assert third["cache"]["recomputed"] == {"audio": 0, "prompt": 0, "unknown": 0}


def test_case3_other_option_texts_for_the_same_clip_are_recomputed_and_counted_as_prompt(tmp_path: Path) -> None:
    from calm.testing.smoke_layouts import esc50_rows, make_esc50

    rows = esc50_rows(classes=3, per_class=5)  # dog and rooster are ESC-10 classes, pig is not
    make_esc50(tmp_path / "data", rows=rows, seconds=0.2)
    base = [
        "dataset=esc50",
        f"dataset.root={tmp_path / 'data'}",
        "backbone=tiny_qwen2_audio",
        f"backbone.path={tmp_path / 'tiny'}",
        "prompt=paper",
        *FAST,
    ]
    more = ["ways=null", "episodes=6"]  # episodes over every class, so the two runs share clips
    full = _run(tmp_path, "esc50", [*base, *more, "dataset.esc10=false"])
    used_full = _needed(tmp_path, [*base, *more, "dataset.esc10=false"])
    assert full["cache"]["extracted"] == full["cache"]["needed"] == len(used_full)

    subset = _run(tmp_path, "esc10", [*base, *more, "dataset.esc10=true"])
    used_subset = _needed(tmp_path, [*base, *more, "dataset.esc10=true"])
    shared = set(used_full) & set(used_subset)
    assert shared, "the ESC-10 run must reuse clips the first run cached with other option texts"
    assert subset["cache"]["key"] == full["cache"]["key"], "the class list is a per-row input, not a cache key"
    assert subset["cache"]["extracted"] == len(used_subset)
    assert subset["cache"]["recomputed"] == {"audio": 0, "prompt": len(shared), "unknown": 0}


def _needed(tmp_path: Path, overrides: list[str]) -> list[str]:
    """The clips a job's episodes use (what it extracts)."""
    from calm.run.job import prepare
    from calm.run.pipeline import needed_clips

    job = prepare(compose_config([*overrides, f"paths.cache_dir={tmp_path / 'cache'}"], tmp_path / "plan"))
    return needed_clips(job, job.protocol.episodes(job.pools))


def _tree(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else b"")
        for p in sorted(folder.rglob("*"))
    }


def _set_writable(folder: Path, writable: bool) -> None:
    for path in [folder, *folder.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode | stat.S_IWUSR if writable else mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def test_case10_a_read_only_cache_holding_every_row_is_read_without_writing(
    tmp_path: Path, fsdd_clips: Path, populated: tuple[Path, dict[str, Any]]
) -> None:
    """As root chmod stops nothing, so the test also proves no write happened: no file appears (not even
    the lock file, removed before the second run), none changes."""
    cache = _copy_cache(populated, tmp_path / "cache")
    for lock in cache.rglob(LOCK_FILE):
        lock.unlink()
    before = _tree(cache)
    _set_writable(cache, False)
    try:
        second = _run(tmp_path, "second", [*WHISPER, f"dataset.root={fsdd_clips}"], cache=cache)
    finally:
        _set_writable(cache, True)
    assert second["cache"]["extracted"] == 0 and second["results"] == populated[1]["results"]
    assert _tree(cache) == before


def test_case10_a_cache_dir_that_cannot_be_created_is_a_cache_error(tmp_path: Path, fsdd_clips: Path) -> None:
    """A cache folder below a regular file cannot be made, even by root."""
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(CacheError) as err:
        _run(tmp_path, "out", [*WHISPER, f"dataset.root={fsdd_clips}"], cache=tmp_path / "file" / "cache")
    assert str(tmp_path / "file" / "cache") in err.value.problem
    assert "paths.cache_dir" in err.value.fix


def test_case10_a_populated_cache_that_cannot_be_written_is_a_cache_error_when_rows_are_needed(
    tmp_path: Path, fsdd_root: Path, populated: tuple[Path, dict[str, Any]]
) -> None:
    """Rows are missing and the cache cannot take its lock: the lock file is a folder here, which no
    process (root included) can open for writing, standing in for a read-only cache."""
    cache = _copy_cache(populated, tmp_path / "cache")
    data = _fsdd(fsdd_root, tmp_path / "more", indices=(1, 11))  # other recordings: every row the job needs is missing
    folder = next(p for p in cache.iterdir() if p.is_dir())
    (folder / LOCK_FILE).unlink(missing_ok=True)
    (folder / LOCK_FILE).mkdir()
    with pytest.raises(CacheError) as err:
        _run(tmp_path, "second", [*WHISPER, f"dataset.root={data}"], cache=cache)
    assert str(folder) in err.value.problem
    assert "paths.cache_dir" in err.value.fix


@pytest.mark.skipif(
    os.geteuid() == 0,
    reason="root writes through chmod; the folder-below-a-file and lock-folder tests cover this path for root",
)
def test_case10_a_read_only_cache_dir_is_a_cache_error_when_rows_are_needed(tmp_path: Path, fsdd_clips: Path) -> None:
    (tmp_path / "cache").mkdir()
    _set_writable(tmp_path / "cache", False)
    try:
        with pytest.raises(CacheError) as err:
            _run(tmp_path, "out", [*WHISPER, f"dataset.root={fsdd_clips}"])
    finally:
        _set_writable(tmp_path / "cache", True)
    assert str(tmp_path / "cache") in err.value.problem


def test_local_weights_are_keyed_by_content_hashed_once_and_the_hub_by_revision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import calm.storage.file_digests
    from calm.backbones.base import weights_fingerprint
    from calm.storage.file_digests import FileDigests

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"\x00" * 64)
    _settled(model)
    store = tmp_path / "cache"
    before = weights_fingerprint(str(model), None, FileDigests(store))
    hashed: list[str] = []
    real = calm.storage.file_digests.sha256_file
    monkeypatch.setattr(calm.storage.file_digests, "sha256_file", lambda path: hashed.append(path) or real(path))
    assert weights_fingerprint(str(model), None, FileDigests(store)) == before and not hashed, (
        "a second run must read the remembered digests, not the weights"
    )
    (model / "model.safetensors").write_bytes(b"\x01" * 64)  # same name, same size, other content
    _settled(model / "model.safetensors", age=1800.0)
    after = weights_fingerprint(str(model), None, FileDigests(store))
    assert after != before and [Path(p).name for p in hashed] == ["model.safetensors"]
    assert weights_fingerprint("openai/whisper-tiny.en", "abc") == "hub:openai/whisper-tiny.en@abc"


def test_a_file_modified_in_the_last_seconds_is_hashed_again_next_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its mtime could stay put through another write within the timestamp granularity."""
    import calm.storage.file_digests
    from calm.storage.file_digests import FileDigests

    clip = tmp_path / "clip.wav"
    clip.write_bytes(b"RIFF")
    first = FileDigests(tmp_path / "cache").of(clip)
    hashed: list[str] = []
    real = calm.storage.file_digests.sha256_file
    monkeypatch.setattr(calm.storage.file_digests, "sha256_file", lambda path: hashed.append(path) or real(path))
    assert FileDigests(tmp_path / "cache").of(clip) == first and len(hashed) == 1
    _settled(clip)
    FileDigests(tmp_path / "cache").of(clip)
    assert FileDigests(tmp_path / "cache").of(clip) == first and len(hashed) == 2, "a settled file is remembered"
