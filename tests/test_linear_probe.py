"""The linear-probe baseline: learns, reads only SAV's selected heads, is reproducible, rejects bad settings."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from calm.errors import ConfigError
from calm.methods import SAV, LinearProbe
from calm.methods.linear_probe import probe_features
from tests.cli import compose_config


def separable(
    seed: int = 0,
    n_classes: int = 4,
    shots: int = 5,
    n_heads: int = 9,
    head_dim: int = 6,
    queries: int = 40,
    informative: tuple[int, ...] = (1, 4, 7),
) -> tuple[torch.Tensor, ...]:
    """Classes differ only in the `informative` heads (by direction); the other heads are pure noise."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.zeros(n_classes, n_heads, head_dim)
    centres[:, list(informative)] = 3 * torch.randn(n_classes, len(informative), head_dim, generator=g)

    def draw(labels: torch.Tensor) -> torch.Tensor:
        return centres[labels] + 0.5 * torch.randn(len(labels), n_heads, head_dim, generator=g)

    labels = torch.arange(n_classes).repeat_interleave(shots)
    query_labels = torch.randint(n_classes, (queries,), generator=g)
    return draw(labels), labels, draw(query_labels), query_labels


def test_learns_a_separable_problem_and_selects_the_sav_heads() -> None:
    support, labels, query, query_labels = separable()
    probe = LinearProbe(top_k=3, steps=100).fit(support, labels)
    assert torch.equal(probe.selected_heads_, SAV(top_k=3).fit(support, labels).selected_heads_)
    assert sorted(probe.selected_heads_.tolist()) == [1, 4, 7]
    scores = probe.predict_scores(query)
    assert scores.shape == (len(query), 4) and scores.dtype == torch.float32
    torch.testing.assert_close(scores.sum(dim=1), torch.ones(len(query)))
    assert torch.equal(probe.predict(query), scores.argmax(dim=1))
    assert float((probe.predict(query) == query_labels).float().mean()) == 1.0


def test_training_lowers_the_loss_from_the_initial_weights() -> None:
    support, labels, query, query_labels = separable(seed=1, n_heads=5, informative=(0, 2))
    loss = [
        torch.nn.functional.cross_entropy(
            torch.log(LinearProbe(top_k=2, steps=steps).fit(support, labels).predict_scores(support)), labels
        )
        for steps in (1, 100)
    ]
    assert float(loss[1]) < 0.5 * float(loss[0])


def test_features_are_l2_normalised_per_head_and_concatenated_in_rank_order() -> None:
    features = torch.randn(3, 4, 5) * torch.tensor([1.0, 10.0, 0.1, 5.0])[None, :, None]
    flat = probe_features(features, torch.tensor([2, 0]))
    assert flat.shape == (3, 10)
    torch.testing.assert_close(flat[:, :5], features[:, 2] / features[:, 2].norm(dim=1, keepdim=True))
    torch.testing.assert_close(flat[:, 5:], features[:, 0] / features[:, 0].norm(dim=1, keepdim=True))


def test_only_the_selected_heads_change_predictions() -> None:
    support, labels, query, _ = separable(seed=2)
    probe = LinearProbe(top_k=3, steps=30).fit(support, labels)
    others = [j for j in range(support.shape[1]) if j not in probe.selected_heads_.tolist()]
    scores = probe.predict_scores(query)
    changed = query.clone()
    changed[:, others] = 100 * torch.randn(len(query), len(others), query.shape[2])
    torch.testing.assert_close(probe.predict_scores(changed), scores)
    support_changed = support.clone()
    support_changed[:, others] = 0.0  # still the worst heads by SAV's score, so the same heads are kept
    refit = LinearProbe(top_k=3, steps=30).fit(support_changed, labels)
    assert torch.equal(refit.selected_heads_, probe.selected_heads_)
    torch.testing.assert_close(refit.predict_scores(changed), scores)
    selected = probe.selected_heads_[0]
    moved = query.clone()
    moved[:, selected] = torch.roll(moved[:, selected], 1, dims=0)
    assert not torch.allclose(probe.predict_scores(moved), scores), "a selected head must matter"


def test_same_seed_same_predictions_and_global_rng_untouched() -> None:
    support, labels, query, _ = separable(seed=3, shots=2)
    state = torch.get_rng_state()
    first = LinearProbe(top_k=4, steps=20, seed=5).fit(support, labels).predict_scores(query)
    assert torch.equal(torch.get_rng_state(), state), "fitting must not reseed or draw from the global RNG"
    torch.manual_seed(123)
    again = LinearProbe(top_k=4, steps=20, seed=5).fit(support, labels).predict_scores(query)
    other = LinearProbe(top_k=4, steps=20, seed=6).fit(support, labels).predict_scores(query)
    assert torch.equal(first, again)
    assert not torch.equal(first, other), "the seed sets the initial weights"


def test_numpy_input_top_k_clamped_and_explicit_n_classes() -> None:
    support, labels, query, _ = separable(seed=4, n_heads=3, informative=(0,))
    probe = LinearProbe(top_k=50, steps=5).fit(support.numpy(), labels.numpy(), n_classes=4)
    assert probe.selected_heads_.shape == (3,)
    assert probe.predict(query.numpy()).shape == (len(query),)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"top_k": 0},
        {"top_k": -3},
        {"top_k": True},
        {"top_k": 2.5},
        {"steps": 0},
        {"lr": 0},
        {"lr": -1.0},
        {"lr": "fast"},
        {"weight_decay": -0.1},
        {"seed": 1.5},
    ],
)
def test_bad_settings_raise_config_error(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        LinearProbe(**kwargs)


def test_usage_errors_are_config_errors() -> None:
    support, labels, query, _ = separable(seed=5)
    with pytest.raises(ConfigError, match="before it was fitted"):
        LinearProbe().predict(query)
    probe = LinearProbe(steps=2).fit(support, labels)
    with pytest.raises(ConfigError, match="query features"):
        probe.predict(query[:, :3])
    probe.top_k = 0
    with pytest.raises(ConfigError):
        probe.fit(support, labels)


def test_fit_is_quiet_and_writes_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture,
    recwarn: pytest.WarningsRecorder,
) -> None:
    monkeypatch.chdir(tmp_path)
    support, labels, _, _ = separable(seed=6, shots=2)
    with caplog.at_level(logging.INFO):
        LinearProbe(steps=3).fit(support, labels)
    captured = capsys.readouterr()
    assert not [r for r in caplog.records if r.name.startswith("pytorch_lightning")], caplog.text
    assert captured.out == "" and captured.err == ""
    assert not [str(w.message) for w in recwarn if "lightning" in w.filename]
    assert not list(tmp_path.iterdir()), "no logs or checkpoints"


def test_ablations_config_builds_the_probe(tmp_path: Path) -> None:
    cfg = compose_config(["backbone=whisper_tiny", "method=ablations"], tmp_path)
    probe = instantiate(cfg.method.estimators.linear_probe)
    assert isinstance(probe, LinearProbe)
    assert (probe.top_k, probe.steps, probe.lr, probe.weight_decay, probe.seed) == (20, 100, 0.01, 0.01, 0)
    support, labels, query, query_labels = separable(seed=7, n_heads=30, informative=tuple(range(0, 30, 2)))
    accuracy = np.mean(probe.fit(support, labels).predict(query).numpy() == query_labels.numpy())
    assert accuracy > 0.9
