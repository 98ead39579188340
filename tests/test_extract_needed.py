"""Only the clips a protocol uses are extracted: on a 3,000-clip ASVspoof-layout table, 10 episodes
extract the clips those episodes name, and a later run with more episodes only the new ones; the
durations of clips checked before are remembered, so their headers are not read again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from calm.run.job import prepare
from calm.run.pipeline import needed_clips, run_job
from calm.testing.smoke_layouts import make_asvspoof
from tests.cli import compose_config

PER_PARTITION = 1500


@pytest.fixture(scope="module")
def asvspoof_3000(tmp_path_factory: pytest.TempPathFactory) -> Path:
    parent = tmp_path_factory.mktemp("asv3000")
    lines = {
        part: [
            f"LA_00{i % 40:02d} LA_{part[0].upper()}_{i:05d} - {'-' if i % 2 else 'A01'} "
            f"{'bonafide' if i % 2 else 'spoof'}"
            for i in range(PER_PARTITION)
        ]
        for part in ("train", "eval")
    }
    make_asvspoof(parent, lines)
    return parent


def _run(tmp_path: Path, root: Path, episodes: int, name: str) -> tuple[dict, list[str]]:
    cfg = compose_config(
        [
            "dataset=asvspoof2019_la",
            f"dataset.root={root}",
            "backbone=tiny_qwen2_audio",
            f"backbone.path={tmp_path / 'tiny'}",
            "shots=5",
            "queries=5",
            f"episodes={episodes}",
            "logger=none",
            "figures=false",
        ],
        tmp_path / name,
    )
    job = prepare(cfg)
    used = needed_clips(job, job.protocol.episodes(job.pools))
    run_job(cfg)
    return json.loads((tmp_path / name / "results.json").read_text()), used


def test_runs_extract_only_the_clips_their_episodes_use(
    tmp_path: Path, asvspoof_3000: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALM_CACHE", str(tmp_path / "cache"))
    first, used_first = _run(tmp_path, asvspoof_3000, 10, "ten")
    assert first["clips"] == 2 * PER_PARTITION
    assert first["cache"]["needed"] == len(used_first) <= 10 * 2 * (5 + 5)
    assert first["cache"]["extracted"] == len(used_first) == first["cache"]["headers_read"]

    second, used_second = _run(tmp_path, asvspoof_3000, 25, "twenty_five")
    new = set(used_second) - set(used_first)
    assert set(used_first) <= set(used_second) and new
    assert second["cache"]["needed"] == len(used_second)
    assert second["cache"]["extracted"] == len(new), "only the clips the new episodes add are extracted"
    assert second["cache"]["headers_read"] == len(new), "headers of clips checked before are not read again"
