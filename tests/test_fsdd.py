import http.server
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from calm.data.fsdd import fetch_fsdd, load_fsdd, resolve_root
from calm.data.table import QUERY_SPLIT, SUPPORT_SPLIT
from calm.errors import DataError


def test_real_fsdd_table_and_official_split(fsdd_root: Path) -> None:
    table = load_fsdd(fsdd_root)
    assert len(table) == 2500
    assert table.class_names == tuple(str(d) for d in range(10))
    test = table.split_mask(QUERY_SPLIT)
    assert test.sum() == 10 * 5 * 5
    assert all(int(c.meta["index"]) < 5 for c, t in zip(table.clips, test, strict=True) if t)
    assert all(c.id.startswith(f"{c.label}_") for c in table.clips)


def test_max_clips_per_class_keeps_the_test_split_and_balances_speakers(fsdd_root: Path) -> None:
    table = load_fsdd(fsdd_root, max_clips_per_class=60)
    assert np.bincount(table.labels).tolist() == [60] * 10
    counts = table.counts()
    assert counts[QUERY_SPLIT] == {str(d): 25 for d in range(10)}
    assert counts[SUPPORT_SPLIT] == {str(d): 35 for d in range(10)}
    speakers = {c.meta["speaker"] for c in table.clips if c.label == 3}
    assert len(speakers) == 5


def test_missing_root_says_how_to_get_the_data(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist") as err:
        load_fsdd(tmp_path / "nowhere")
    assert "dataset.root" in str(err.value)


def test_unexpected_file_name_is_named(tmp_path: Path) -> None:
    (tmp_path / "recordings").mkdir()
    sf.write(tmp_path / "recordings" / "seven.wav", np.zeros(80, np.float32), 8000)
    with pytest.raises(DataError, match="seven.wav"):
        load_fsdd(tmp_path)


def test_no_copy_and_no_download_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALM_ASSETS", str(tmp_path / "no-assets"))
    with pytest.raises(DataError, match="FSDD not found") as err:
        resolve_root(None, tmp_path / "data", download_missing=False)
    assert "dataset.download=true" in str(err.value)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def _serve(folder: Path):
    handler = lambda *a, **k: _Quiet(*a, directory=str(folder), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_download_from_a_local_server_in_the_archive_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    served = tmp_path / "served"
    served.mkdir()
    with zipfile.ZipFile(served / "fsdd.zip", "w") as zf:
        for digit in range(10):
            for index in range(6):
                wav = tmp_path / f"{digit}_alice_{index}.wav"
                sf.write(wav, np.random.default_rng(index).normal(size=800).astype(np.float32) * 0.1, 8000)
                zf.write(wav, f"free-spoken-digit-dataset-26eb9aa/recordings/{wav.name}")
    server = _serve(served)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/fsdd.zip"
        monkeypatch.setenv("CALM_ASSETS", str(tmp_path / "no-assets"))
        monkeypatch.setattr("calm.data.fsdd.FSDD_URL", url)
        root = resolve_root(None, tmp_path / "data", download_missing=True, url=url)
    finally:
        server.shutdown()
    assert root == tmp_path / "data" / "fsdd"
    table = load_fsdd(root)
    assert len(table) == 60 and table.split_mask(QUERY_SPLIT).sum() == 50
    assert not (tmp_path / "data" / "fsdd.zip").exists()


def test_download_failure_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="could not download"):
        fetch_fsdd(tmp_path / "fsdd", "http://127.0.0.1:9/fsdd.zip")
