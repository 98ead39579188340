"""CLAP as the embedding baseline: a tiny random ClapModel (real classes, real processor) through the
real config, extraction and reports. clap_knn must be the nearest cosine centroid and clap_zero_shot
the argmax of the cosine to the class names' text embeddings, both recomputed here by hand from
transformers' ClapModel directly."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from transformers import ClapModel, ClapProcessor

from calm.backbones import build_backbone
from calm.backbones.clap import ClapBackbone
from calm.backbones.whisper import WhisperBackbone
from calm.baselines.text_zero_shot import TextZeroShotSettings, check_text_tower
from calm.data.audio import load_audio
from calm.data.prompts import build_prompt
from calm.errors import ConfigError
from calm.extraction.row_inputs import model_key_fields
from calm.reports import TextZeroShot
from calm.run.job import prepare
from calm.run.pipeline import run_job
from calm.run.tracking import NullTracker
from calm.testing.tiny import save_tiny
from calm.testing.tiny_clap import ensure_tiny_clap, tiny_clap_config, tiny_clap_processor
from tests.cli import REPO, compose_config, small_fsdd

TEMPLATE = "This is a sound of {label}."


@pytest.fixture(scope="module")
def tiny_clap(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_tiny_clap(tmp_path_factory.mktemp("models") / "tiny_clap", seed=0)


@pytest.fixture(scope="module")
def clap_job(tiny_clap: Path, fsdd_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One method=clap job on 4 FSDD digits (2 test + 2 train clips each): 3 episodes, 2 shots, 2 queries."""
    tmp = tmp_path_factory.mktemp("clap_job")
    data = small_fsdd(fsdd_root, tmp / "fsdd", digits=(0, 1, 2, 3))
    overrides = [
        "logger=none",
        "backbone=tiny_clap",
        f"backbone.path={tiny_clap.parent}/seed_0",
        f"dataset.root={data}",
        "method=clap",
        "shots=2",
        "queries=2",
        "episodes=3",
        "extract.batch_size=3",
        f"paths.cache_dir={tmp / 'cache'}",
        "figures=false",
    ]
    cfg = compose_config(overrides, tmp / "out")
    result = run_job(cfg)
    job = prepare(cfg)
    with open(tmp / "out" / "episodes.csv") as handle:
        rows = list(csv.DictReader(handle))
    return {
        "cfg": cfg,
        "result": result,
        "job": job,
        "episodes": job.protocol.episodes(job.pools),
        "rows": rows,
        "overrides": overrides,
        "tmp": tmp,
    }


def direct_audio_embeddings(model_dir: Path, paths: list[Path]) -> torch.Tensor:
    """transformers' own path: the processor on 48 kHz clips, then ClapModel.get_audio_features."""
    processor, model = ClapProcessor.from_pretrained(model_dir), ClapModel.from_pretrained(model_dir).eval()
    waves = [load_audio(p, 48000) for p in paths]
    inputs = processor.feature_extractor(waves, sampling_rate=48000, return_tensors="pt")
    with torch.no_grad():
        return model.get_audio_features(
            input_features=inputs.input_features, is_longer=torch.zeros(len(waves), 1, dtype=torch.bool)
        ).pooler_output


def episode_accuracies(rows: list[dict], method: str) -> list[float]:
    return [float(r["accuracy"]) for r in rows if r["method"] == method]


def test_clap_runs_end_to_end_and_caches_one_audio_embedding_per_clip(clap_job: dict, tiny_clap: Path) -> None:
    result, job = clap_job["result"], clap_job["job"]
    assert {r["method"] for r in result["results"]} == {"clap_knn", "clap_zero_shot"}
    assert result["cache"]["extracted"] == 16 and (job.cache.n_heads, job.cache.head_dim) == (1, 16)
    cached = job.cache.read(job.table.ids)
    direct = direct_audio_embeddings(tiny_clap, [c.audio_path for c in job.table.clips[:5]])
    torch.testing.assert_close(cached[:5], direct[:, None, :].to(torch.float16).float(), atol=2e-3, rtol=2e-3)
    assert torch.pdist(cached[:, 0]).min() > 1e-3, "distinct clips must give distinct embeddings"


def test_clap_reads_no_prompt_so_another_prompt_reuses_the_cache(clap_job: dict) -> None:
    job = clap_job["job"]
    assert "prompt" not in model_key_fields(job.backbone, job.prompt)
    tmp = clap_job["tmp"]
    cfg = compose_config([*clap_job["overrides"], "prompt.question=Which digit is spoken?"], tmp / "out2")
    assert run_job(cfg)["cache"]["extracted"] == 0


def test_clap_knn_is_the_nearest_cosine_centroid_computed_by_hand(clap_job: dict, tiny_clap: Path) -> None:
    job, episodes = clap_job["job"], clap_job["episodes"]
    embeddings = job.cache.read(job.table.ids)[:, 0].numpy().astype(np.float64)
    estimator = instantiate(OmegaConf.load(REPO / "configs" / "estimator" / "clap_knn.yaml"))
    by_hand = []
    for episode in episodes:
        support, query = embeddings[episode.support], embeddings[episode.query]
        centroids = np.stack([support[episode.support_labels == c].mean(axis=0) for c in range(episode.ways)])
        cosines = (query / np.linalg.norm(query, axis=1, keepdims=True)) @ (
            centroids / np.linalg.norm(centroids, axis=1, keepdims=True)
        ).T
        predicted = cosines.argmax(axis=1)
        features = torch.from_numpy(embeddings[:, None, :]).float()
        fitted = estimator.fit(
            features[episode.support.tolist()], torch.tensor(episode.support_labels.tolist()), n_classes=episode.ways
        )
        assert fitted.predict(features[episode.query.tolist()]).tolist() == predicted.tolist()
        by_hand.append(100.0 * float(np.mean(predicted == episode.query_labels)))
    assert episode_accuracies(clap_job["rows"], "clap_knn") == pytest.approx(by_hand)


