"""A new report, and a new method that needs the backbone, are each one class here and one method YAML
written to a config folder on Hydra's search path: the job runs them and their rows reach results.json,
after the rows of the built-in reports."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from calm.baselines.generation import generate_in_batches
from calm.protocols import Episode
from calm.reports import Report, ReportOutput
from calm.run.pipeline import run_job
from tests.cli import compose_config

WORDS = ["zero", "one", "two", "three", "four"]


class MeanHeadPrototypes(Report):
    """Nearest class mean of the head-averaged features: a report that reads the cached rows."""

    def __init__(self, row: str) -> None:
        self.row = row

    def run(self, job, features, episodes: list[Episode], tracker) -> ReportOutput:
        out = ReportOutput(per_method={self.row: []})
        for episode in episodes:
            support = features[torch.tensor(episode.support)].float().mean(dim=1).flatten(1)
            query = features[torch.tensor(episode.query)].float().mean(dim=1).flatten(1)
            labels = torch.tensor(episode.support_labels)
            means = torch.stack([support[labels == c].mean(0) for c in range(episode.ways)])
            pred = torch.cdist(query, means).argmin(1).numpy()
            acc = 100.0 * float(np.mean(pred == episode.query_labels))
            out.per_method[self.row].append(acc)
            out.episode_rows.append(
                {
                    "episode": episode.index,
                    "seed": episode.seed,
                    "method": self.row,
                    "accuracy": acc,
                    "macro_f1": float("nan"),
                }
            )
        return out


class SpokenWord(Report):
    """A method that needs the backbone: the query clip's generated answer names its class when it holds
    the class name."""

    uses_backbone = True
    reads_features = False

    def __init__(self, row: str, batch_size: int) -> None:
        self.row, self.batch_size = row, batch_size

    @classmethod
    def applies(cls, job) -> bool:
        return hasattr(job.backbone, "generate_answers")

    def run(self, job, features, episodes: list[Episode], tracker) -> ReportOutput:
        table = job.table
        clips = [table.clips[i] for episode in episodes for i in episode.query]
        answers = {}
        for batch, texts in generate_in_batches(
            job.backbone,
            table,
            job.prompt,
            clips,
            self.batch_size,
            job.devices.generation,
            lambda waves, prompts, _: job.backbone.generate_answers(waves, prompts, max_new_tokens=8),
        ):
            answers.update({clip.id: text.lower() for clip, text in zip(batch, texts, strict=True)})
        out = ReportOutput(per_method={self.row: []})
        for episode in episodes:
            right = [
                table.class_names[episode.classes[label]] in answers[table.clips[i].id]
                for i, label in zip(episode.query, episode.query_labels, strict=True)
            ]
            out.per_method[self.row].append(100.0 * float(np.mean(right)))
            out.episode_rows.append(
                {
                    "episode": episode.index,
                    "seed": episode.seed,
                    "method": self.row,
                    "accuracy": out.per_method[self.row][-1],
                    "macro_f1": float("nan"),
                }
            )
        return out


def write_method(folder: Path, name: str, text: str) -> Path:
    (folder / "method").mkdir(parents=True, exist_ok=True)
    (folder / "method" / f"{name}.yaml").write_text(text)
    return folder


def write_calm_with_means(folder: Path, name: str, row: str, extra: str = "") -> Path:
    """Method `name`: CALM plus the MeanHeadPrototypes report as row `row`, with `extra` lines in its block."""
    return write_method(
        folder,
        name,
        f"""\
defaults:
  - calm
  - _self_
name: {name}
reports:
  means:
    _target_: {__name__}.MeanHeadPrototypes
    row: {row}
{extra}""",
    )


@pytest.fixture()
def digits(tmp_path: Path, fsdd_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Five spoken digits as a folder dataset whose classes are the digit words."""
    monkeypatch.setenv("CALM_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "digits"
    for digit, word in enumerate(WORDS):
        (root / word).mkdir(parents=True)
        for index in range(4):
            shutil.copy(fsdd_root / "recordings" / f"{digit}_jackson_{index}.wav", root / word)
    return root


def run_with(method: str, configs: Path, digits: Path, out: Path, episodes: int = 2) -> dict:
    cfg = compose_config(
        [
            f"hydra.searchpath=[file://{configs}]",
            f"method={method}",
            "backbone=whisper_tiny",
            "logger=none",
            "figures=false",
            "dataset=folder",
            f"dataset.root={digits}",
            "dataset.test_fraction=0.5",
            "shots=1",
            "queries=1",
            f"episodes={episodes}",
        ],
        out,
    )
    run_job(cfg)
    return json.loads((out / "results.json").read_text())


def test_a_report_added_with_one_class_and_one_yaml_reaches_results(tmp_path: Path, digits: Path) -> None:
    configs = write_calm_with_means(tmp_path / "configs", "calm_and_means", "mean_head_prototypes")
    results = run_with("calm_and_means", configs, digits, tmp_path / "out")
    rows = [row["method"] for row in results["results"]]
    assert rows == ["calm", "mean_head_prototypes"], "a declared report's rows follow the built-in ones"
    row = results["results"][1]
    assert row["episodes"] == 2 and 0 <= row["accuracy_mean"] <= 100
    episodes = (tmp_path / "out" / "episodes.csv").read_text()
    assert "mean_head_prototypes" in episodes


def test_a_method_that_needs_the_backbone_is_one_class_and_one_yaml(tmp_path: Path, digits: Path) -> None:
    configs = write_method(
        tmp_path / "configs",
        "spoken_word",
        f"""\
name: spoken_word
baseline: null
estimators: {{}}
reports:
  spoken:
    _target_: {__name__}.SpokenWord
    row: spoken_word
    batch_size: 4
""",
    )
    results = run_with("spoken_word", configs, digits, tmp_path / "out", episodes=1)
    row = next(r for r in results["results"] if r["method"] == "spoken_word")
    assert row["episodes"] == 1 and row["accuracy_mean"] >= 60.0, "Whisper's transcript names the spoken digit"
    assert results["cache"]["extracted"] == 0, "a method that only generates reads no head activations"


def test_a_declared_report_with_an_unknown_setting_is_refused_by_name(tmp_path: Path, digits: Path) -> None:
    from calm.errors import ConfigError

    configs = write_calm_with_means(tmp_path / "configs", "bad", "means", "    colour: red\n")
    with pytest.raises(ConfigError, match=r"method\.reports\.means.*colour"):
        run_with("bad", configs, digits, tmp_path / "out")
