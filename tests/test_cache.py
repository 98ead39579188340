"""Tests of the activation store: keys, round trips, validation, crash safety and concurrent writers."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from calm.cache import (
    DATA_FILE,
    FORMAT_VERSION,
    INDEX_FILE,
    KEY_FILE,
    LOCK_FILE,
    ActivationCache,
    RowFacts,
    RowInputs,
    cache_key,
)
from calm.errors import CacheError

REPO = Path(__file__).resolve().parents[1]
WRITER_SCRIPT = Path(__file__).with_name("cache_writer_proc.py")
_spec = importlib.util.spec_from_file_location("cache_writer_proc", WRITER_SCRIPT)
writer = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(writer)

FIELDS = {"backbone": "whisper-tiny.en", "revision": "abc123", "dtype": "float16", "position": -1}
H, D = 4, 3
ROW_BYTES = H * D * 2


def _open(folder: Path, fields: dict = FIELDS, **kwargs) -> ActivationCache:
    return ActivationCache.open_path(folder, fields, kwargs.pop("n_heads", H), kwargs.pop("head_dim", D), **kwargs)


def _rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, H, D)).astype(np.float32)


def _ids(n: int, start: int = 0) -> list[str]:
    return [f"c{i}" for i in range(start, start + n)]


def _writer_env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }


def _spawn(folder: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(WRITER_SCRIPT), str(folder), *args],
        cwd=REPO,
        env=_writer_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _index_lines(folder: Path) -> int:
    try:
        return (folder / INDEX_FILE).read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _files(folder: Path) -> tuple[bytes, bytes]:
    return (folder / DATA_FILE).read_bytes(), (folder / INDEX_FILE).read_bytes()


def test_roundtrip_stores_fp16_and_reads_in_requested_order(tmp_path: Path) -> None:
    cache = _open(tmp_path / "c")
    rows = _rows(5) * 1000
    assert cache.write(_ids(5), rows) == 5
    expected = torch.from_numpy(rows.astype(np.float16).astype(np.float32))
    out = cache.read(_ids(5))
    assert out.dtype == torch.float32 and out.shape == (5, H, D)
    assert torch.equal(out, expected)
    order = [3, 0, 4, 1]
    assert torch.equal(cache.read([f"c{i}" for i in order]), expected[order])
    assert cache.read([]).shape == (0, H, D)


def test_torch_bfloat16_rows_are_accepted(tmp_path: Path) -> None:
    cache = _open(tmp_path / "c")
    rows = torch.from_numpy(_rows(2)).to(torch.bfloat16)
    assert cache.write(["a", "b"], rows) == 2
    assert torch.equal(cache.read(["a", "b"]), rows.float().half().float())


def test_missing_len_contains_and_reopen(tmp_path: Path) -> None:
    cache = _open(tmp_path / "c")
    cache.write(["b", "d"], _rows(2))
    assert cache.missing(["e", "d", "a", "b", "c"]) == ["e", "a", "c"]
    assert len(cache) == 2 and "b" in cache and "a" not in cache
    assert cache.cached_ids() == {"b", "d"}
    other = _open(tmp_path / "c")
    assert other.cached_ids() == {"b", "d"}
    other.write(["a"], _rows(1))
    assert "a" in cache and len(cache) == 3


def test_rewrite_writes_only_new_ids_and_keeps_old_rows(tmp_path: Path) -> None:
    cache = _open(tmp_path / "c")
    first = _rows(2, seed=1)
    assert cache.write(["a", "b"], first) == 2
    assert cache.write(["a", "b", "c", "d"], _rows(4, seed=2)) == 2
    assert cache.write(["d", "a"], _rows(2, seed=3)) == 0
    assert len(cache) == 4
    assert torch.equal(cache.read(["a", "b"]), torch.from_numpy(first.astype(np.float16).astype(np.float32)))
    assert _index_lines(cache.path) == 4
    assert (cache.path / DATA_FILE).stat().st_size == 4 * ROW_BYTES


def test_read_of_missing_ids_names_them_and_the_fix(tmp_path: Path) -> None:
    cache = _open(tmp_path / "c")
    cache.write(["a"], _rows(1))
    with pytest.raises(CacheError) as err:
        cache.read(["a", "zz1", "zz2"])
    assert "zz1" in err.value.problem and "zz2" in err.value.problem
    assert "extraction" in err.value.fix


def test_key_is_canonical_and_folders_follow_the_key(tmp_path: Path) -> None:
    reordered = dict(reversed(list(FIELDS.items())))
    assert cache_key(reordered) == cache_key(FIELDS)
    assert len(cache_key(FIELDS)) == 64
    other_fields = {**FIELDS, "position": -2}
    assert cache_key(other_fields) != cache_key(FIELDS)

    a = ActivationCache.open(tmp_path, FIELDS, H, D, label="whisper_tiny")
    b = ActivationCache.open(tmp_path, reordered, H, D, label="whisper_tiny")
    c = ActivationCache.open(tmp_path, other_fields, H, D, label="whisper_tiny")
    assert a.path == b.path == tmp_path / f"whisper_tiny-{cache_key(FIELDS)[:16]}"
    assert c.path != a.path and a.key == cache_key(FIELDS)
    assert ActivationCache.open(tmp_path, FIELDS, H, D).path == tmp_path / cache_key(FIELDS)[:16]
    a.write(["x"], _rows(1))
    assert "x" in b and "x" not in c and len(c) == 0
    stored = json.loads((a.path / KEY_FILE).read_text())
    assert stored == {"key": cache_key(FIELDS), "fields": FIELDS}


def test_folder_written_under_another_key_raises(tmp_path: Path) -> None:
    _open(tmp_path / "c").write(["a"], _rows(1))
    with pytest.raises(CacheError) as err:
        _open(tmp_path / "c", {**FIELDS, "revision": "def456"})
    assert "revision" in err.value.problem and "abc123" in err.value.problem and "def456" in err.value.problem
    assert "delete" in err.value.fix and "paths.cache_dir" in err.value.fix


@pytest.mark.parametrize("shape", [{"n_heads": H + 1}, {"head_dim": D + 2}])
def test_shape_mismatch_with_stored_meta_raises(tmp_path: Path, shape: dict) -> None:
    _open(tmp_path / "c")
    with pytest.raises(CacheError) as err:
        _open(tmp_path / "c", **shape)
    assert next(iter(shape)) in err.value.problem
    assert "delete" in err.value.fix


def test_head_names_are_stored_and_checked(tmp_path: Path) -> None:
    names = [f"L0.h{i}" for i in range(H)]
    assert _open(tmp_path / "c", head_names=names).head_names == names
    assert _open(tmp_path / "c").head_names == names
    with pytest.raises(CacheError):
        _open(tmp_path / "c", head_names=[f"L1.h{i}" for i in range(H)])


@pytest.mark.parametrize("bad", [np.nan, np.inf, 1e6])
def test_non_finite_rows_are_rejected_naming_the_clip(tmp_path: Path, bad: float) -> None:
    cache = _open(tmp_path / "c")
    rows = _rows(3)
    rows[1, 2, 0] = bad
    with pytest.raises(CacheError) as err:
        cache.write(["ok1", "bad_clip", "ok2"], rows)
    assert "bad_clip" in err.value.problem and "ok1" not in err.value.problem
    assert len(cache) == 0 and not (cache.path / INDEX_FILE).exists()


@pytest.mark.parametrize(
    ("ids", "rows"),
    [
        (["a", "b"], np.zeros((3, H, D), np.float32)),
        (["a"], np.zeros((1, H + 1, D), np.float32)),
        (["a"], np.zeros((1, H, D + 1), np.float32)),
        (["a"], np.zeros((H, D), np.float32)),
        (["a"], np.zeros((1, H, D), np.int32)),
        (["a", "a"], np.zeros((2, H, D), np.float32)),
        ([""], np.zeros((1, H, D), np.float32)),
        (["a\tb"], np.zeros((1, H, D), np.float32)),
        (["a\nb"], np.zeros((1, H, D), np.float32)),
        ("a", np.zeros((1, H, D), np.float32)),
    ],
)
def test_bad_shapes_and_ids_are_rejected(tmp_path: Path, ids: list[str], rows: np.ndarray) -> None:
    cache = _open(tmp_path / "c")
    with pytest.raises(ValueError):
        cache.write(ids, rows)
    assert len(cache) == 0


def _torn_data_tail(folder: Path) -> None:
    with open(folder / DATA_FILE, "ab") as f:
        f.write(os.urandom(ROW_BYTES + ROW_BYTES // 2))


def _unindexed_whole_rows(folder: Path) -> None:
    with open(folder / DATA_FILE, "ab") as f:
        f.write(np.full(2 * H * D, 7.0, np.float16).tobytes())


def _partial_index_line(folder: Path) -> None:
    _unindexed_whole_rows(folder)
    with open(folder / INDEX_FILE, "ab") as f:
        f.write(b"c5\t5")


def _partial_index_id(folder: Path) -> None:
    _torn_data_tail(folder)
    with open(folder / INDEX_FILE, "ab") as f:
        f.write(b"c5")


@pytest.mark.parametrize("tear", [_torn_data_tail, _unindexed_whole_rows, _partial_index_line, _partial_index_id])
def test_torn_writes_are_ignored_and_repaired(tmp_path: Path, tear) -> None:
    rows = _rows(10)
    clean = _open(tmp_path / "clean")
    for start in range(0, 10, 3):
        clean.write(_ids(10)[start : start + 3], rows[start : start + 3])

    torn = _open(tmp_path / "torn")
    torn.write(_ids(5), rows[:5])
    tear(torn.path)

    reopened = _open(tmp_path / "torn")
    assert len(reopened) == 5 and reopened.missing(_ids(10)) == _ids(5, start=5)
    assert torch.equal(reopened.read(_ids(5)), clean.read(_ids(5)))
    assert reopened.write(["c5"], rows[5:6]) == 1
    assert (reopened.path / DATA_FILE).stat().st_size == 6 * ROW_BYTES
    for start in range(0, 10, 3):
        reopened.write(_ids(10)[start : start + 3], rows[start : start + 3])
    assert torch.equal(reopened.read(_ids(10)), clean.read(_ids(10)))
    assert _files(reopened.path) == _files(clean.path)


def test_sigkilled_writer_leaves_a_cache_that_completes_identically(tmp_path: Path) -> None:
    total = 3000
    killed = tmp_path / "killed"
    proc = _spawn(killed, "0", str(total), "2", "0")
    deadline = time.monotonic() + 30
    while _index_lines(killed) < 20 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    done_before = _index_lines(killed)
    assert 20 <= done_before < total

    survivor = ActivationCache.open_path(killed, writer.KEY_FIELDS, writer.N_HEADS, writer.HEAD_DIM)
    survived = sorted(survivor.cached_ids())
    assert survived == [writer.clip_id(i) for i in range(len(survived))]
    expected = np.stack([writer.row_for(i) for i in range(total)]).astype(np.float16).astype(np.float32)
    assert np.array_equal(survivor.read(survived).numpy(), expected[: len(survived)])

    numbers = list(range(total))
    assert writer.fill(killed, numbers, 50, 0) == total - len(survived)
    reference = tmp_path / "reference"
    assert writer.fill(reference, numbers, total, 0) == total
    ids = [writer.clip_id(i) for i in numbers]
    a = ActivationCache.open_path(killed, writer.KEY_FIELDS, writer.N_HEADS, writer.HEAD_DIM).read(ids)
    b = ActivationCache.open_path(reference, writer.KEY_FIELDS, writer.N_HEADS, writer.HEAD_DIM).read(ids)
    assert a.numpy().tobytes() == b.numpy().tobytes()
    assert _files(killed) == _files(reference)


def test_concurrent_writers_with_overlapping_ids(tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    plans = [
        ("0", "150", "3", "0.001"),
        ("50", "200", "4", "0.001", "--reverse"),
        ("0", "200", "7", "0"),
    ]
    procs = [_spawn(folder, *plan, "--wait-go") for plan in plans]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    written = 0
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        written += int(out.split()[-1])
    assert written == 200

    cache = ActivationCache.open_path(folder, writer.KEY_FIELDS, writer.N_HEADS, writer.HEAD_DIM)
    lines = (folder / INDEX_FILE).read_text().splitlines()
    ids = [line.split("\t")[0] for line in lines]
    assert len(ids) == len(set(ids)) == 200
    assert set(ids) == {writer.clip_id(i) for i in range(200)}
    assert (folder / DATA_FILE).stat().st_size == 200 * writer.N_HEADS * writer.HEAD_DIM * 2
    expected = np.stack([writer.row_for(i) for i in range(200)]).astype(np.float16).astype(np.float32)
    assert np.array_equal(cache.read([writer.clip_id(i) for i in range(200)]).numpy(), expected)


A = RowInputs("a" * 32, "p" * 32)


def test_rows_carry_their_inputs_and_a_changed_input_appends_a_row_that_wins(tmp_path: Path) -> None:
    cache = _open(tmp_path / "c")
    first, second = _rows(2, seed=1), _rows(2, seed=2)
    assert cache.write(["a", "b"], first, [A, A]) == 2
    other_audio, other_prompt = RowInputs("b" * 32, A.prompt), RowInputs(A.audio, "q" * 32)
    assert cache.outdated({"a": A, "b": other_audio, "c": A}) == {"b": "audio", "c": "missing"}
    assert cache.outdated({"a": other_prompt}) == {"a": "prompt"}
    assert cache.write(["a", "b"], second, [A, other_audio]) == 1  # a's inputs are unchanged: kept
    expected = np.stack([first[0], second[1]]).astype(np.float16).astype(np.float32)
    reopened = _open(tmp_path / "c")
    assert torch.equal(reopened.read(["a", "b"]), torch.from_numpy(expected))
    assert reopened.outdated({"a": A, "b": other_audio}) == {} and len(reopened) == 2
    lines = (cache.path / INDEX_FILE).read_text().splitlines()
    assert lines == [
        f"a\t0\t{A.audio}\t{A.prompt}\t-\t-",
        f"b\t1\t{A.audio}\t{A.prompt}\t-\t-",
        f"b\t2\t{other_audio.audio}\t{A.prompt}\t-\t-",
    ]
    assert cache.write(["b"], _rows(1, seed=3)) == 0, "a write without inputs never replaces a row"


def test_rows_record_how_they_were_computed_and_older_lines_record_nothing(tmp_path: Path) -> None:
    """Batch size and clip duration are recorded with each row and read back, never matched."""
    cache = _open(tmp_path / "c")
    cache.write(["a", "b"], _rows(2), [A, A], [RowFacts(2, 31.5), RowFacts(2, 0.25)])
    line = (cache.path / INDEX_FILE).read_text().splitlines()[0]
    assert line == f"a\t0\t{A.audio}\t{A.prompt}\t2\t31.5"
    assert _open(tmp_path / "c").facts(["a", "b", "c"]) == {"a": RowFacts(2, 31.5), "b": RowFacts(2, 0.25)}
    assert cache.write(["a"], _rows(1, seed=4), [A], [RowFacts(1, 31.5)]) == 0, "other facts reuse the row"
    (cache.path / INDEX_FILE).write_text(f"a\t0\t{A.audio}\t{A.prompt}\nb\t1\t{A.audio}\t-\n")  # format 2
    assert _open(tmp_path / "c").facts(["a", "b"]) == {}


def test_rows_of_format_1_are_read_but_of_unknown_provenance_and_recomputed(tmp_path: Path) -> None:
    cache = _open(tmp_path / "c")
    rows = _rows(2)
    cache.write(["a", "b"], rows)
    (cache.path / INDEX_FILE).write_text("a\t0\nb\t1\n")  # what format 1 wrote
    meta = json.loads((cache.path / "meta.json").read_text())
    (cache.path / "meta.json").write_text(json.dumps({**meta, "format": 1}))
    old = _open(tmp_path / "c")
    assert torch.equal(old.read(["a", "b"]), torch.from_numpy(rows.astype(np.float16).astype(np.float32)))
    assert old.outdated({"a": A, "b": A}) == {"a": "unknown", "b": "unknown"}
    assert old.write(["a"], _rows(1, seed=5), [A]) == 1
    assert json.loads((cache.path / "meta.json").read_text())["format"] == FORMAT_VERSION
    assert _open(tmp_path / "c").outdated({"a": A, "b": A}) == {"b": "unknown"}


def test_a_newer_format_is_refused_naming_it(tmp_path: Path) -> None:
    cache = _open(tmp_path / "c")
    meta = json.loads((cache.path / "meta.json").read_text())
    (cache.path / "meta.json").write_text(json.dumps({**meta, "format": FORMAT_VERSION + 1}))
    with pytest.raises(CacheError, match=f"format: cached {FORMAT_VERSION + 1}"):
        _open(tmp_path / "c")


def test_opening_and_reading_a_complete_folder_takes_no_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = _open(tmp_path / "c", head_names=[f"h{i}" for i in range(H)])
    cache.write(["a"], _rows(1), [A])
    (cache.path / LOCK_FILE).unlink()

    class NoLock:
        def __init__(self, path: str) -> None:
            self.path = path

        def __enter__(self) -> None:
            raise AssertionError(f"{self.path} was taken although nothing is written")

    monkeypatch.setattr("calm.cache.store.FileLock", NoLock)
    monkeypatch.setattr("calm.cache.folder.FileLock", NoLock)
    reopened = _open(tmp_path / "c", head_names=[f"h{i}" for i in range(H)])
    assert reopened.outdated({"a": A}) == {} and reopened.read(["a"]).shape == (1, H, D)
    assert not (cache.path / LOCK_FILE).exists()


def test_a_write_that_cannot_be_done_is_a_cache_error_naming_the_folder(tmp_path: Path) -> None:
    cache = _open(tmp_path / "c")
    (cache.path / LOCK_FILE).unlink(missing_ok=True)
    (cache.path / LOCK_FILE).mkdir()  # cannot be opened for writing, even by root
    with pytest.raises(CacheError) as err:
        cache.write(["a"], _rows(1))
    assert str(cache.path) in err.value.problem and "paths.cache_dir" in err.value.fix
    with pytest.raises(CacheError):
        cache.ensure_writable()
