"""SAV against hand-worked cases and the literal formula reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from calm.errors import ConfigError
from calm.methods import SAV, episode_similarities, sav_predict_from
from calm.methods.sav_core import sav_decide, sav_votes
from tests import formula_reference as ref
from tests.test_prototypes import random_episode

# Support: labels [0, 0, 1, 1]; three heads of 2-D features.
# head 0: class 0 = (0.6, 0.8), (0.6, -0.8) -> prototype (1, 0); class 1 = (1, 1), (-1, 1) -> (0, 1).
#         (0.6, 0.8) is nearer class 1 (0.8 > 0.6): wrong. (1, 1) ties 0.7071 vs 0.7071 -> class 0: wrong.
#         Head score 2.
# heads 1 and 2: every clip right, head score 4 (a tie: head 1 ranks first).
SUPPORT = torch.tensor(
    [
        [[0.6, 0.8], [2.0, 0.0], [1.0, 0.1]],
        [[0.6, -0.8], [1.0, 0.0], [1.0, -0.1]],
        [[1.0, 1.0], [0.0, 1.0], [0.1, 1.0]],
        [[-1.0, 1.0], [0.0, 3.0], [-0.1, 1.0]],
    ]
)
LABELS = torch.tensor([0, 0, 1, 1])
# Query 0: every head says class 0. Query 1: head 1 says class 1, heads 0 and 2 say class 0.
QUERY = torch.tensor(
    [
        [[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]],
        [[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]],
    ]
)


def test_head_scores_and_ranking_by_hand():
    sav = SAV(top_k=2).fit(SUPPORT, LABELS)
    assert sav.head_scores_.tolist() == [2, 4, 4]
    assert sav.ranking_.tolist() == [1, 2, 0]
    assert sav.selected_heads_.tolist() == [1, 2]
    assert torch.allclose(sav.prototypes_[0], torch.tensor([[1.0, 0.0], [0.0, 1.0]]))


def test_votes_and_class_tie_by_hand():
    two = SAV(top_k=2).fit(SUPPORT, LABELS)
    assert two.predict_scores(QUERY).tolist() == [[2.0, 0.0], [1.0, 1.0]]
    # query 1 is a 1-1 tie between classes: head 1 (ranked first) voted class 1
    assert two.predict(QUERY).tolist() == [0, 1]
    three = SAV(top_k=3).fit(SUPPORT, LABELS)
    assert three.predict_scores(QUERY).tolist() == [[3.0, 0.0], [2.0, 1.0]]
    assert three.predict(QUERY).tolist() == [0, 0]
    clamped = SAV(top_k=20).fit(SUPPORT, LABELS)
    assert clamped.selected_heads_.tolist() == [1, 2, 0]
    assert torch.equal(clamped.predict(QUERY), three.predict(QUERY))


def test_class_tie_goes_to_class_of_highest_ranked_head():
    # rows are heads in rank order, columns queries
    head_votes = torch.tensor([[2, 0, 1], [1, 1, 0], [1, 2, 2], [2, 0, 1]])
    assert sav_votes(head_votes, 3).tolist() == [[0, 2, 2], [2, 1, 1], [1, 2, 1]]
    # query 0: classes 1 and 2 tie at 2 votes and the rank-0 head voted 2; query 1: class 0 has
    # 2 votes; query 2: class 1 has 2 votes. Three-way tie: the rank-0 head's class wins.
    assert sav_decide(head_votes, 3).tolist() == [2, 0, 1]
    three_way = torch.tensor([[1], [2], [0]])
    assert sav_decide(three_way, 3).tolist() == [1]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("top_k", [1, 2, 3, 5, 20])
def test_matches_formula_reference(seed, top_k):
    support, labels, query = random_episode(seed, counts=(3, 2, 4), n_heads=5, queries=8)
    expected = ref.sav(support.tolist(), labels.tolist(), query.tolist(), 3, top_k)
    sav = SAV(top_k=top_k).fit(support, labels)
    assert sav.head_scores_.tolist() == expected["head_scores"]
    assert sav.ranking_.tolist() == expected["ranking"]
    assert sav.selected_heads_.tolist() == expected["selected"]
    assert sav.predict_scores(query).tolist() == expected["votes"]
    assert sav.predict(query).tolist() == expected["predictions"]


def test_sweep_core_matches_estimator():
    support, labels, query = random_episode(5, n_heads=6, queries=10)
    sims = episode_similarities(support, labels, query)
    for top_k in (1, 3, 6):
        assert torch.equal(sav_predict_from(sims, top_k), SAV(top_k=top_k).fit(support, labels).predict(query))
    with pytest.raises(ConfigError, match="split"):
        sav_predict_from(episode_similarities(support, labels, query, split="leave_one_out"), 2)


def test_relabelling_scaling_numpy_and_one_shot():
    support, labels, query = random_episode(6, counts=(4, 4, 4), n_heads=7, queries=12)
    base = SAV(top_k=3).fit(support, labels)
    votes = base.predict_scores(query)
    perm = np.array([2, 0, 1])
    relabelled = SAV(top_k=3).fit(support, perm[labels])
    assert torch.equal(relabelled.predict_scores(query)[:, perm], votes)
    scaled = support.copy()
    scaled_query = query.copy()
    scaled[:, 4] *= 13.0
    scaled_query[:, 4] *= 0.05
    rescaled = SAV(top_k=3).fit(scaled, labels)
    assert torch.equal(rescaled.head_scores_, base.head_scores_)
    assert torch.equal(rescaled.predict_scores(scaled_query), votes)
    from_torch = SAV(top_k=3).fit(torch.from_numpy(support).half(), torch.from_numpy(labels))
    from_numpy = SAV(top_k=3).fit(support.astype(np.float16), labels)
    assert torch.equal(from_torch.predict_scores(query), from_numpy.predict_scores(query.astype(np.float16)))
    one_shot = SAV(top_k=2).fit(support[[0, 4, 8]], [0, 1, 2])
    assert one_shot.head_scores_.tolist() == [3] * 7  # each clip is its own prototype
    expected = ref.sav(support[[0, 4, 8]].tolist(), [0, 1, 2], query.tolist(), 3, 2)
    assert one_shot.predict(query).tolist() == expected["predictions"]


@pytest.mark.parametrize("top_k", [0, -1, 1.5, True, "all"])
def test_bad_top_k(top_k):
    with pytest.raises(ConfigError, match="top_k"):
        SAV(top_k=top_k)


def test_predict_before_fit_and_shape_mismatch():
    with pytest.raises(ConfigError, match="fitted"):
        SAV().predict(QUERY)
    sav = SAV(top_k=2).fit(SUPPORT, LABELS)
    with pytest.raises(ConfigError, match="shape"):
        sav.predict(torch.zeros(2, 3, 5))
    with pytest.raises(ConfigError, match="no support clip"):
        SAV().fit(SUPPORT, torch.tensor([0, 0, 2, 2]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_matches_cpu():
    support, labels, query = random_episode(7, n_heads=9, queries=20)
    cpu = SAV(top_k=4).fit(support, labels).predict(query)
    gpu = SAV(top_k=4).fit(torch.from_numpy(support).cuda(), torch.from_numpy(labels).cuda())
    out = gpu.predict(torch.from_numpy(query).cuda())
    assert out.device.type == "cuda"
    assert torch.equal(out.cpu(), cpu)
