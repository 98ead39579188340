"""A named reliability set V (the authors' val file): CALM's reliabilities on V with prototypes from S,
checked against docs/design/formulas.md written out by hand (tests/formula_reference.py)."""

from __future__ import annotations

import pytest
import torch

from calm.errors import ConfigError
from calm.methods import CALM, GRW, SAV
from calm.methods.base import fit_estimator
from calm.methods.prototypes import ReliabilitySet
from tests import formula_reference as ref

# two classes, two heads, 2-d features. On S both heads are perfect, so with V = S they weigh the same;
# on V head 0 gets every clip wrong (clamped margin 0) and head 1 every clip right.
SUPPORT = [
    [[1.0, 0.0], [1.0, 0.0]],  # class 0
    [[0.0, 1.0], [0.0, 1.0]],
]  # class 1
SUPPORT_LABELS = [0, 1]
VAL = [
    [[0.2, 1.0], [1.0, 0.1]],  # class 0: head 0 says 1 (wrong), head 1 says 0
    [[1.0, 0.2], [0.1, 1.0]],
]  # class 1: head 0 says 0 (wrong), head 1 says 1
VAL_LABELS = [0, 1]
# head 0 is sure of class 0; head 1 leans to class 1 (cosines 0.6 and 0.8)
QUERY = [[[1.0, 0.0], [0.6, 0.8]]]


def tensors():
    return torch.tensor(SUPPORT), torch.tensor(SUPPORT_LABELS), torch.tensor(VAL), torch.tensor(VAL_LABELS)


def test_reliabilities_on_val_change_the_prediction_as_the_formula_says():
    support, labels, val, val_labels = tensors()
    query = torch.tensor(QUERY)
    on_support = CALM().fit(support, labels)
    on_val = CALM().fit(support, labels, reliability_set=ReliabilitySet(val, val_labels))
    by_hand_s = ref.calm(SUPPORT, SUPPORT_LABELS, QUERY, 2)
    by_hand_v = ref.calm(SUPPORT, SUPPORT_LABELS, QUERY, 2, named=(VAL, VAL_LABELS))
    # the intended case: V = S weighs both heads alike and follows head 0; V follows head 1
    assert by_hand_s["predictions"] == [0] and by_hand_v["predictions"] == [1]
    assert by_hand_v["reliability"][0] == [0.0, 0.0] and min(by_hand_v["reliability"][1]) > 0.5
    for model, expected in ((on_support, by_hand_s), (on_val, by_hand_v)):
        assert torch.allclose(model.reliability_, torch.tensor(expected["reliability"]), atol=1e-6)
        assert torch.allclose(model.weights_, torch.tensor(expected["weights"]), atol=1e-6)
        assert torch.allclose(model.predict_scores(query), torch.tensor(expected["scores"]), atol=1e-6)
        assert model.predict(query).tolist() == expected["predictions"]
    # prediction still uses the prototypes of S alone
    assert torch.equal(on_val.prototypes_, on_support.prototypes_)


def test_val_equal_to_support_is_the_default_bit_for_bit():
    support, labels, _, _ = tensors()
    default = CALM(top_k=1).fit(support, labels)
    named = CALM(top_k=1).fit(support, labels, reliability_set=(support, labels))
    assert torch.equal(default.weights_, named.weights_) and torch.equal(default.reliability_, named.reliability_)


def test_a_class_missing_from_val_is_refused_by_name():
    support, labels, val, _ = tensors()
    with pytest.raises(ConfigError, match=r"class\(es\) \[1\] have no clip in the reliability set"):
        CALM().fit(support, labels, reliability_set=(val, torch.tensor([0, 0])))
    with pytest.raises(ConfigError, match="outside the support's classes"):
        CALM().fit(support, labels, reliability_set=(val, torch.tensor([0, 2])))


def test_val_needs_the_support_split():
    support, labels, val, val_labels = tensors()
    with pytest.raises(ConfigError, match="reliability_split=support"):
        CALM(reliability_split="leave_one_out").fit(support, labels, reliability_set=(val, val_labels))


def test_grw_measures_on_val_and_sav_ranks_on_the_support_set():
    support, labels, val, val_labels = tensors()
    grw = fit_estimator(GRW(), support, labels, reliability_set=ReliabilitySet(val, val_labels))
    assert grw.reliability_[0] == 0.0 and grw.reliability_[1] > 0.5  # head 0 wrong on V, head 1 right
    plain, given = (
        SAV(top_k=1).fit(support, labels),
        fit_estimator(SAV(top_k=1), support, labels, reliability_set=ReliabilitySet(val, val_labels)),
    )
    assert torch.equal(plain.head_scores_, given.head_scores_)  # the authors' SAV scores heads on the train file


