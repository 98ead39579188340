"""episodes.csv is written like results.json: whole or not at all (a unique temporary file renamed over
it), so a job killed mid-write never leaves half a table beside a finished results.json."""

from __future__ import annotations

from pathlib import Path

import pytest

import calm.storage.atomic_write
from calm.run.tracking import write_results

ROWS = [{"episode": 0, "method": "calm", "accuracy": 89.0}, {"episode": 0, "method": "sav", "accuracy": 71.5}]


def test_an_interrupted_write_keeps_the_previous_table_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_results(tmp_path, {"shots": 5}, [], ROWS)
    before = (tmp_path / "episodes.csv").read_bytes()
    assert before == b"episode,method,accuracy\r\n0,calm,89.0\r\n0,sav,71.5\r\n", "the csv module's own format"

    replace = calm.storage.atomic_write.os.replace

    def killed(src: str, dst: str) -> None:  # results.json is renamed in place; episodes.csv never
        if str(dst).endswith("episodes.csv"):
            raise KeyboardInterrupt
        replace(src, dst)

    monkeypatch.setattr(calm.storage.atomic_write.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        write_results(tmp_path, {"shots": 5}, [], [{**row, "accuracy": 0.0} for row in ROWS])
    assert (tmp_path / "episodes.csv").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["episodes.csv", "results.json"], "no temporary file left"
