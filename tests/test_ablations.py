"""Ablation estimators (docs/design/formulas.md): per-head loop references, hand-worked cases, invariances."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from calm.config.authors_modes import register_authors_resolver
from calm.errors import ConfigError
from calm.methods import (
    CALM,
    GRW,
    SAV,
    Concat,
    ConfidenceWeighted,
    LinearProbe,
    TopKSoft,
    UniformSoft,
)
from calm.methods.base import Estimator, build_estimator
from tests.cli import compose_config

TAU = 0.07


@cache
def _hard_vote_spec() -> dict:
    """configs/estimator/hard_vote.yaml as method=ablations composes it (clean modes), resolved."""
    register_authors_resolver()
    cfg = compose_config(["backbone=whisper_tiny", "method=ablations"], Path("unused"))
    return OmegaConf.to_container(cfg.method.estimators.hard_vote, resolve=True)


def hard_vote(**settings) -> Estimator:
    """The hard-vote ablation as the job builds it: a YAML of SAV, no class of its own."""
    return build_estimator({**_hard_vote_spec(), **settings})


def episode(
    seed: int = 0, n_classes: int = 4, shots: int = 3, n_heads: int = 7, head_dim: int = 5, queries: int = 11
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_classes, n_heads, head_dim, generator=g)
    labels = torch.arange(n_classes).repeat_interleave(shots)
    support = centres[labels] + 1.5 * torch.randn(len(labels), n_heads, head_dim, generator=g)
    query = centres[torch.randint(n_classes, (queries,), generator=g)] + 1.5 * torch.randn(
        queries, n_heads, head_dim, generator=g
    )
    return support, labels, query


# ---- literal per-head loop references (float64) ------------------------------------------------


def unit(v: torch.Tensor) -> torch.Tensor:
    return v / max(float(v.norm()), 1e-8)


def ref_cosines(support, labels, query, j):
    """(m, C) cosines of head j."""
    n_classes = int(labels.max()) + 1
    protos = [unit(support[labels == c, j].double().mean(0)) for c in range(n_classes)]
    return torch.tensor([[float(unit(q[j].double()) @ p) for p in protos] for q in query], dtype=torch.float64)


def ref_posteriors(support, labels, query, j, tau=TAU):
    return torch.softmax(ref_cosines(support, labels, query, j) / tau, dim=1)


def ref_grw(support, labels, query, tau=TAU, tau_w=0.5, top_k=None):
    n_heads = support.shape[1]
    r = []
    for j in range(n_heads):
        p = ref_posteriors(support, labels, support, j, tau)
        margins = []
        for i, y in enumerate(labels.tolist()):
            other = max(float(p[i, c]) for c in range(p.shape[1]) if c != y)
            margins.append(max(0.0, float(p[i, y]) - other))
        r.append(sum(margins) / len(margins))
    order = sorted(range(n_heads), key=lambda j: (-r[j], j))
    kept = order if not top_k or top_k >= n_heads else order[:top_k]
    z = torch.tensor([r[j] / tau_w for j in kept], dtype=torch.float64)
    w = torch.softmax(z, 0)
    scores = sum(w[i] * ref_posteriors(support, labels, query, j, tau) for i, j in enumerate(kept))
    return scores, torch.tensor(r, dtype=torch.float64), sorted(kept)


def ref_concat(support, labels, query):
    flat_s, flat_q = support.reshape(len(support), 1, -1), query.reshape(len(query), 1, -1)
    return ref_cosines(flat_s, labels, flat_q, 0)


def ref_uniform(support, labels, query, tau=TAU):
    n_heads = support.shape[1]
    return sum(ref_posteriors(support, labels, query, j, tau) for j in range(n_heads)) / n_heads


def ref_confidence(support, labels, query, tau=TAU):
    posts = [ref_posteriors(support, labels, query, j, tau) for j in range(support.shape[1])]
    scores = torch.zeros_like(posts[0])
    for i in range(len(query)):
        conf = [float(p[i].max()) for p in posts]
        for j, p in enumerate(posts):
            scores[i] += conf[j] / sum(conf) * p[i]
    return scores


def ref_sav_ranking(support, labels):
    scores = []
    for j in range(support.shape[1]):
        cos = ref_cosines(support, labels, support, j)
        scores.append(sum(int(cos[i].argmax()) == y for i, y in enumerate(labels.tolist())))
    return sorted(range(support.shape[1]), key=lambda j: (-scores[j], j))


def ref_topk(support, labels, query, tau=TAU, top_k=3):
    heads = ref_sav_ranking(support, labels)[:top_k]
    return sum(ref_posteriors(support, labels, query, j, tau) for j in heads) / len(heads)


def ref_hard_vote(support, labels, query):
    ranking = ref_sav_ranking(support, labels)
    n_classes = int(labels.max()) + 1
    votes = [[int(ref_cosines(support, labels, query, j)[i].argmax()) for j in ranking] for i in range(len(query))]
    counts = torch.tensor([[row.count(c) for c in range(n_classes)] for row in votes], dtype=torch.float32)
    preds = []
    for row in votes:
        best = max(row.count(c) for c in range(n_classes))
        preds.append(next(c for c in row if row.count(c) == best))  # first in rank order among the tied
    return counts, torch.tensor(preds)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("top_k", [None, 3, 7, 50])
def test_grw_matches_per_head_loop(seed: int, top_k: int | None) -> None:
    support, labels, query = episode(seed)
    est = GRW(top_k=top_k).fit(support, labels)
    expected, r, kept = ref_grw(support, labels, query, top_k=top_k)
    torch.testing.assert_close(est.reliability_.double(), r, atol=1e-5, rtol=0)
    assert est.kept_heads_.nonzero().flatten().tolist() == kept
    assert float(est.weights_.sum()) == pytest.approx(1.0, abs=1e-6)
    assert bool((est.weights_[~est.kept_heads_] == 0).all())
    scores = est.predict_scores(query)
    assert scores.dtype == torch.float32 and scores.shape == (len(query), 4)
    torch.testing.assert_close(scores.double(), expected, atol=1e-5, rtol=0)
    assert torch.equal(est.predict(query), scores.argmax(1))


@pytest.mark.parametrize("seed", [0, 1])
def test_soft_ablations_match_per_head_loops(seed: int) -> None:
    support, labels, query = episode(seed)
    cases = [
        (Concat(), ref_concat(support, labels, query)),
        (UniformSoft(), ref_uniform(support, labels, query)),
        (UniformSoft(tau=0.5), ref_uniform(support, labels, query, tau=0.5)),
        (ConfidenceWeighted(), ref_confidence(support, labels, query)),
        (TopKSoft(top_k=3), ref_topk(support, labels, query, top_k=3)),
        (TopKSoft(top_k=99), ref_topk(support, labels, query, top_k=99)),
    ]
    for est, expected in cases:
        scores = est.fit(support, labels).predict_scores(query)
        assert scores.dtype == torch.float32 and scores.shape == (len(query), 4), type(est).__name__
        torch.testing.assert_close(scores.double(), expected, atol=1e-5, rtol=0, msg=type(est).__name__)
        assert torch.equal(est.predict(query), scores.argmax(1))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_hard_vote_matches_per_head_loop_and_sav_with_all_heads(seed: int) -> None:
    support, labels, query = episode(seed, n_heads=6, queries=30)
    est = hard_vote().fit(support, labels)
    assert type(est) is SAV and est.top_k is None
    counts, preds = ref_hard_vote(support, labels, query)
    assert est.ranking_.tolist() == ref_sav_ranking(support, labels)
    assert torch.equal(est.predict_scores(query), counts)
    assert torch.equal(est.predict(query), preds)
    sav = SAV(top_k=6).fit(support, labels)
    assert torch.equal(est.predict(query), sav.predict(query))
    assert torch.equal(est.predict_scores(query), sav.predict_scores(query))


def test_topk_soft_selects_the_sav_heads() -> None:
    support, labels, _ = episode(5)
    est, sav = TopKSoft(top_k=4).fit(support, labels), SAV(top_k=4).fit(support, labels)
    assert torch.equal(est.selected_heads_, sav.selected_heads_)
    assert torch.equal(est.head_scores_, sav.head_scores_)


def test_grw_weights_on_a_two_head_case() -> None:
    # head 0 separates the classes perfectly; head 1 puts both classes on the same direction
    support = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [1.0, 0.0]]])
    labels = torch.tensor([0, 1])
    est = GRW(tau=0.07, tau_w=0.5).fit(support, labels)
    margin = torch.tanh(torch.tensor(0.5 / 0.07))  # p - (1 - p) with p = sigmoid(1/0.07)
    torch.testing.assert_close(est.reliability_, torch.stack([margin, torch.tensor(0.0)]))
    w0 = torch.sigmoid(margin / 0.5)
    torch.testing.assert_close(est.weights_, torch.stack([w0, 1 - w0]))
    assert GRW(top_k=1).fit(support, labels).weights_.tolist() == [1.0, 0.0]
    # the tie (both heads useless) goes to the lower index under top_k
    flat = torch.ones(2, 2, 2)
    tied = GRW(top_k=1).fit(flat, labels)
    assert tied.kept_heads_.tolist() == [True, False]
    assert tied.weights_.tolist() == [1.0, 0.0]


def test_confidence_weights_by_hand() -> None:
    # two heads, two classes; the query is on class 0's prototype in head 0 and halfway in head 1
    support = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]])
    labels = torch.tensor([0, 1])
    query = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])
    est = ConfidenceWeighted(tau=1.0).fit(support, labels)
    p0 = torch.softmax(torch.tensor([1.0, 0.0]), 0)
    p1 = torch.tensor([0.5, 0.5])
    conf = torch.tensor([p0.max(), 0.5])
    w = conf / conf.sum()
    torch.testing.assert_close(est.query_weights(query), w[:, None])
    torch.testing.assert_close(est.predict_scores(query)[0], w[0] * p0 + w[1] * p1)
    # uniform averaging gives the less confident head more say than confidence weighting does
    uniform = UniformSoft(tau=1.0).fit(support, labels).predict_scores(query)[0]
    assert float(est.predict_scores(query)[0, 0]) > float(uniform[0])


def test_concat_and_hard_vote_by_hand() -> None:
    support = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 1.0], [0.0, 0.0]]])
    labels = torch.tensor([0, 1])
    query = torch.tensor([[[2.0, 0.0], [0.0, 0.0]]])
    torch.testing.assert_close(Concat().fit(support, labels).predict_scores(query), torch.tensor([[1.0, 0.0]]))
    # three heads: two vote class 1, the best-ranked votes class 0 -> majority wins
    support3 = torch.tensor([[[1.0, 0.0]] * 3, [[0.0, 1.0]] * 3])
    query3 = torch.tensor([[[1.0, 0.1], [0.1, 1.0], [0.1, 1.0]]])
    est = hard_vote().fit(support3, labels)
    assert est.predict_scores(query3).tolist() == [[1.0, 2.0]]
    assert est.predict(query3).tolist() == [1]
    # two heads split 1-1: the tie goes to the class of the highest-ranked head (head 0, all tie at 2)
    support2, query2 = support3[:, :2], query3[:, :2]
    assert hard_vote().fit(support2, labels).predict(query2).tolist() == [0]


ESTIMATORS = [
    lambda: GRW(top_k=3),
    lambda: GRW(),
    Concat,
    UniformSoft,
    ConfidenceWeighted,
    lambda: TopKSoft(top_k=3),
    hard_vote,
]


@pytest.mark.parametrize("make", ESTIMATORS)
def test_relabelling_classes_permutes_scores(make) -> None:
    support, labels, query = episode(3)
    perm = torch.tensor([2, 0, 3, 1])  # class c becomes perm[c]
    scores = make().fit(support, labels).predict_scores(query)
    relabelled = make().fit(support, perm[labels]).predict_scores(query)
    torch.testing.assert_close(relabelled[:, perm], scores, atol=1e-6, rtol=0)


@pytest.mark.parametrize("make", [m for m in ESTIMATORS if m is not Concat])
def test_scaling_a_heads_features_changes_nothing(make) -> None:
    support, labels, query = episode(4)
    scale = torch.ones(1, support.shape[1], 1)
    scale[0, 2], scale[0, 5] = 37.0, 0.01
    est = make().fit(support, labels)
    scaled = make().fit(support * scale, labels)
    torch.testing.assert_close(scaled.predict_scores(query * scale), est.predict_scores(query), atol=1e-5, rtol=0)
    assert torch.equal(scaled.predict(query * scale), est.predict(query))


def test_concat_is_not_head_scale_invariant() -> None:
    support, labels, query = episode(4)
    scale = torch.ones(1, support.shape[1], 1)
    scale[0, 2] = 37.0
    base = Concat().fit(support, labels).predict_scores(query)
    assert not torch.allclose(Concat().fit(support * scale, labels).predict_scores(query * scale), base)


@pytest.mark.parametrize("make", ESTIMATORS)
def test_api_errors_and_numpy_input(make) -> None:
    support, labels, query = episode(6)
    est = make()
    with pytest.raises(ConfigError, match="before it was fitted"):
        est.predict(query)
    assert est.fit(support.numpy().astype("float16"), labels.numpy()) is est
    assert est.predict(query.numpy()).dtype == torch.long
    assert est.predict_scores(query).shape == (len(query), 4)
    with pytest.raises(ConfigError, match="expected"):
        est.predict(query[:, :3])
    with pytest.raises(ConfigError):
        est.fit(support, labels + 10)


@pytest.mark.parametrize(
    "bad",
    [
        lambda: GRW(tau=0),
        lambda: GRW(tau_w=-1),
        lambda: GRW(top_k=-1),
        lambda: GRW(top_k=0),
        lambda: GRW(top_k=2.5),
        lambda: UniformSoft(tau=0),
        lambda: ConfidenceWeighted(tau="x"),
        lambda: TopKSoft(top_k=0),
        lambda: TopKSoft(top_k=True),
        lambda: TopKSoft(tau=-1),
    ],
)
def test_bad_settings_raise_config_error(bad) -> None:
    with pytest.raises(ConfigError):
        bad()


def test_ablations_method_config_instantiates_all_estimators(tmp_path: Path) -> None:
    cfg = compose_config(["backbone=whisper_tiny", "method=ablations"], tmp_path)
    assert cfg.method.baseline == "sav"
    built = {name: instantiate(spec) for name, spec in cfg.method.estimators.items()}
    types = {name: type(est) for name, est in built.items()}
    assert types == {
        "sav": SAV,
        "calm": CALM,
        "grw": GRW,
        "concat": Concat,
        "uniform_soft": UniformSoft,
        "confidence_weighted": ConfidenceWeighted,
        "topk_soft": TopKSoft,
        "hard_vote": SAV,
        "linear_probe": LinearProbe,
    }
    assert (built["grw"].tau, built["grw"].tau_w, built["grw"].top_k) == (0.07, 0.5, None)
    assert built["topk_soft"].top_k == 20
    assert built["hard_vote"].top_k is None and built["sav"].top_k == 20
    support, labels, query = episode(7)
    for est in built.values():
        assert est.fit(support, labels).predict(query).shape == (len(query),)
