"""Shared prototype math: conversions, prototypes, cosines, leave-one-out, holdout split, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from calm.errors import ConfigError
from calm.methods.prototypes import (
    as_features,
    class_prototypes,
    cosine_similarities,
    episode_similarities,
    holdout_mask,
    l2_normalize,
    leave_one_out_similarities,
    validate_query,
    validate_support,
)
from tests import formula_reference as ref


def random_episode(seed: int, counts=(3, 2, 4), n_heads=4, dim=5, queries=6):
    g = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(counts)), counts)
    centers = g.normal(size=(len(counts), n_heads, dim))
    support = centers[labels] + g.normal(scale=1.0, size=(len(labels), n_heads, dim))
    query = centers[g.integers(0, len(counts), queries)] + g.normal(size=(queries, n_heads, dim))
    return support.astype(np.float32), labels, query.astype(np.float32)


def test_as_features_converts_to_float32_and_keeps_tensors_in_place():
    half = np.array([[[1.5, -2.0]]], dtype=np.float16)
    out = as_features(half)
    assert out.dtype == torch.float32 and out.tolist() == [[[1.5, -2.0]]]
    assert as_features(torch.tensor(half)).dtype == torch.float32
    already = torch.ones(2, 3, 4)
    assert as_features(already).data_ptr() == already.data_ptr()
    readonly = np.ones((2, 3, 4), dtype=np.float32)
    readonly.flags.writeable = False
    assert as_features(readonly).sum().item() == 24.0
    with pytest.raises(ConfigError):
        as_features([[[1.0]]])


def test_l2_normalize_with_floor():
    x = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1e-9, 0.0]])
    out = l2_normalize(x)
    assert torch.allclose(out[0], torch.tensor([0.6, 0.8]))
    assert out[1].tolist() == [0.0, 0.0]
    assert out[2, 0].item() == pytest.approx(0.1)


def test_class_prototypes_are_means_of_raw_features():
    # class 0: (2, 0) and (0, 1) -> mean (1, 0.5); the mean of the normalised clips would be (0.5, 0.5)
    features = torch.tensor([[[2.0, 0.0]], [[0.0, 1.0]], [[0.0, -3.0]]])
    protos = class_prototypes(features, torch.tensor([0, 0, 1]), 2)
    assert protos.shape == (1, 2, 2)
    assert protos[0].tolist() == [[1.0, 0.5], [0.0, -3.0]]


def test_cosine_similarities_by_hand():
    protos = l2_normalize(torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.6, 0.8], [-1.0, 0.0]]]))
    features = torch.tensor([[[3.0, 4.0], [0.0, 2.0]], [[-5.0, 0.0], [0.8, -0.6]]])  # (m=2, K=2, d=2)
    sims = cosine_similarities(features, protos)
    assert sims.shape == (2, 2, 2)
    expected = [
        [[0.6, 0.8], [-1.0, 0.0]],  # head 0: clips vs (1,0), (0,1)
        [[0.8, 0.0], [0.0, -0.8]],
    ]  # head 1: clips vs (0.6,0.8), (-1,0)
    assert torch.allclose(sims, torch.tensor(expected), atol=1e-6)


def test_cosine_similarities_match_reference_and_ignore_scale():
    support, labels, query = random_episode(0)
    protos = class_prototypes(torch.from_numpy(support), torch.from_numpy(labels), 3)
    sims = cosine_similarities(torch.from_numpy(query), l2_normalize(protos))
    ref_protos = ref.prototypes(support.tolist(), labels.tolist(), 3)
    for i, clip in enumerate(query.tolist()):
        expected = ref.similarities(clip, ref_protos)
        assert np.allclose(sims[:, i, :].numpy(), expected, atol=1e-5)
    scaled = cosine_similarities(torch.from_numpy(query) * 7.5, l2_normalize(protos))
    assert torch.allclose(scaled, sims, atol=1e-6)


def test_leave_one_out_by_hand():
    # class 0 on one head: (1, 0) and (0.6, 0.8); each clip's prototype without it is the other clip
    features = torch.tensor([[[1.0, 0.0]], [[0.6, 0.8]], [[0.0, 2.0]]])
    labels = torch.tensor([0, 0, 1])
    sims = leave_one_out_similarities(features, labels, 2)
    assert sims.shape == (1, 3, 2)
    # own class: 0.6 and 0.6 (support-set versions: 0.8/sqrt(0.8) and (0.48+0.32)/sqrt(0.8))
    assert sims[0, 0, 0].item() == pytest.approx(0.6, abs=1e-6)
    assert sims[0, 1, 0].item() == pytest.approx(0.6, abs=1e-6)
    # other class unchanged: prototype (0, 1)
    assert sims[0, 0, 1].item() == pytest.approx(0.0, abs=1e-6)
    assert sims[0, 1, 1].item() == pytest.approx(0.8, abs=1e-6)
    # single-clip class: the prototype without it is the zero vector, cosine 0
    assert sims[0, 2, 1].item() == 0.0
    support_version = cosine_similarities(features, l2_normalize(class_prototypes(features, labels, 2)))
    assert support_version[0, 0, 0].item() == pytest.approx(0.8 / math.sqrt(0.8), abs=1e-6)
    assert support_version[0, 2, 1].item() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_leave_one_out_matches_refit(seed):
    support, labels, _ = random_episode(seed, counts=(1, 2, 3, 5))
    support[:, 1] *= 40.0  # heads of very different scale
    sims = leave_one_out_similarities(torch.from_numpy(support), torch.from_numpy(labels), 4)
    for i, (label, expected) in enumerate(
        ref.reliability_set(support.tolist(), labels.tolist(), 4, "leave_one_out", None)
    ):
        assert label == labels[i]
        assert np.allclose(sims[:, i, :].numpy(), expected, atol=1e-5), i
    one_shot = labels == 0
    assert (sims[:, np.flatnonzero(one_shot)[0], 0] == 0).all()


def test_holdout_mask_counts_determinism_and_errors():
    labels = torch.tensor([0] * 2 + [1] * 5 + [2] * 10 + [3] * 3)
    mask = holdout_mask(labels, 4, 0.5, seed=3)
    held = torch.bincount(labels[mask], minlength=4).tolist()
    # round(0.5 n_c) clipped to [1, n_c - 1]; round() sends 2.5 to 2 and 1.5 to 2
    assert held == [1, 2, 5, 2]
    assert torch.equal(mask, holdout_mask(labels, 4, 0.5, seed=3))
    assert not all(torch.equal(mask, holdout_mask(labels, 4, 0.5, seed=s)) for s in range(4, 10))
    assert torch.bincount(labels[holdout_mask(labels, 4, 0.99, 0)], minlength=4).tolist() == [1, 4, 9, 2]
    assert torch.bincount(labels[holdout_mask(labels, 4, 0.01, 0)], minlength=4).tolist() == [1, 1, 1, 1]
    with pytest.raises(ConfigError, match=r"class\(es\) \[1\]") as err:
        holdout_mask(torch.tensor([0, 0, 1, 2, 2]), 3, 0.5, 0)
    assert "leave_one_out" in err.value.fix


def test_episode_similarities_shapes():
    support, labels, query = random_episode(4)
    sims = episode_similarities(support, labels, query, split="holdout")
    n_held = int(holdout_mask(torch.from_numpy(labels), 3, 0.5, 0).sum())
    assert sims.reliability.shape == (4, n_held, 3)
    assert sims.reliability_labels.shape == (n_held,)
    assert sims.query.shape == (4, 6, 3) and sims.prototypes.shape == (4, 3, 5)
    assert sims.n_classes == 3 and sims.split == "holdout"


@pytest.mark.parametrize(
    ("features", "labels", "n_classes", "match"),
    [
        (np.zeros((3, 4)), [0, 1, 1], None, "3-D"),
        (np.zeros((3, 2, 4)), [0, 1], None, "3 support clips but 2 labels"),
        (np.zeros((3, 2, 4)), [0, 1, 3], None, r"class\(es\) \[2\] have no support clip"),
        (np.zeros((3, 2, 4)), [0, 1, -1], None, "labels must lie in"),
        (np.zeros((3, 2, 4)), [0, 1, 2], 2, "labels must lie in 0..1"),
        (np.zeros((3, 2, 4)), [0.0, 1.0, 1.0], None, "integer"),
        (np.zeros((2, 2, 4)), [0, 0], None, "at least 2 classes"),
        (np.zeros((0, 2, 4)), np.zeros(0, dtype=int), None, "empty"),
    ],
)
def test_validate_support_rejects_bad_input(features, labels, n_classes, match):
    with pytest.raises(ConfigError, match=match):
        validate_support(features, labels, n_classes)


def test_validate_support_and_query_accept_good_input():
    features, labels, n_classes = validate_support(np.zeros((3, 2, 4), dtype=np.float16), [1, 0, 1])
    assert features.dtype == torch.float32 and labels.dtype == torch.long and n_classes == 2
    assert validate_query(torch.zeros(5, 2, 4), 2, 4).shape == (5, 2, 4)
    with pytest.raises(ConfigError, match=r"expected \(m, 2, 4\)"):
        validate_query(torch.zeros(5, 2, 3), 2, 4)
    with pytest.raises(ConfigError, match=r"expected \(m, 2, 4\)"):
        validate_query(torch.zeros(2, 4), 2, 4)