def test_clap_zero_shot_is_the_argmax_cosine_to_the_text_embeddings(clap_job: dict, tiny_clap: Path) -> None:
    job, episodes = clap_job["job"], clap_job["episodes"]
    processor, model = ClapProcessor.from_pretrained(tiny_clap), ClapModel.from_pretrained(tiny_clap).eval()
    tokens = processor.tokenizer(
        [TEMPLATE.format(label=name) for name in job.table.class_names], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        text = torch.nn.functional.normalize(model.get_text_features(**tokens).pooler_output, dim=-1)
    audio = torch.nn.functional.normalize(job.cache.read(job.table.ids)[:, 0], dim=-1)
    by_hand = []
    for episode in episodes:
        predicted = (audio[episode.query] @ text[episode.classes].T).argmax(dim=1).numpy()
        by_hand.append(100.0 * float(np.mean(predicted == episode.query_labels)))
    assert episode_accuracies(clap_job["rows"], "clap_zero_shot") == pytest.approx(by_hand)
    # A random tiny model maps every clip near one class, so also score clips whose audio embedding is a
    # class's text embedding: all right with their own class, none with the next one.
    report = next(r for r in job.reports if isinstance(r, TextZeroShot))
    labels = torch.as_tensor(job.table.labels)
    for shift, accuracy in ((0, 100.0), (1, 0.0)):
        features = text[(labels + shift) % len(text)][:, None, :]
        out = report.run(job, features, episodes, NullTracker())
        assert out.per_method["clap_zero_shot"] == [accuracy] * len(episodes)


def test_clap_batches_equal_clip_by_clip_and_long_clips_keep_their_first_window(tiny_clap: Path) -> None:
    backbone = ClapBackbone(name="tiny_clap", hub_id="calm/tiny-clap", path=str(tiny_clap), assets_name=None)
    backbone.load()
    rng = np.random.default_rng(0)
    waves = [0.1 * rng.standard_normal(int(48000 * s)).astype(np.float32) for s in (0.3, 12.0)]
    batched = backbone.capture(backbone.collate(waves, ["a", "b"]))
    alone = torch.cat([backbone.capture(backbone.collate([w], ["x"])) for w in waves])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)
    first_window = backbone.capture(backbone.collate([waves[1][: 10 * 48000]], ["x"]))
    torch.testing.assert_close(alone[1:], first_window)
    assert (
        backbone.sample_rate == 48000
        and backbone.window_seconds == 10.0
        and backbone.head_names() == ["audio_embedding"]
    )


def test_text_zero_shot_needs_a_text_tower_and_label_templates() -> None:
    with pytest.raises(ConfigError, match="text tower"):
        check_text_tower(WhisperBackbone(path=None, assets_name=None))
    with pytest.raises(ConfigError, match="holding \\{label\\}"):
        TextZeroShotSettings.from_config({"row": "clap_zero_shot", "templates": ["a sound"]})
    settings = TextZeroShotSettings.from_config({"row": "clap_zero_shot", "templates": [TEMPLATE, "{label}"]})
    assert settings.texts("dog_bark") == ["This is a sound of dog bark.", "dog bark"]


def test_the_clap_configs_build_a_backbone_that_reads_no_prompt(tmp_path: Path) -> None:
    cfg = compose_config(["backbone=clap", "method=clap"], tmp_path)
    backbone = build_backbone(cfg.backbone, "32-true")
    assert backbone.hub_id == "laion/clap-htsat-unfused" and not backbone.uses_prompt_text
    assert list(cfg.method.estimators) == ["clap_knn"] and cfg.method.text_zero_shot.row == "clap_zero_shot"
    assert build_prompt(cfg.prompt).key_fields()  # the prompt still builds; it just keys nothing


def test_a_fused_checkpoint_gets_each_clips_own_is_longer_and_a_matching_feature_extractor(tmp_path: Path) -> None:
    """The feature extractor marks one random clip of a short batch as longer, which would send it
    through a fused model's fusion branch depending on its batch mates; the backbone does not."""
    processor = tiny_clap_processor()
    processor.feature_extractor.truncation = "fusion"
    config = tiny_clap_config(processor.tokenizer, seed=0)
    config.audio_config.enable_fusion, config.audio_config.fusion_type = True, "aff_2d"
    fused = save_tiny(ClapModel, config, processor, tmp_path / "fused", seed=0)
    backbone = ClapBackbone(name="fused", hub_id="calm/tiny-clap-fused", path=str(fused), assets_name=None)
    backbone.load()
    rng = np.random.default_rng(1)
    waves = [0.1 * rng.standard_normal(int(48000 * s)).astype(np.float32) for s in (0.5, 1.0, 1.5)]
    batched = backbone.capture(backbone.collate(waves, ["a", "b", "c"]))
    alone = torch.cat([backbone.capture(backbone.collate([w], ["x"])) for w in waves])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)

    processor.feature_extractor.truncation = "rand_trunc"  # one-channel mels for a fused model
    processor.save_pretrained(fused)
    mismatched = ClapBackbone(name="fused", hub_id="calm/tiny-clap-fused", path=str(fused), assets_name=None)
    with pytest.raises(ConfigError, match="enable_fusion=True but its feature extractor truncation='rand_trunc'"):
        mismatched.load()
