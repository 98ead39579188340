"""CALM against hand-worked cases, the literal formula reference, and its invariances."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from calm.errors import ConfigError
from calm.methods import (
    CALM,
    calm_posteriors,
    calm_reliability,
    calm_scores,
    calm_scores_from,
    calm_weights,
    episode_similarities,
    shrink,
)
from calm.methods.prototypes import (
    cosine_similarities,
    holdout_mask,
    l2_normalize,
    leave_one_out_similarities,
)
from tests import formula_reference as ref
from tests.test_prototypes import random_episode

SCHEMES = ("margin_clamped", "margin", "prob", "brier")
SPLITS = ("support", "leave_one_out", "holdout")


def sig(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def f_brier(p: float) -> float:
    """2 p_c - Σ p² for two classes."""
    return 2 * p - p * p - (1 - p) ** 2


# Hand case: labels [0, 0, 1, 1], two heads, 2-D features, tau = 0.5 so s/tau = 2 s.
# head 0: class 0 = (1, 0) twice, class 1 = (0, 1) twice: prototypes (1, 0), (0, 1).
# head 1: class 0 = (0.6, 0.8), (0.6, -0.8) -> prototype (1, 0); class 1 = (0, 1) twice -> (0, 1).
# With two classes p_c = sig(2 (s_c - s_other)) and the margin is 2 p_c - 1.
SUPPORT = torch.tensor(
    [
        [[1.0, 0.0], [0.6, 0.8]],
        [[1.0, 0.0], [0.6, -0.8]],
        [[0.0, 1.0], [0.0, 1.0]],
        [[0.0, 1.0], [0.0, 1.0]],
    ]
)
LABELS = torch.tensor([0, 0, 1, 1])
QUERY = torch.tensor([[[0.8, 0.6], [0.0, 1.0]]])  # head 0: s = (0.8, 0.6); head 1: s = (0, 1)
TAU = 0.5
A = sig(2.0)  # own-class p of every clip that sits on its prototype (cosines 1 and 0)
B = sig(2 * -0.2)  # head 1, clip (0.6, 0.8): s = (0.6, 0.8), wrong side
D = sig(2 * 1.4)  # head 1, clip (0.6, -0.8): s = (0.6, -0.8)
E = sig(2 * 0.2)  # query, head 0: p(0) ; head 1: p(0) = 1 - A
HAND_R = {
    "margin_clamped": [[2 * A - 1, 2 * A - 1], [(0 + 2 * D - 1) / 2, 2 * A - 1]],
    "margin": [[2 * A - 1, 2 * A - 1], [B + D - 1, 2 * A - 1]],
    "prob": [[A, A], [(B + D) / 2, A]],
    "brier": [[f_brier(A), f_brier(A)], [(f_brier(B) + f_brier(D)) / 2, f_brier(A)]],
}


def close(tensor: torch.Tensor, expected, atol: float = 1e-6) -> bool:
    """Element-wise agreement with a nested list of hand-computed numbers."""
    values = tensor.detach().cpu().numpy()
    return values.shape == np.shape(expected) and np.allclose(values, expected, atol=atol, rtol=0)


def hand_weights(r, norm, tau_w=0.5):
    w = [[0.0, 0.0], [0.0, 0.0]]
    for c in range(2):
        if norm == "power":
            raw = [max(r[j][c], 0.0) ** (1 / tau_w) for j in range(2)]
        else:
            raw = [math.exp(r[j][c] / tau_w) for j in range(2)]
        for j in range(2):
            w[j][c] = raw[j] / sum(raw)
    return w


def hand_scores(w):
    return [w[0][0] * E + w[1][0] * (1 - A), w[0][1] * (1 - E) + w[1][1] * A]


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("norm", ["power", "softmax", None])
def test_hand_case(scheme, norm):
    model = CALM(tau=TAU, tau_w=0.5, reliability=scheme, weight_norm=norm).fit(SUPPORT, LABELS)
    r = HAND_R[scheme]
    w = hand_weights(r, norm or ("power" if scheme == "margin_clamped" else "softmax"))
    assert close(model.reliability_, r)
    assert close(model.weights_, w)
    scores = hand_scores(w)
    assert close(model.predict_scores(QUERY), [scores])
    assert model.predict(QUERY).tolist() == [int(scores[1] > scores[0])]


def test_hand_case_numbers_are_the_intended_ones():
    # guard the hand case itself: head 1's first class-0 clip is on the wrong side, so the clamp matters
    assert 2 * B - 1 < 0 < B + D - 1 < (2 * D - 1) / 2
    model = CALM(tau=TAU).fit(SUPPORT, LABELS)
    # power weights, tau_w = 0.5: class 0 weights ∝ r², class 1 tie -> 1/2 each
    r00, r10 = 2 * A - 1, (2 * D - 1) / 2
    assert model.weights_[:, 0].tolist() == pytest.approx([r00**2 / (r00**2 + r10**2), r10**2 / (r00**2 + r10**2)])
    assert model.weights_[:, 1].tolist() == pytest.approx([0.5, 0.5])


def test_hand_case_top_k_tie_goes_to_lower_head():
    # top_k = 1: class 0 keeps head 0 (larger r); class 1 ties (2A-1 on both) and keeps head 0
    model = CALM(tau=TAU, top_k=1).fit(SUPPORT, LABELS)
    assert model.weights_.tolist() == [[1.0, 1.0], [0.0, 0.0]]
    assert close(model.predict_scores(QUERY), [[E, 1 - E]])


def test_hand_case_shrinkage():
    # alpha = 2, n_c = 2: r <- r/2 + grand mean/2
    model = CALM(tau=TAU, reliability="margin", shrinkage=2.0).fit(SUPPORT, LABELS)
    r = HAND_R["margin"]
    grand = sum(sum(row) for row in r) / 4
    expected = [[x / 2 + grand / 2 for x in row] for row in r]
    assert close(model.reliability_, expected)


def test_hand_case_leave_one_out():
    # head 1: each class-0 clip's prototype without it is the other clip: cosine 0.36 - 0.64 = -0.28;
    # clip (0.6, 0.8): s = (-0.28, 0.8), margin 2 sig(2 (-1.08)) - 1 < 0 -> 0 after the clamp
    # clip (0.6, -0.8): s = (-0.28, -0.8), margin 2 sig(2 * 0.52) - 1
    # head 0 and class 1 are unchanged (the clips left out equal the ones kept)
    model = CALM(tau=TAU, reliability_split="leave_one_out").fit(SUPPORT, LABELS)
    expected = [[2 * A - 1, 2 * A - 1], [(2 * sig(2 * 0.52) - 1) / 2, 2 * A - 1]]
    assert close(model.reliability_, expected)
    # prediction still uses the prototypes of the whole support set
    assert torch.allclose(model.prototypes_, CALM(tau=TAU).fit(SUPPORT, LABELS).prototypes_)


def test_three_class_reliability_by_hand():
    # one head, one clip per class; prototypes (1, 0), (0, 1), (0.6, 0.8); tau = 1
    # cosines: clip 0 -> (1, 0, 0.6), clip 1 -> (0, 1, 0.8), clip 2 -> (0.6, 0.8, 1)
    features = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[0.6, 0.8]]])
    labels = torch.tensor([0, 1, 2])
    e = math.exp
    rows = [[e(1), e(0), e(0.6)], [e(0), e(1), e(0.8)], [e(0.6), e(0.8), e(1)]]
    p = [[x / sum(row) for x in row] for row in rows]
    expected = {
        "prob": [p[0][0], p[1][1], p[2][2]],
        "margin": [p[0][0] - p[0][2], p[1][1] - p[1][2], p[2][2] - p[2][1]],
        "brier": [2 * p[c][c] - sum(x * x for x in p[c]) for c in range(3)],
    }
    expected["margin_clamped"] = expected["margin"]
    sims = cosine_similarities(features, l2_normalize(features.transpose(0, 1)))
    post = calm_posteriors(sims, 1.0)
    before = post.clone()
    for scheme, values in expected.items():
        r = calm_reliability(post, labels, 3, scheme)
        assert close(r, [values]), scheme
    assert torch.equal(post, before)  # the sweep core leaves shared posteriors untouched


def test_weights_by_hand():
    # three heads (rows), two classes; negative reliability counts as 0 in power weights
    r = torch.tensor([[-0.5, -0.1], [0.3, -0.2], [0.1, -0.3]])
    power = calm_weights(r, tau_w=0.5, weight_norm="power")
    assert power[:, 0].tolist() == pytest.approx([0.0, 0.9, 0.1])
    # class 1: every reliability negative -> weights sum to ~0 -> uniform over the kept heads
    assert power[:, 1].tolist() == pytest.approx([1 / 3] * 3)
    linear = calm_weights(r, tau_w=1.0, weight_norm="power")
    assert linear[:, 0].tolist() == pytest.approx([0.0, 0.75, 0.25])
    top2 = calm_weights(r, tau_w=0.5, top_k=2, weight_norm="power")
    assert close(top2, [[0.0, 0.5], [0.9, 0.5], [0.1, 0.0]])
    soft = calm_weights(r, tau_w=0.5, weight_norm="softmax")
    z0 = [math.exp(x / 0.5) for x in (-0.5, 0.3, 0.1)]
    assert soft[:, 0].tolist() == pytest.approx([x / sum(z0) for x in z0])
    soft2 = calm_weights(r, tau_w=0.5, top_k=2, weight_norm="softmax")
    z1 = [math.exp(-0.1 / 0.5), math.exp(-0.2 / 0.5)]
    assert soft2[:, 1].tolist() == pytest.approx([z1[0] / sum(z1), z1[1] / sum(z1), 0.0])
    # top_k >= K or 0 keeps every head
    assert torch.equal(calm_weights(r, 0.5, top_k=3, weight_norm="softmax"), soft)
    assert torch.equal(calm_weights(r, 0.5, top_k=0, weight_norm="softmax"), soft)
    assert torch.equal(calm_weights(r, 0.5, scheme="margin"), soft)


def test_shrink_and_scores_by_hand():
    r = torch.tensor([[0.2, 0.6], [0.4, 0.0]])
    out = shrink(r, torch.tensor([1.0, 3.0]), alpha=1.0)  # grand mean 0.3
    assert close(
        out, [[0.5 * 0.2 + 0.5 * 0.3, 0.75 * 0.6 + 0.25 * 0.3], [0.5 * 0.4 + 0.5 * 0.3, 0.75 * 0.0 + 0.25 * 0.3]]
    )
    assert torch.equal(shrink(r, torch.tensor([1.0, 3.0]), alpha=0.0), r)
    post = torch.tensor([[[0.9, 0.1]], [[0.3, 0.7]]])  # (K=2, m=1, C=2)
    w = torch.tensor([[0.25, 1.0], [0.75, 0.0]])
    assert close(calm_scores(post, w), [[0.25 * 0.9 + 0.75 * 0.3, 0.1]])
    classes_major = post.transpose(1, 2).contiguous().transpose(1, 2)
    assert close(calm_scores(classes_major, w), [[0.25 * 0.9 + 0.75 * 0.3, 0.1]])


def test_all_zero_reliability_class_gets_uniform_weights():
    # classes 0 and 1 have the same prototype (1, 0) on both heads, so their clips tie: clamped margin 0
    support = torch.tensor(
        [
            [[1.0, 0.5], [1.0, 0.5]],
            [[1.0, -0.5], [1.0, -0.5]],
            [[2.0, 0.0], [3.0, 0.0]],
            [[0.0, 1.0], [0.1, 1.0]],
            [[0.0, 1.0], [-0.1, 1.0]],
        ]
    )
    labels = torch.tensor([0, 0, 1, 2, 2])
    for tau_w in (0.5, 1.0):
        model = CALM(tau_w=tau_w).fit(support, labels)
        assert model.reliability_[:, :2].tolist() == [[0.0, 0.0], [0.0, 0.0]]
        assert (model.reliability_[:, 2] > 0.5).all()
        assert model.weights_[:, :2].tolist() == [[0.5, 0.5], [0.5, 0.5]]
    top1 = CALM(top_k=1).fit(support, labels)
    assert top1.weights_[:, 0].tolist() == [1.0, 0.0]


def reference_calm(support, labels, query, n_classes, split, seed=0, **settings):
    held = None
    if split == "holdout":
        held = holdout_mask(torch.as_tensor(labels), n_classes, 0.5, seed).tolist()
    return ref.calm(support.tolist(), labels.tolist(), query.tolist(), n_classes, split=split, held=held, **settings)


def assert_matches(model, expected, query, context):
    assert np.allclose(model.reliability_.numpy(), expected["reliability"], atol=1e-5), context
    assert np.allclose(model.weights_.numpy(), expected["weights"], atol=1e-5), context
    scores = model.predict_scores(query)
    assert np.allclose(scores.numpy(), expected["scores"], atol=1e-5), context
    top2 = np.sort(np.asarray(expected["scores"]), axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 1e-5
    assert (model.predict(query).numpy()[clear] == np.asarray(expected["predictions"])[clear]).all(), context


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("weight_norm", [None, "power", "softmax"])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_matches_formula_reference(scheme, weight_norm, split):
    seed = SCHEMES.index(scheme) * 9 + SPLITS.index(split) * 3 + [None, "power", "softmax"].index(weight_norm)
    support, labels, query = random_episode(seed, counts=(3, 2, 4), n_heads=4, dim=5, queries=6)
    for top_k, shrinkage, tau_w in itertools.product((None, 1, 2, 4), (0.0, 0.5), (0.5, 1.0)):
        settings = dict(
            tau=0.2, tau_w=tau_w, reliability=scheme, top_k=top_k, shrinkage=shrinkage, weight_norm=weight_norm
        )
        model = CALM(reliability_split=split, **settings).fit(support, labels)
        expected = reference_calm(support, labels, query, 3, split, **settings)
        assert_matches(model, expected, query, settings)


@pytest.mark.parametrize("split", ["support", "leave_one_out"])
def test_default_settings_and_one_shot_match_reference(split):
    support, labels, query = random_episode(40, counts=(5, 5, 5, 5), n_heads=6, queries=10)
    model = CALM(reliability_split=split).fit(support, labels)
    assert_matches(model, reference_calm(support, labels, query, 4, split), query, split)
    one = [0, 5, 10, 15]
    one_shot = CALM(reliability_split=split).fit(support[one], labels[one])
    assert_matches(one_shot, reference_calm(support[one], labels[one], query, 4, split), query, split)


@pytest.mark.parametrize("tau", [0.03, 0.01, 0.002])
def test_small_tau_matches_reference(tau):
    # below tau = 0.025 the logits are shifted by their maximum instead of by 1/tau
    support, labels, query = random_episode(42, counts=(3, 3, 3), n_heads=5, queries=8)
    for split in SPLITS:
        model = CALM(tau=tau, reliability="margin", reliability_split=split).fit(support, labels)
        assert torch.isfinite(model.predict_scores(query)).all()
        assert_matches(
            model, reference_calm(support, labels, query, 3, split, tau=tau, reliability="margin"), query, (tau, split)
        )


@pytest.mark.parametrize("tau", [0.026, 0.01, 0.001])
def test_query_far_from_every_prototype_keeps_finite_posteriors(tau):
    # prototypes (1, 0.1) and (1, -0.1); the query points the other way: every cosine is about -1
    support = torch.tensor([[[1.0, 0.1]], [[1.0, -0.1]]])
    query = torch.tensor([[[-1.0, 0.05]]])
    model = CALM(tau=tau, reliability="prob").fit(support, torch.tensor([0, 1]))
    s0, s1 = (-1 + 0.005) / math.sqrt(1.01 * 1.0025), (-1 - 0.005) / math.sqrt(1.01 * 1.0025)
    p0 = 1 / (1 + math.exp((s1 - s0) / tau))
    assert close(model.predict_scores(query), [[p0, 1 - p0]], atol=1e-4)


def test_one_shot_leave_one_out_has_zero_own_class_cosine():
    support, labels, _ = random_episode(41, counts=(1, 1, 1))
    sims = leave_one_out_similarities(torch.from_numpy(support), torch.from_numpy(labels), 3)
    assert (sims[:, [0, 1, 2], [0, 1, 2]] == 0).all()
    assert sims.abs().sum() > 0
    # with own-class cosine 0 the margin is negative wherever another prototype has positive cosine
    model = CALM(reliability_split="leave_one_out").fit(support, labels)
    support_model = CALM().fit(support, labels)
    assert (model.reliability_ <= support_model.reliability_ + 1e-6).all()
    with pytest.raises(ConfigError, match=r"class\(es\) \[0, 1, 2\]") as err:
        CALM(reliability_split="holdout").fit(support, labels)
    assert "support" in err.value.fix and "leave_one_out" in err.value.fix


def test_leave_one_out_reliability_is_not_optimistic():
    g = np.random.default_rng(7)
    centers = g.normal(size=(3, 5, 8))
    labels = np.repeat(np.arange(3), 4)
    support = (centers[labels] + g.normal(scale=0.5, size=(12, 5, 8))).astype(np.float32)
    features, targets = torch.from_numpy(support), torch.from_numpy(labels)
    # precondition: every clip is closest to its own class on every head, even without itself
    assert (leave_one_out_similarities(features, targets, 3).argmax(dim=-1) == targets).all()
    optimistic = CALM(tau=0.2).fit(support, labels).reliability_
    honest = CALM(tau=0.2, reliability_split="leave_one_out").fit(support, labels).reliability_
    assert (honest <= optimistic + 1e-6).all()
    assert (optimistic - honest).max() > 1e-2


def test_relabelling_permutes_scores_and_scaling_a_head_changes_nothing():
    support, labels, query = random_episode(8, counts=(3, 3, 3, 3), n_heads=5, queries=9)
    for settings in (
        {},
        {"reliability": "brier", "top_k": 2},
        {"reliability_split": "leave_one_out", "shrinkage": 1.0},
    ):
        scores = CALM(**settings).fit(support, labels).predict_scores(query)
        perm = np.array([3, 1, 0, 2])
        relabelled = CALM(**settings).fit(support, perm[labels]).predict_scores(query)
        assert torch.allclose(relabelled[:, perm], scores, atol=1e-6), settings
        scaled, scaled_query = support.copy(), query.copy()
        scaled[:, 2] *= 50.0
        scaled_query[:, 2] *= 0.02
        assert torch.allclose(CALM(**settings).fit(scaled, labels).predict_scores(scaled_query), scores, atol=1e-5), (
            settings
        )


def test_numpy_and_torch_inputs_agree():
    support, labels, query = random_episode(9, n_heads=6, queries=7)
    a = CALM(reliability_split="holdout", seed=3).fit(support.astype(np.float16), labels)
    b = CALM(reliability_split="holdout", seed=3).fit(torch.from_numpy(support).half(), torch.from_numpy(labels))
    assert torch.equal(a.weights_, b.weights_)
    assert torch.equal(a.predict_scores(query), b.predict_scores(torch.from_numpy(query)))


def test_sweep_reuses_similarities(monkeypatch):
    support, labels, query = random_episode(10, counts=(4, 3, 5), n_heads=6, queries=8)
    for split in SPLITS:
        sims = episode_similarities(support, labels, query, split=split)
        settings = [
            dict(tau=tau, tau_w=tau_w, reliability=scheme, top_k=top_k, shrinkage=alpha)
            for tau, tau_w, scheme, top_k, alpha in itertools.product(
                (0.07, 0.3), (0.5, 1.0), SCHEMES, (None, 3), (0.0, 1.0)
            )
        ]
        expected = [CALM(reliability_split=split, **s).fit(support, labels).predict_scores(query) for s in settings]

        def no_matmul(*args, **kwargs):
            raise AssertionError("the sweep recomputed a matrix product")

        with monkeypatch.context() as patch:
            patch.setattr(torch, "bmm", no_matmul)
            for s, want in zip(settings, expected, strict=True):
                assert torch.allclose(calm_scores_from(sims, **s), want, atol=1e-6), (split, s)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tau": 0.0}, "tau must be a positive"),
        ({"tau": -1.0}, "tau must be a positive"),
        ({"tau_w": 0.0}, "tau_w must be a positive"),
        ({"reliability": "accuracy"}, "unknown reliability"),
        ({"weight_norm": "l1"}, "unknown weight_norm"),
        ({"reliability_split": "cv"}, "unknown reliability_split"),
        ({"reliability_split": "holdout", "holdout_fraction": 1.0}, "holdout_fraction"),
        ({"top_k": -2}, "top_k"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": 2.5}, "top_k"),
        ({"shrinkage": -1.0}, "shrinkage"),
    ],
)
def test_bad_settings(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        CALM(**kwargs)


def test_bad_use():
    with pytest.raises(ConfigError, match="fitted"):
        CALM().predict(QUERY)
    model = CALM().fit(SUPPORT, LABELS)
    with pytest.raises(ConfigError, match="shape"):
        model.predict(torch.zeros(1, 3, 2))
    with pytest.raises(ConfigError, match="no support clip"):
        CALM().fit(SUPPORT, torch.tensor([0, 0, 2, 2]))
    with pytest.raises(ConfigError, match="3-D"):
        CALM().fit(SUPPORT[:, 0], LABELS)
    model.tau = -1.0
    with pytest.raises(ConfigError, match="tau"):
        model.fit(SUPPORT, LABELS)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("split", SPLITS)
def test_cuda_matches_cpu(split):
    support, labels, query = random_episode(11, counts=(4, 4, 4), n_heads=9, queries=20)
    cpu = CALM(reliability_split=split, top_k=3).fit(support, labels).predict_scores(query)
    gpu = CALM(reliability_split=split, top_k=3).fit(torch.from_numpy(support).cuda(), torch.from_numpy(labels).cuda())
    out = gpu.predict_scores(torch.from_numpy(query).cuda())
    assert out.device.type == "cuda" and gpu.weights_.device.type == "cuda"
    assert torch.allclose(out.cpu(), cpu, atol=1e-5)
