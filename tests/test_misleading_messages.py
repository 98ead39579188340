"""Issue 16 item 9: messages that misled a user, each now naming the real problem and its fix."""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from calm.config.schema import check_settings
from calm.data.__main__ import main as data_cli
from calm.data.folder import load_folder
from calm.errors import ConfigError, ProtocolError
from calm.protocols import EpisodicProtocol, Pools
from calm.testing.smoke_layouts import tone
from tests.cli import REPO, compose_config
from tests.sweep_runs import rejected_sweep


def test_an_unknown_estimator_key_names_it_and_the_accepted_keys(tmp_path: Path) -> None:
    from calm.run.job import build_methods

    cfg = compose_config(["experiment=quickstart", "+method.estimators.calm.taus=0.1"], tmp_path)
    with pytest.raises(ConfigError) as err:
        build_methods(cfg.method)
    assert "method.estimators.calm" in err.value.problem and "'taus'" in err.value.problem
    assert "'tau'" in err.value.fix and "'tau_w'" in err.value.fix and "'top_k'" in err.value.fix


def test_top_k_zero_is_a_settings_error_naming_the_estimator(tmp_path: Path) -> None:
    """Checked with the other settings (so before any estimator is built, and by a sweep's preflight),
    and by the estimator itself as a plain ConfigError, not wrapped in Hydra's InstantiationException."""
    from calm.run.job import build_methods

    cfg = compose_config(["method=calm_vs_sav", "method.estimators.sav.top_k=0"], tmp_path)
    with pytest.raises(
        ConfigError,
        match=r"`method.estimators.sav.top_k` must be null \(all heads\) or a positive "
        r"integer, got 0",
    ):
        check_settings(cfg)
    with pytest.raises(ConfigError, match=r"top_k must be null \(all heads\) or a positive integer, got 0"):
        build_methods(cfg.method)


def test_a_sweep_with_top_k_zero_is_rejected_by_the_preflight(tmp_path: Path) -> None:
    output = rejected_sweep(tmp_path, ["method=sav", "method.estimators.sav.top_k=20,0"])
    assert "`method.estimators.sav.top_k` must be null (all heads) or a positive integer, got 0" in output
    assert "\\n" not in output


def test_a_class_without_support_clips_is_named_not_lower_shots_to_zero() -> None:
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    support = np.array([True, True, False, False, False, True, True, False])
    query = ~support
    pools = Pools.build(labels, support, query, class_names=["dog", "rain", "siren"])
    with pytest.raises(ProtocolError) as err:
        EpisodicProtocol(shots=1, queries=1, episodes=1, seed=0, dataset="toy").validate(pools)
    assert "'rain'" in err.value.problem and "no support-pool" in err.value.problem
    assert "at most 0" not in str(err.value)


def _clips(root: Path) -> Path:
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(2):
            sf.write(root / name / f"{name}{i}.wav", tone(16000, 0.05), 16000)
    return root


def test_a_csv_with_a_utf8_byte_order_mark_is_read(tmp_path: Path) -> None:
    """Spreadsheets save CSV with a BOM; it used to make the header 'path' unrecognisable."""
    root = _clips(tmp_path)
    (root / "list.csv").write_bytes("path,label\ncat/cat0.wav,cat\ndog/dog0.wav,dog\n".encode("utf-8-sig"))
    table, missing = load_folder(root, "list.csv")
    assert table.class_names == ("cat", "dog") and len(table) == 2 and missing == []


@pytest.mark.parametrize("setting", ["dataset.csv=list.csv", "csv=list.csv"])
def test_validate_set_takes_keys_as_run_py_does(
    tmp_path: Path, setting: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _clips(tmp_path)
    (root / "list.csv").write_text("path,label\ncat/cat0.wav,cat\ndog/dog0.wav,dog\n")
    assert data_cli(["validate", "folder", str(root), "--json", "--set", setting]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["clips"] == 2 and report["config"]["csv"] == "list.csv"


def test_older_cache_format_is_mentioned_only_when_such_rows_exist(caplog: pytest.LogCaptureFixture) -> None:
    from calm.extraction.extract import ExtractionReport, count_recomputed

    with caplog.at_level(logging.INFO, logger="calm.extraction.extract"):
        count_recomputed({"a": "audio", "b": "prompt", "c": "audio"}, ExtractionReport())
    assert "recomputing 3 cached rows whose inputs changed: audio 2, prompt text 1" in caplog.text
    assert "older cache format" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="calm.extraction.extract"):
        count_recomputed({"a": "unknown"}, ExtractionReport())
    assert "1 of an older cache format" in caplog.text


FULL_DISK = """
import errno, resource, sys
import numpy as np
from calm.cache import ActivationCache
from calm.errors import CacheError
cache = ActivationCache.open_path(sys.argv[1], {"backbone": "any"}, n_heads=64, head_dim=64)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
try:
    cache.write([f"c{i}" for i in range(8)], np.ones((8, 64, 64), dtype=np.float32))
except CacheError as err:
    print(err)
"""


def test_a_file_size_limit_is_not_answered_with_make_the_folder_writable(tmp_path: Path) -> None:
    """A write refused with EFBIG (a file size limit, a full disk or quota alike) asks for room, not
    permissions; a read-only folder still asks for permissions."""
    done = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(tmp_path / "cache")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "File too large" in done.stdout, done.stdout + done.stderr[-2000:]
    assert "make the folder writable" not in done.stdout
    assert "file size limit" in done.stdout and "free space" in done.stdout


@pytest.mark.parametrize(
    ("code", "asks"),
    [
        (errno.ENOSPC, "free space"),
        (errno.EDQUOT, "free space"),
        (errno.EACCES, "make the folder writable"),
        (errno.EROFS, "make the folder writable"),
    ],
)
def test_each_write_error_gets_its_own_fix(tmp_path: Path, code: int, asks: str) -> None:
    from calm.cache.folder import unwritable

    err = unwritable(tmp_path, OSError(code, os.strerror(code), str(tmp_path / "rows.bin")))
    assert os.strerror(code) in err.problem and asks in err.fix
    assert ("make the folder writable" in err.fix) == (asks == "make the folder writable")
