"""The authors'-mode switches of the methods (issue 11, points 5 and 6), on hand-worked numbers:
CALM's ε-leak top-k masking of power weights and Concat's per-head query normalisation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from calm.errors import ConfigError
from calm.methods import CALM, Concat, calm_scores_from, episode_similarities
from calm.methods.calm_core import calm_weights, head_ranks, weight_sets
from tests import formula_reference as ref
from tests.test_prototypes import random_episode

EPS = 2.0**-126  # the smallest normal float32, torch.finfo(torch.float32).tiny


def test_epsilon_leak_weights_at_tau_w_10_by_hand():
    """Four heads, two classes, top_k = 2, tau_w = 10 (power weights w ∝ (r + ε)^0.1).

    class 0: r = (0.8, 0.2, 0.6, 0.1) keeps heads 0 and 2; class 1: r = (0.3, 0.3, 0.9, 0.0) keeps
    heads 2 and 0 (0 and 1 tie at 0.3, the lower index wins). The authors set the excluded r to 0
    and add ε before the power, so an excluded head keeps ε^0.1 = 2^-12.6 ≈ 1.611e-4.
    """
    r = torch.tensor([[0.8, 0.3], [0.2, 0.3], [0.6, 0.9], [0.1, 0.0]])
    leak = 2.0 ** (-126 * 0.1)
    assert leak == pytest.approx(1.6107e-4, rel=1e-4)
    kept0, kept1 = (0.8**0.1, 0.6**0.1), (0.3**0.1, 0.9**0.1)  # r + ε == r in float64 here
    total0, total1 = sum(kept0) + 2 * leak, sum(kept1) + 2 * leak
    expected = [
        [kept0[0] / total0, kept1[0] / total1],
        [leak / total0, leak / total1],
        [kept0[1] / total0, kept1[1] / total1],
        [leak / total0, leak / total1],
    ]
    # the numbers themselves: 0.97793/1.92885, 1.6107e-4/1.92885, 0.95021/1.92885 for class 0
    assert expected[0][0] == pytest.approx(0.507107, abs=1e-6)
    assert expected[1][0] == pytest.approx(8.3524e-5, rel=1e-4)
    assert expected[2][0] == pytest.approx(0.492726, abs=1e-6)
    w = calm_weights(r, tau_w=10.0, top_k=2, weight_norm="power", top_k_mode="epsilon_leak")
    np.testing.assert_allclose(w.numpy(), expected, rtol=2e-6)
    # an excluded head's raw weight relative to a kept head's: ε^0.1 / (0.8 + ε)^0.1
    assert float(w[1, 0] / w[0, 0]) == pytest.approx(leak / 0.8**0.1, rel=1e-5)
    # today's rule: the excluded heads get exactly 0
    exclude = calm_weights(r, tau_w=10.0, top_k=2, weight_norm="power")
    np.testing.assert_allclose(
        exclude.numpy(),
        [
            [kept0[0] / sum(kept0), kept1[0] / sum(kept1)],
            [0, 0],
            [kept0[1] / sum(kept0), kept1[1] / sum(kept1)],
            [0, 0],
        ],
        rtol=2e-6,
    )
    assert exclude[[1, 3]].eq(0).all()


def test_epsilon_leak_leaves_tau_w_1_softmax_no_top_k_and_tau_w_half_unchanged():
    r = torch.tensor([[0.8, 0.3], [0.2, 0.3], [0.6, 0.9], [0.1, 0.0]])
    # tau_w = 1: the authors add no ε; tau_w = 0.5: ε² underflows to 0 in float32
    for tau_w in (1.0, 0.5):
        same = calm_weights(r, tau_w, top_k=2, weight_norm="power", top_k_mode="epsilon_leak")
        assert torch.equal(same, calm_weights(r, tau_w, top_k=2, weight_norm="power"))
    # softmax weights mask the logits to finfo.min: nothing leaks
    soft = calm_weights(r, 10.0, top_k=2, weight_norm="softmax", top_k_mode="epsilon_leak")
    assert torch.equal(soft, calm_weights(r, 10.0, top_k=2, weight_norm="softmax"))
    # no top_k: no head is excluded
    every = calm_weights(r, 10.0, weight_norm="power", top_k_mode="epsilon_leak")
    assert torch.equal(every, calm_weights(r, 10.0, weight_norm="power"))


def test_epsilon_leak_uniform_fallback_stays_over_the_kept_heads():
    # every r is 0 at tau_w = 0.5: ε² underflows, the weights sum to 0 -> uniform over the 2 kept heads
    r = torch.zeros(4, 1)
    w = calm_weights(r, tau_w=0.5, top_k=2, weight_norm="power", top_k_mode="epsilon_leak")
    assert w[:, 0].tolist() == [0.5, 0.5, 0.0, 0.0]


def test_weight_sets_batches_the_leak_per_tau_w_and_top_k():
    gen = torch.Generator().manual_seed(0)
    r = torch.rand(7, 3, generator=gen)
    tau_ws, top_ks = (0.5, 1.0, 10.0), (2, None, 5)
    batch = weight_sets(r, head_ranks(r), "power", tau_ws, top_ks, top_k_mode="epsilon_leak")
    for t, (tau_w, top_k) in enumerate((w, k) for w in tau_ws for k in top_ks):
        one = calm_weights(r, tau_w, top_k, "power", top_k_mode="epsilon_leak")
        assert torch.equal(batch[t], one), (tau_w, top_k)
    default = weight_sets(r, head_ranks(r), "power", tau_ws, top_ks)
    assert torch.equal(default, weight_sets(r, head_ranks(r), "power", tau_ws, top_ks, top_k_mode="exclude"))


@pytest.mark.parametrize("tau_w", [10.0, 3.0])
def test_calm_epsilon_leak_matches_the_formula_reference(tau_w):
    support, labels, query = random_episode(7, counts=(3, 2, 4), n_heads=6, queries=8)
    for top_k in (1, 3, None):
        model = CALM(tau=0.2, tau_w=tau_w, top_k=top_k, top_k_mode="epsilon_leak").fit(support, labels)
        expected = ref.calm(
            support.tolist(),
            labels.tolist(),
            query.tolist(),
            3,
            tau=0.2,
            tau_w=tau_w,
            top_k=top_k,
            top_k_mode="epsilon_leak",
        )
        np.testing.assert_allclose(model.weights_.numpy(), expected["weights"], rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(model.predict_scores(query).numpy(), expected["scores"], atol=1e-6)
        if top_k in (1, 3):
            assert (model.weights_ > 0).all(), "every excluded head keeps a weight"
        sims = episode_similarities(support, labels, query)
        swept = calm_scores_from(sims, tau=0.2, tau_w=tau_w, top_k=top_k, top_k_mode="epsilon_leak")
        assert torch.allclose(swept, model.predict_scores(query), atol=1e-6)


def test_top_k_mode_is_checked():
    with pytest.raises(ConfigError, match="unknown top_k_mode 'leak'"):
        CALM(top_k_mode="leak")
    with pytest.raises(ConfigError, match="unknown top_k_mode"):
        calm_weights(torch.zeros(2, 1), 1.0, top_k_mode="none")


# Concat: two heads of 2-D features, two classes of two clips each.
# class 0 clips: head 0 (1, 0), head 1 (0, 4) and (0, 6) -> raw mean [(1, 0), (0, 5)] -> flat (1, 0, 0, 5)
# class 1 clips: head 0 (0, 1), head 1 (1, 0), twice      -> raw mean [(0, 1), (1, 0)] -> flat (0, 1, 1, 0)
CONCAT_SUPPORT = torch.tensor(
    [
        [[1.0, 0.0], [0.0, 4.0]],
        [[1.0, 0.0], [0.0, 6.0]],
        [[0.0, 1.0], [1.0, 0.0]],
        [[0.0, 1.0], [1.0, 0.0]],
    ]
)
CONCAT_LABELS = torch.tensor([0, 0, 1, 1])
# query: head 0 (0, 10) points at class 1, head 1 (0, 1) at class 0
CONCAT_QUERY = torch.tensor([[[0.0, 10.0], [0.0, 1.0]]])


def test_concat_cosine_and_authors_normalisation_by_hand():
    # cosine: raw query (0, 10, 0, 1), ‖·‖ = √101
    #   class 0: ⟨q, (1, 0, 0, 5)⟩ = 5 -> 5 / (√101·√26); class 1: ⟨q, (0, 1, 1, 0)⟩ = 10 -> 10 / (√101·√2)
    cosine = Concat().fit(CONCAT_SUPPORT, CONCAT_LABELS).predict_scores(CONCAT_QUERY)
    want = [5 / (math.sqrt(101) * math.sqrt(26)), 10 / (math.sqrt(101) * math.sqrt(2))]
    np.testing.assert_allclose(cosine.numpy(), [want], rtol=1e-6)
    assert Concat().fit(CONCAT_SUPPORT, CONCAT_LABELS).predict(CONCAT_QUERY).tolist() == [1]
    # authors: each query head normalised first -> (0, 1, 0, 1), ‖·‖ = √2, against the raw means
    #   class 0: 1·5 / (√2·√26) = 0.6934; class 1: 1 / (√2·√2) = 0.5 -> the prediction flips to class 0
    model = Concat(normalization="authors").fit(CONCAT_SUPPORT, CONCAT_LABELS)
    authors = model.predict_scores(CONCAT_QUERY)
    want = [5 / (math.sqrt(2) * math.sqrt(26)), 1 / (math.sqrt(2) * math.sqrt(2))]
    np.testing.assert_allclose(authors.numpy(), [want], rtol=1e-6)
    assert model.predict(CONCAT_QUERY).tolist() == [0]
    # the prototypes are the raw class means, not means of normalised heads: with those, class 0's
    # flat prototype would be (1, 0, 0, 1) and both classes would score 0.5
    np.testing.assert_allclose(model.prototypes_[0, 0].numpy(), np.array([1, 0, 0, 5]) / math.sqrt(26), rtol=1e-6)


def test_concat_normalization_is_checked():
    with pytest.raises(ConfigError, match="Concat normalization must be one of cosine, authors"):
        Concat(normalization="per_head")