def test_bf16_arithmetic_changes_a_prediction_that_float32_makes():
    """The query's second feature, 1.001, lies within half a bf16 step (2^-8) of 1, so in bf16 the query
    is (1, 1): equal cosines, equal posteriors, and the tie goes to class 0; in float32 class 1 is closer."""
    support, labels = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]]), torch.tensor([0, 1])
    query = torch.tensor([[[1.0, 1.001]]])
    exact = CALM().fit(support, labels)
    low = CALM(arithmetic_dtype="bfloat16").fit(support, labels)
    assert exact.predict(query).tolist() == [1]
    scores = low.predict_scores(query)
    assert scores.dtype == torch.float32 and scores[0, 0] == scores[0, 1] == 0.5  # cast after the bf16 softmax
    assert low.predict(query).tolist() == [0]
    assert low.prototypes_.dtype == torch.bfloat16


def test_bf16_prototypes_sum_one_clip_at_a_time():
    """Class 0's clips (1, 0), (2^-8, 0), (2^-8, 0), (0, 1): a running bf16 sum of the first coordinate
    stays at 1 (1 + 2^-8 is a tie between 1 and 1 + 2^-7 and rounds to even, twice), so the prototype
    is (1, 1)/4 -> (0.7071, 0.7071) and a query (1, 1.01) sits at equal cosine; summed exactly, the
    first coordinate is 1.0078 and class 0's prototype leans to the first axis."""
    step = 2.0**-8
    support = torch.tensor([[[1.0, 0.0]], [[step, 0.0]], [[step, 0.0]], [[0.0, 1.0]], [[0.0, 1.0]]])
    labels = torch.tensor([0, 0, 0, 0, 1])
    low = CALM(arithmetic_dtype="bfloat16").fit(support, labels)
    assert low.prototypes_[0, 0, 0] == low.prototypes_[0, 0, 1]
    exact = CALM().fit(support, labels)
    assert exact.prototypes_[0, 0, 0] > exact.prototypes_[0, 0, 1]


def test_an_unknown_dtype_is_refused():
    with pytest.raises(ConfigError, match="arithmetic_dtype"):
        CALM(arithmetic_dtype="float64")


def random_case():
    generator = torch.Generator().manual_seed(3)
    support = torch.randn(9, 6, 4, generator=generator)
    return support, torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2]), torch.randn(5, 6, 4, generator=generator)


@pytest.mark.parametrize("head_choice", ["random_heads", "random"])
def test_random_heads_are_the_seeded_draw_weighted_as_calm_weights(head_choice):
    from calm.storage.digests import seeded_int

    support, labels, query = random_case()
    model = CALM(top_k=2, head_choice=head_choice, head_seed=7).fit(support, labels, tie_seed=11)
    reliable = CALM(top_k=2).fit(support, labels)
    seed = seeded_int("calm.random_heads.v1", 7, 11)  # (head_seed, the episode's seed)
    assert model.head_seed_ == seed
    drawn = torch.rand((6, 3), generator=torch.Generator().manual_seed(seed))
    r = reliable.reliability_
    assert torch.equal(model.reliability_, r)  # measured as CALM does; only the choice of heads differs
    scores = drawn if head_choice == "random" else r
    for c in range(3):
        kept = sorted(torch.topk(drawn[:, c], 2).indices.tolist())
        assert sorted(model.weights_[:, c].nonzero().flatten().tolist()) == kept
        raw = {j: (max(float(scores[j, c]), 0.0) + ref.EPSILON) ** 2 for j in kept}  # power weights, tau_w 0.5
        for j in kept:
            assert abs(float(model.weights_[j, c]) - raw[j] / sum(raw.values())) < 1e-6
    assert not torch.equal(model.weights_, reliable.weights_)
    again = CALM(top_k=2, head_choice=head_choice, head_seed=7).fit(support, labels, tie_seed=11)
    other = CALM(top_k=2, head_choice=head_choice, head_seed=7).fit(support, labels, tie_seed=12)
    assert torch.equal(again.weights_, model.weights_) and not torch.equal(other.weights_, model.weights_)
    assert torch.equal(model.predict_scores(query), again.predict_scores(query))


def test_random_heads_over_every_head_is_calm():
    support, labels, query = random_case()
    model = CALM(head_choice="random_heads").fit(support, labels, tie_seed=1)
    assert torch.equal(model.predict_scores(query), CALM().fit(support, labels).predict_scores(query))


def test_evaluate_dtype_model_sets_calm_to_the_backbones_activation_dtype():
    from calm.run.job import apply_evaluation_dtype

    for precision, expected in (("bf16-true", "bfloat16"), ("16-mixed", "float16"), ("32-true", "float32")):
        methods = {"calm": CALM(), "sav": SAV()}
        apply_evaluation_dtype(methods, "model", precision)
        assert methods["calm"].arithmetic_dtype == expected and not hasattr(methods["sav"], "arithmetic_dtype")
    untouched = {"calm": CALM()}
    apply_evaluation_dtype(untouched, "float32", "bf16-true")
    assert untouched["calm"].arithmetic_dtype == "float32"
