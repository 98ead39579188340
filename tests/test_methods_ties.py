"""Ties in head rankings (docs/design/formulas.md#ties): the index rule, the seeded random tie-break and the
count of selections a tie decided, on hand-worked cases."""

from __future__ import annotations

import pytest
import torch

from calm.errors import ConfigError
from calm.methods import CALM, GRW, SAV, LinearProbe, TopKSoft, sav_predict_from
from calm.methods.calm_core import calm_weights, head_ranks
from calm.methods.prototypes import episode_similarities
from calm.methods.sav_core import sav_rank
from calm.methods.ties import descending_order, tie_order, tied_selections
from tests import formula_reference as ref
from tests.test_prototypes import random_episode

N_HEADS, N_CLASSES = 6, 3


def one_shot(seed: int = 0):
    """One clip per class, six heads: every head's prototype of class c is that class's clip, so every
    head gets all 3 support clips right (cosine 1 with its own clip, < 1 with the others)."""
    gen = torch.Generator().manual_seed(seed)
    support = torch.randn(N_CLASSES, N_HEADS, 4, generator=gen)
    query = torch.randn(5, N_HEADS, 4, generator=gen)
    return support, torch.arange(N_CLASSES), query


def permutation(seed: int, n: int = N_HEADS) -> list[int]:
    """The rule written out: a permutation of the heads from a CPU generator seeded with the tie seed."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()


def test_one_shot_sav_index_rule_picks_the_first_heads_and_counts_every_pick_as_a_tie():
    support, labels, _ = one_shot()
    sav = SAV(top_k=2).fit(support, labels)
    assert sav.head_scores_.tolist() == [3] * N_HEADS  # all tie
    assert sav.selected_heads_.tolist() == [0, 1]
    assert sav.ranking_.tolist() == list(range(N_HEADS))
    assert sav.tied_selections_ == 2 and sav.tie_seed_ is None
    assert SAV(top_k=None).fit(support, labels).tied_selections_ == 0  # nothing left out, no tie decided
    assert SAV(top_k=N_HEADS).fit(support, labels).tied_selections_ == 0


def test_one_shot_sav_random_rule_picks_a_seed_dependent_set_reproducibly():
    support, labels, _ = one_shot()
    picks = {}
    for seed in range(6):
        sav = SAV(top_k=2, tie_break="random", tie_seed=seed).fit(support, labels)
        # all scores equal: the ranking is the permutation itself
        assert sav.ranking_.tolist() == permutation(seed)
        assert sav.selected_heads_.tolist() == permutation(seed)[:2]
        assert sav.tied_selections_ == 2 and sav.tie_seed_ == seed
        again = SAV(top_k=2, tie_break="random", tie_seed=seed).fit(support, labels)
        assert again.selected_heads_.tolist() == sav.selected_heads_.tolist()
        picks[seed] = frozenset(sav.selected_heads_.tolist())
    assert len(set(picks.values())) > 1, "the set must depend on the seed"
    assert any(p != {0, 1} for p in picks.values())


def test_fit_tie_seed_overrides_the_setting_for_that_fit_only():
    support, labels, _ = one_shot()
    sav = SAV(top_k=2, tie_break="random", tie_seed=0)
    assert sav.fit(support, labels, tie_seed=7).selected_heads_.tolist() == permutation(7)[:2]
    assert sav.tie_seed_ == 7 and sav.tie_seed == 0
    assert sav.fit(support, labels).selected_heads_.tolist() == permutation(0)[:2]
    # the index rule ignores the seed
    index = SAV(top_k=2).fit(support, labels, tie_seed=7)
    assert index.selected_heads_.tolist() == [0, 1] and index.tie_seed_ is None


def test_random_rule_keeps_score_order_and_only_reorders_ties():
    # scores by hand: heads 1, 2, 4 tie at 4, head 0 has 2, head 3 has 1
    scores = torch.tensor([2, 4, 4, 1, 4])
    assert sav_rank(scores).tolist() == [1, 2, 4, 0, 3]
    pi = torch.tensor([4, 3, 0, 2, 1])
    # in π's order: 4 (4), 3 (1), 0 (2), 2 (4), 1 (4) -> stable by score: 4, 2, 1, then 0, then 3
    assert sav_rank(scores, pi).tolist() == [4, 2, 1, 0, 3]
    # top 2 of the three tied heads: both chosen among ties; top 3: all tied heads kept, none decided
    assert tied_selections(scores, sav_rank(scores), 2) == 2
    assert tied_selections(scores, sav_rank(scores), 3) == 0
    assert tied_selections(scores, sav_rank(scores), 4) == 0  # head 0 (2) beats head 3 (1): no tie
    assert tied_selections(scores, sav_rank(scores), None) == 0
    for seed in range(10):
        order = sav_rank(scores, tie_order(5, "random", seed))
        assert set(order[:3].tolist()) == {1, 2, 4} and order[3:].tolist() == [0, 3]


def test_calm_per_class_ranks_with_ties_by_hand():
    # two classes; class 0: heads 0 and 2 tie at 0.5 above head 1; class 1: heads 1 and 2 tie at 0.9
    r = torch.tensor([[0.5, 0.1], [0.2, 0.9], [0.5, 0.9]])
    assert head_ranks(r).tolist() == [[0, 2], [2, 0], [1, 1]]
    pi = torch.tensor([2, 1, 0])  # head 2 first among ties
    assert head_ranks(r, pi).tolist() == [[1, 2], [2, 1], [0, 0]]
    # top_k = 1: each class's single kept head is a tie winner
    assert tied_selections(r, descending_order(r), 1) == 2
    assert tied_selections(r, descending_order(r), 2) == 0  # the first left out has a lower r in both
    w_index = calm_weights(r, tau_w=0.5, top_k=1, weight_norm="power")
    assert w_index.tolist() == [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]
    w_pi = calm_weights(r, tau_w=0.5, top_k=1, weight_norm="power", tie_order=pi)
    assert w_pi.tolist() == [[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]]


def saturated_one_shot():
    """1 shot at tau = 1e-3: every own-class posterior is exactly 1, so every clamped margin is 1."""
    support, labels, query = one_shot(3)
    return support, labels, query


def test_calm_one_shot_saturated_reliabilities_tie_in_every_class():
    support, labels, query = saturated_one_shot()
    index = CALM(tau=1e-3, top_k=2).fit(support, labels)
    assert index.reliability_.tolist() == [[1.0] * N_CLASSES] * N_HEADS
    assert index.weights_[:2].tolist() == [[0.5] * N_CLASSES] * 2 and index.weights_[2:].sum() == 0
    assert index.tied_selections_ == 2 * N_CLASSES
    for seed in (0, 1, 2):
        model = CALM(tau=1e-3, top_k=2, tie_break="random", tie_seed=seed).fit(support, labels)
        kept = sorted(permutation(seed)[:2])
        expected = torch.zeros(N_HEADS, N_CLASSES)
        expected[kept] = 0.5
        assert torch.equal(model.weights_, expected), seed
        assert model.tied_selections_ == 2 * N_CLASSES
        refit = CALM(tau=1e-3, top_k=2, tie_break="random").fit(support, labels, tie_seed=seed)
        assert torch.equal(refit.weights_, model.weights_)
    assert CALM(tau=1e-3).fit(support, labels).tied_selections_ == 0  # no top_k, nothing decided


def test_calm_random_rule_changes_nothing_without_ties():
    support, labels, query = random_episode(3, counts=(3, 2, 4), n_heads=6, queries=8)
    for top_k in (None, 1, 3):
        index = CALM(top_k=top_k).fit(support, labels)
        rand = CALM(top_k=top_k, tie_break="random", tie_seed=5).fit(support, labels)
        assert torch.equal(index.weights_, rand.weights_)
        assert torch.equal(index.predict_scores(query), rand.predict_scores(query))
        assert index.tied_selections_ == rand.tied_selections_ == 0


def test_calm_random_ties_match_the_formula_reference():
    support, labels, query = saturated_one_shot()
    pi = permutation(4)
    for top_k in (1, 2, 5):
        model = CALM(tau=1e-3, top_k=top_k, tie_break="random", tie_seed=4).fit(support, labels)
        expected = ref.calm(
            support.tolist(), labels.tolist(), query.tolist(), N_CLASSES, tau=1e-3, top_k=top_k, tie_order=pi
        )
        assert torch.allclose(model.weights_, torch.tensor(expected["weights"]), atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_sav_random_ties_match_the_formula_reference_and_the_sweep_core(seed):
    support, labels, query = one_shot(seed)
    sims = episode_similarities(support, labels, query)
    pi = permutation(seed + 10)
    for top_k in (1, 2, 4):
        sav = SAV(top_k=top_k, tie_break="random", tie_seed=seed + 10).fit(support, labels)
        expected = ref.sav(support.tolist(), labels.tolist(), query.tolist(), N_CLASSES, top_k, tie_order=pi)
        assert sav.ranking_.tolist() == expected["ranking"]
        assert sav.predict(query).tolist() == expected["predictions"]
        assert torch.equal(sav_predict_from(sims, top_k, torch.tensor(pi)), sav.predict(query))


def test_ablations_and_probe_share_the_tie_rule():
    support, labels, _ = one_shot()
    for cls, extra in ((TopKSoft, {}), (LinearProbe, {"steps": 2})):
        model = cls(top_k=2, tie_break="random", tie_seed=3, **extra).fit(support, labels)
        assert model.selected_heads_.tolist() == permutation(3)[:2] and model.tied_selections_ == 2
    vote = SAV(top_k=None, tie_break="random", tie_seed=3).fit(support, labels)  # configs/estimator/hard_vote.yaml
    assert vote.ranking_.tolist() == permutation(3) and vote.tied_selections_ == 0
    grw = GRW(tau=1e-3, top_k=2, tie_break="random", tie_seed=3).fit(support, labels)
    assert grw.kept_heads_.nonzero().flatten().tolist() == sorted(permutation(3)[:2])
    assert grw.tied_selections_ == 2
    assert GRW(tau=1e-3, top_k=2).fit(support, labels).kept_heads_.nonzero().flatten().tolist() == [0, 1]


@pytest.mark.parametrize("cls", [CALM, GRW, SAV, TopKSoft, LinearProbe], ids=lambda c: c.__name__)
def test_bad_tie_settings_are_refused(cls):
    with pytest.raises(ConfigError, match="tie_break must be one of index, random"):
        cls(tie_break="lowest")
    for seed in (-1, 1.5, True, "0"):
        with pytest.raises(ConfigError, match="tie_seed must be a non-negative integer"):
            cls(tie_seed=seed)
    support, labels, _ = one_shot()
    with pytest.raises(ConfigError, match="tie_seed must be a non-negative integer"):
        cls(tie_break="random", **({"steps": 1} if cls is LinearProbe else {})).fit(support, labels, tie_seed=-3)
