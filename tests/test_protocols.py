"""Protocols: reproducible, disjoint, pool-respecting episodes; clear errors; built from their configs."""

from __future__ import annotations

import numpy as np
import pytest

from calm.errors import ProtocolError
from calm.protocols import (
    Episode,
    EpisodicProtocol,
    MultiLabelPools,
    PaperProtocol,
    Pools,
    Protocol,
    derive_seed,
    multilabel_targets,
)

NAMES = ["dog", "rain", "siren", "clock_tick", "crow"]


def make_table(
    n_support: int = 10, n_query: int = 6, n_classes: int = 5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Disjoint pools, rows shuffled so class and pool are not contiguous; plus unused rows."""
    labels, support, query = [], [], []
    for c in range(n_classes):
        for pool_s, pool_q, n in (
            (True, False, n_support),
            (False, True, n_query),
            (False, False, 3),
        ):
            labels += [c] * n
            support += [pool_s] * n
            query += [pool_q] * n
    order = np.random.default_rng(seed).permutation(len(labels))
    return np.array(labels)[order], np.array(support)[order], np.array(query)[order]


def protocol(**kw) -> EpisodicProtocol:
    settings = dict(shots=3, queries=4, episodes=8, seed=0, dataset="toy")
    settings.update(kw)
    return EpisodicProtocol(**settings)


def assert_episode_valid(ep: Episode, labels, support_pool, query_pool, shots, queries) -> None:
    assert np.all(np.diff(ep.classes) > 0), "classes sorted ascending, unique"
    assert not set(ep.support) & set(ep.query), "support and query overlap"
    assert len(set(ep.support)) == len(ep.support) and len(set(ep.query)) == len(ep.query)
    assert support_pool[ep.support].all(), "support drawn outside the support pool"
    assert query_pool[ep.query].all(), "query drawn outside the query pool"
    # local labels are positions in `classes` and agree with the original labels
    np.testing.assert_array_equal(ep.classes[ep.support_labels], labels[ep.support])
    np.testing.assert_array_equal(ep.classes[ep.query_labels], labels[ep.query])
    np.testing.assert_array_equal(np.bincount(ep.support_labels, minlength=ep.ways), [shots] * ep.ways)
    np.testing.assert_array_equal(np.bincount(ep.query_labels, minlength=ep.ways), [queries] * ep.ways)


def same(a: Episode, b: Episode) -> bool:
    return all(
        np.array_equal(getattr(a, f), getattr(b, f))
        for f in ("classes", "support", "support_labels", "query", "query_labels")
    ) and (a.index, a.seed) == (b.index, b.seed)


# --- derive_seed ---------------------------------------------------------------------


def test_derive_seed_is_pinned() -> None:
    # regression pin: the value must not change across processes, machines or versions
    assert derive_seed(0, "esc50", 5, 0) == 4692778452239974457


def test_derive_seed_distinct_per_component() -> None:
    base = derive_seed(0, "esc50", 5, 0)
    others = [
        derive_seed(1, "esc50", 5, 0),
        derive_seed(0, "vggsound", 5, 0),
        derive_seed(0, "esc50", 1, 0),
        derive_seed(0, "esc50", 5, 1),
    ]
    assert len({base, *others}) == 5
    assert 0 <= base < 2**63
    assert derive_seed(np.int64(0), "esc50", np.int64(5), 0) == base


# --- episodes ------------------------------------------------------------------------


def test_episodes_valid_in_every_episode() -> None:
    labels, sp, qp = make_table()
    eps = protocol().episodes(Pools.build(labels, sp, qp))
    assert [e.index for e in eps] == list(range(8))
    for ep in eps:
        np.testing.assert_array_equal(ep.classes, np.arange(5))
        assert_episode_valid(ep, labels, sp, qp, shots=3, queries=4)
        assert ep.seed == derive_seed(0, "toy", 3, ep.index)


def test_episodes_reproducible_and_prefix_stable() -> None:
    labels, sp, qp = make_table()
    first = protocol().episodes(Pools.build(labels, sp, qp))
    again = protocol().episodes(Pools.build(labels, sp, qp))
    more = protocol(episodes=12).episodes(Pools.build(labels, sp, qp))
    assert all(same(a, b) for a, b in zip(first, again, strict=True))
    # asking for more episodes (or calling in another order) keeps the earlier ones
    assert all(same(a, b) for a, b in zip(first, more[:8], strict=True))


def test_episodes_differ_across_index_seed_and_dataset() -> None:
    labels, sp, qp = make_table()
    eps = protocol().episodes(Pools.build(labels, sp, qp))
    assert len({tuple(e.support) for e in eps}) == len(eps)
    assert len({tuple(e.query) for e in eps}) == len(eps)
    other_seed = protocol(seed=1).episodes(Pools.build(labels, sp, qp))
    other_data = protocol(dataset="toy2").episodes(Pools.build(labels, sp, qp))
    assert not same(eps[0], other_seed[0])
    assert not same(eps[0], other_data[0])


def test_ways_subset_sampling() -> None:
    labels, sp, qp = make_table()
    eps = protocol(ways=2, episodes=20).episodes(Pools.build(labels, sp, qp))
    for ep in eps:
        assert ep.ways == 2
        assert set(ep.classes) <= set(range(5))
        assert_episode_valid(ep, labels, sp, qp, shots=3, queries=4)
    assert len({tuple(e.classes) for e in eps}) > 1, "ways subset never varies"


def test_ways_equal_to_all_classes_matches_none() -> None:
    labels, sp, qp = make_table()
    a = protocol(ways=None).episodes(Pools.build(labels, sp, qp))
    b = protocol(ways=5).episodes(Pools.build(labels, sp, qp))
    assert all(same(x, y) for x, y in zip(a, b, strict=True))


def test_non_contiguous_class_ids_keep_original_ids() -> None:
    labels, sp, qp = make_table()
    labels = labels * 10 + 7  # ids 7, 17, ..., 47
    for ep in protocol().episodes(Pools.build(labels, sp, qp)):
        np.testing.assert_array_equal(ep.classes, [7, 17, 27, 37, 47])
        assert_episode_valid(ep, labels, sp, qp, shots=3, queries=4)


def test_overlapping_pools_keep_support_and_query_disjoint() -> None:
    # no official split: every clip may be support or query; 7 clips per class
    labels = np.repeat(np.arange(4), 7)
    both = np.ones(len(labels), dtype=bool)
    eps = protocol(shots=5, queries=2, episodes=30).episodes(Pools.build(labels, both, both))
    for ep in eps:
        assert_episode_valid(ep, labels, both, both, shots=5, queries=2)
    with pytest.raises(ProtocolError, match="queries=3"):
        protocol(shots=5, queries=3).validate(Pools.build(labels, both, both))


def test_partially_overlapping_pools_counted_conservatively() -> None:
    # per class: 4 support-only, 2 shared, 2 query-only clips -> query pool 4, of which
    # up to min(shots, 2) may be taken as support
    per_class = [(True, False)] * 4 + [(True, True)] * 2 + [(False, True)] * 2
    labels = np.repeat(np.arange(3), len(per_class))
    sp = np.array([s for _ in range(3) for s, _ in per_class])
    qp = np.array([q for _ in range(3) for _, q in per_class])
    p = protocol(shots=3, queries=2, episodes=40)
    for ep in p.episodes(Pools.build(labels, sp, qp)):
        assert_episode_valid(ep, labels, sp, qp, shots=3, queries=2)
    with pytest.raises(ProtocolError, match="at most 2"):
        protocol(shots=3, queries=3).validate(Pools.build(labels, sp, qp))
    protocol(shots=1, queries=3).validate(Pools.build(labels, sp, qp))  # 4 - min(1, 2) = 3 is enough


def test_rows_outside_both_pools_and_their_classes_are_ignored() -> None:
    labels, sp, qp = make_table(n_classes=3)
    labels = np.concatenate([labels, [9, 9, 9]])  # a class with clips in neither pool
    sp = np.concatenate([sp, [False] * 3])
    qp = np.concatenate([qp, [False] * 3])
    for ep in protocol().episodes(Pools.build(labels, sp, qp)):
        np.testing.assert_array_equal(ep.classes, [0, 1, 2])


def test_episode_arrays_are_read_only() -> None:
    labels, sp, qp = make_table()
    ep = protocol(episodes=1).episodes(Pools.build(labels, sp, qp))[0]
    with pytest.raises(ValueError):
        ep.support[0] = 0


# --- validation errors -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"shots": 0}, "shots"),
        ({"queries": 0}, "queries"),
        ({"episodes": 0}, "episodes"),
        ({"ways": 1}, "ways"),
        ({"shots": 2.5}, "shots"),
    ],
)
def test_invalid_settings(kw, match) -> None:
    labels, sp, qp = make_table()
    with pytest.raises(ProtocolError, match=match) as err:
        protocol(**kw).validate(Pools.build(labels, sp, qp))
    assert "How to fix" in str(err.value)


def test_ways_larger_than_class_count() -> None:
    labels, sp, qp = make_table()
    with pytest.raises(ProtocolError, match="ways=6") as err:
        protocol(ways=6).validate(Pools.build(labels, sp, qp))
    assert "at most 5" in err.value.fix


def test_single_class_dataset_is_rejected() -> None:
    labels, sp, qp = make_table(n_classes=1)
    with pytest.raises(ProtocolError, match="at least 2"):
        protocol().validate(Pools.build(labels, sp, qp))


def test_too_few_support_clips_names_classes_counts_and_fix() -> None:
    labels, sp, qp = make_table()
    drop = np.flatnonzero(sp & (labels == 2))[:8]  # 'siren' keeps 2 support clips
    sp[drop] = False
    with pytest.raises(ProtocolError) as err:
        protocol(shots=3).validate(Pools.build(labels, sp, qp, class_names=NAMES))
    msg = str(err.value)
    assert "'siren' (2)" in msg and "shots=3" in msg
    assert "dog" not in err.value.problem
    assert "Lower `shots` to at most 2" in err.value.fix and "add training clips" in err.value.fix
    # episodes() validates first
    with pytest.raises(ProtocolError, match="siren"):
        protocol(shots=3).episodes(Pools.build(labels, sp, qp, class_names=NAMES))


def test_too_few_query_clips_names_classes_counts_and_fix() -> None:
    labels, sp, qp = make_table()
    for c, keep in ((0, 2), (4, 3)):
        qp[np.flatnonzero(qp & (labels == c))[keep:]] = False
    with pytest.raises(ProtocolError) as err:
        protocol(queries=4).validate(Pools.build(labels, sp, qp, class_names=NAMES))
    assert "'dog' (2)" in err.value.problem and "'crow' (3)" in err.value.problem
    assert "queries=4" in err.value.problem
    assert "Lower `queries` to at most 2" in err.value.fix and "add test clips" in err.value.fix


def test_class_without_query_clips() -> None:
    labels, sp, qp = make_table()
    qp[labels == 3] = False
    with pytest.raises(ProtocolError, match="no clips in the query") as err:
        protocol().validate(Pools.build(labels, sp, qp, class_names=NAMES))
    assert "'clock_tick'" in err.value.problem
    assert "Add test clips" in err.value.fix


def test_error_without_class_names_uses_ids() -> None:
    labels, sp, qp = make_table()
    qp[labels == 3] = False
    with pytest.raises(ProtocolError, match="class 3"):
        protocol().validate(Pools.build(labels, sp, qp))


def test_mismatched_masks_are_rejected() -> None:
    labels, sp, qp = make_table()
    with pytest.raises(ProtocolError, match="is_query_pool"):
        Pools.build(labels, sp, qp[:-1])
    with pytest.raises(ProtocolError, match="integer class ids"):
        Pools.build(labels.astype(str), sp, qp)


def test_each_episode_depends_only_on_its_derived_seed(monkeypatch) -> None:
    # with every derived seed forced equal, all episodes must coincide: no shared RNG stream
    import calm.protocols.episodic as episodic

    monkeypatch.setattr(episodic, "derive_seed", lambda seed, dataset, shots, episode: 123)
    labels, sp, qp = make_table()
    eps = protocol(ways=3).episodes(Pools.build(labels, sp, qp))
    assert all(np.array_equal(eps[0].support, ep.support) and np.array_equal(eps[0].query, ep.query) for ep in eps[1:])


def test_shared_pool_exhausted_by_support_suggests_lowering_shots() -> None:
    labels = np.repeat(np.arange(3), 2)
    both = np.ones(len(labels), dtype=bool)
    with pytest.raises(ProtocolError) as err:
        protocol(shots=2, queries=1).validate(Pools.build(labels, both, both))
    assert "Lower `shots`" in err.value.fix


# --- ESC-50: the test fold never reaches a support set --------------------------------


def esc50_table(test_fold: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The official layout's shape: 50 classes x 40 clips, 8 per class in each of 5 folds of 400."""
    labels = np.repeat(np.arange(50), 40)
    folds = np.tile(np.repeat(np.arange(1, 6), 8), 50)
    order = np.random.default_rng(3).permutation(len(labels))
    labels, folds = labels[order], folds[order]
    return labels, folds, folds != test_fold, folds == test_fold


def test_esc50_test_fold_never_in_support_in_any_episode_of_either_protocol() -> None:
    labels, folds, sp, qp = esc50_table()
    assert np.bincount(folds)[1:].tolist() == [400] * 5
    pools = Pools.build(labels, sp, qp)
    runs = EpisodicProtocol(shots=5, queries=8, episodes=25, seed=0, dataset="esc50").episodes(pools)
    runs += PaperProtocol(shots=32, dataset="esc50").episodes(pools)
    for ep in runs:
        assert (folds[ep.support] != 1).all(), f"episode {ep.index}: a test-fold clip in the support set"
        assert (folds[ep.query] == 1).all()
    paper = runs[-1]
    np.testing.assert_array_equal(paper.query, np.flatnonzero(folds == 1))


# --- paper protocol ----------------------------------------------------------------------


def test_paper_protocol_fixed_support_and_whole_query_pool() -> None:
    labels, sp, qp = make_table()
    (ep,) = PaperProtocol(shots=3, dataset="toy").episodes(Pools.build(labels, sp, qp))
    assert ep.index == 0 and ep.seed == derive_seed(42, "toy", 3, 0)
    np.testing.assert_array_equal(ep.classes, np.arange(5))
    np.testing.assert_array_equal(np.bincount(ep.support_labels), [3] * 5)
    assert sp[ep.support].all() and not qp[ep.support].any()
    np.testing.assert_array_equal(ep.classes[ep.support_labels], labels[ep.support])
    np.testing.assert_array_equal(ep.query, np.flatnonzero(qp))  # every test clip, once, in table order
    np.testing.assert_array_equal(ep.classes[ep.query_labels], labels[ep.query])
    assert ep.query_label_sets is None and not ep.multi_label


def test_paper_protocol_is_reproducible_and_seeded() -> None:
    labels, sp, qp = make_table()
    a = PaperProtocol(shots=3, seed=42, dataset="toy").episode(Pools.build(labels, sp, qp))
    b = PaperProtocol(shots=3, dataset="toy").episode(Pools.build(labels, sp, qp))
    assert same(a, b)
    for other in (PaperProtocol(shots=3, seed=7, dataset="toy"), PaperProtocol(shots=3, dataset="toy2")):
        c = other.episode(Pools.build(labels, sp, qp))
        assert not np.array_equal(a.support, c.support)
        np.testing.assert_array_equal(a.query, c.query)


def test_paper_protocol_never_uses_clips_of_both_pools_as_support() -> None:
    labels, sp, qp = make_table()
    shared = np.flatnonzero(qp)[::2]
    sp = sp.copy()
    sp[shared] = True  # some test clips are listed in the training pool too (the reference's mistake)
    ep = PaperProtocol(shots=3, dataset="toy").episode(Pools.build(labels, sp, qp))
    assert not set(ep.support) & set(shared)
    np.testing.assert_array_equal(ep.query, np.flatnonzero(qp))
    with pytest.raises(ProtocolError, match="never used as support") as err:
        PaperProtocol(shots=11).validate(Pools.build(labels, sp, qp, class_names=NAMES))
    assert "'dog' (10)" in err.value.problem


def test_paper_protocol_errors_name_classes_and_fix() -> None:
    labels, sp, qp = make_table()
    sp = sp.copy()
    sp[np.flatnonzero(sp & (labels == 2))[:8]] = False
    with pytest.raises(ProtocolError) as err:
        PaperProtocol(shots=3).episodes(Pools.build(labels, sp, qp, class_names=NAMES))
    assert "'siren' (2)" in err.value.problem and "shots=3" in err.value.problem
    assert "Lower `shots` to at most 2" in err.value.fix
    qp = qp.copy()
    qp[labels == 4] = False
    with pytest.raises(ProtocolError, match="no clips in the query") as err:
        PaperProtocol(shots=1).validate(Pools.build(labels, sp, qp, class_names=NAMES))
    assert "'crow'" in err.value.problem
    for bad in ({"shots": 0}, {"shots": 1, "seed": -1}):
        with pytest.raises(ProtocolError, match="must be"):
            PaperProtocol(**bad).validate(Pools.build(labels, sp, qp))


# --- multi-label -------------------------------------------------------------------------


def multilabel_table(seed: int = 0) -> tuple[np.ndarray, list[tuple[int, ...]], np.ndarray, np.ndarray]:
    """6 classes; each clip holds 1-3 labels; class 5 is rare and always co-occurs with others."""
    rng = np.random.default_rng(seed)
    sets = []
    for i in range(240):
        first = i % 5
        extra = rng.choice([c for c in range(5) if c != first], size=rng.integers(0, 3), replace=False)
        labels = (first, *extra.tolist())
        if i % 12 == 0:
            labels = (*labels, 5)
        sets.append(labels)
    labels = np.array([s[0] for s in sets])
    sp = np.arange(240) < 160
    return labels, sets, sp, ~sp


def test_multilabel_episodes_draw_support_per_class_and_keep_label_sets() -> None:
    labels, sets, sp, qp = multilabel_table()
    eps = protocol(shots=2, queries=3, episodes=6).episodes(Pools.build(labels, sp, qp, label_sets=sets))
    for ep in eps:
        np.testing.assert_array_equal(ep.classes, np.arange(6))
        assert len(set(ep.support)) == len(ep.support) == 12
        assert len(set(ep.query)) == len(ep.query) == 18
        assert not set(ep.support) & set(ep.query)
        assert sp[ep.support].all() and qp[ep.query].all()
        for row, y in zip(ep.support, ep.support_labels, strict=True):
            assert ep.classes[y] in sets[row], "support clip drawn for a class it does not hold"
        for row, y, got in zip(ep.query, ep.query_labels, ep.query_label_sets, strict=True):
            assert y in got and set(ep.classes[list(got)]) == set(sets[row])
        targets = multilabel_targets(ep)
        assert targets.shape == (18, 6) and targets[np.arange(18), ep.query_labels].all()
        assert targets.sum() == sum(len(s) for s in ep.query_label_sets)
        support_targets = multilabel_targets(ep, "support")
        assert support_targets[np.arange(12), ep.support_labels].all()
        assert [set(ep.classes[np.flatnonzero(t)]) for t in support_targets] == [set(sets[r]) for r in ep.support]
    again = protocol(shots=2, queries=3, episodes=6).episodes(Pools.build(labels, sp, qp, label_sets=sets))
    assert all(same(a, b) and a.query_label_sets == b.query_label_sets for a, b in zip(eps, again, strict=True))


def test_multilabel_ways_restrict_label_sets_to_the_episode() -> None:
    labels, sets, sp, qp = multilabel_table()
    pools = Pools.build(labels, sp, qp, label_sets=sets)
    for ep in protocol(shots=2, queries=2, episodes=10, ways=3).episodes(pools):
        assert ep.ways == 3
        for row, got in zip(ep.query, ep.query_label_sets, strict=True):
            assert set(ep.classes[list(got)]) == set(sets[row]) & set(ep.classes)


def test_multilabel_paper_split_scores_every_test_clip_with_all_its_labels() -> None:
    labels, sets, sp, qp = multilabel_table()
    ep = PaperProtocol(shots=3, dataset="audioset").episode(Pools.build(labels, sp, qp, label_sets=sets))
    np.testing.assert_array_equal(ep.query, np.flatnonzero(qp))
    assert [set(ep.classes[list(s)]) for s in ep.query_label_sets] == [set(sets[r]) for r in ep.query]
    np.testing.assert_array_equal(ep.classes[ep.query_labels], labels[ep.query])
    assert len(set(ep.support)) == 18 and sp[ep.support].all()
    assert [set(ep.classes[list(s)]) for s in ep.support_label_sets] == [set(sets[r]) for r in ep.support]


def test_single_label_episode_targets_are_one_hot() -> None:
    labels, sp, qp = make_table()
    ep = protocol(episodes=1).episodes(Pools.build(labels, sp, qp))[0]
    np.testing.assert_array_equal(multilabel_targets(ep).argmax(1), ep.query_labels)
    assert multilabel_targets(ep).sum() == len(ep.query)
    np.testing.assert_array_equal(multilabel_targets(ep, "support").argmax(1), ep.support_labels)


def test_multilabel_draw_that_runs_short_names_the_class() -> None:
    # classes 0 and 1 share their only two support clips: each counts 2, but they cannot both get 2
    sets = [(0, 1), (0, 1), (0,), (1,), (0,), (1,)]
    labels = np.array([s[0] for s in sets])
    sp = np.array([True, True, False, False, False, False])
    with pytest.raises(ProtocolError, match="left once the clips drawn") as err:
        PaperProtocol(shots=2).episode(Pools.build(labels, sp, ~sp, ["speech", "music"], label_sets=sets))
    assert "'speech'" in err.value.problem or "'music'" in err.value.problem
    PaperProtocol(shots=1).episode(Pools.build(labels, sp, ~sp, label_sets=sets))


def test_label_sets_must_match_the_table() -> None:
    labels, sets, sp, qp = multilabel_table()
    with pytest.raises(ProtocolError, match="entries"):
        Pools.build(labels, sp, qp, label_sets=sets[:-1])
    bad = list(sets)
    bad[0] = (4,) if labels[0] != 4 else (3,)
    with pytest.raises(ProtocolError, match="not among"):
        Pools.build(labels, sp, qp, label_sets=bad)
    with pytest.raises(ProtocolError, match="integer class ids"):
        Pools.build(labels, sp, qp, label_sets=[("dog",)] * len(labels))


# --- pools: built once per table, single- or multi-label by kind ---------------------------


def clip_table(labels: np.ndarray, sp: np.ndarray, qp: np.ndarray, sets=None, n_classes: int = 6):
    from pathlib import Path

    from calm.data.table import QUERY_SPLIT, SUPPORT_SPLIT, Clip, ClipTable

    clips = tuple(
        Clip(
            id=f"c{i}",
            audio_path=Path(f"c{i}.wav"),
            label=int(y),
            split=SUPPORT_SPLIT if s else QUERY_SPLIT if q else "unused",
            labels=tuple(sets[i]) if sets is not None else (),
        )
        for i, (y, s, q) in enumerate(zip(labels, sp, qp, strict=True))
    )
    return ClipTable("toy", clips, tuple(f"class_{c}" for c in range(n_classes)))


def test_pools_kind_follows_the_label_sets() -> None:
    labels, sp, qp = make_table()
    single = Pools.build(labels, sp, qp, NAMES)
    assert type(single) is Pools and not single.multi_label
    np.testing.assert_array_equal(single.counts(single.support), [10] * 5)
    labels, sets, sp, qp = multilabel_table()
    multi = Pools.build(labels, sp, qp, label_sets=sets)
    assert isinstance(multi, MultiLabelPools) and multi.multi_label
    # a clip counts for every class it holds
    np.testing.assert_array_equal(
        multi.counts(multi.support), [sum(c in sets[r] for r in range(160)) for c in range(6)]
    )


def test_pools_from_table_match_the_arrays() -> None:
    labels, sp, qp = make_table()
    from_table = Pools.from_table(clip_table(labels, sp, qp, n_classes=5))
    assert type(from_table) is Pools and from_table.class_names == tuple(f"class_{c}" for c in range(5))
    for field in ("labels", "support", "query", "classes"):
        np.testing.assert_array_equal(getattr(from_table, field), getattr(Pools.build(labels, sp, qp), field))
    labels, sets, sp, qp = multilabel_table()
    pools = Pools.from_table(clip_table(labels, sp, qp, sets))
    assert isinstance(pools, MultiLabelPools) and pools.sets == tuple(frozenset(s) for s in sets)
    a = protocol(shots=2, queries=2).episodes(pools)
    b = protocol(shots=2, queries=2).episodes(Pools.build(labels, sp, qp, label_sets=sets))
    assert all(same(x, y) and x.query_label_sets == y.query_label_sets for x, y in zip(a, b, strict=True))


def test_one_pools_object_serves_every_protocol_and_call() -> None:
    labels, sp, qp = make_table()
    pools = Pools.build(labels, sp, qp)
    first = protocol(ways=3).episodes(pools)
    PaperProtocol(shots=3, dataset="toy").episodes(pools)
    protocol(shots=1, queries=1).episodes(pools)
    again = protocol(ways=3).episodes(pools)
    fresh = protocol(ways=3).episodes(Pools.build(labels, sp, qp))
    assert all(same(a, b) and same(a, c) for a, b, c in zip(first, again, fresh, strict=True))


# --- protocols from their config group -------------------------------------------------------


def test_protocol_configs_build_from_the_top_level_settings(tmp_path) -> None:
    from calm.config.builder import build
    from tests.cli import compose_config

    cfg = compose_config(
        ["protocol=episodic", "dataset=esc50", "shots=2", "ways=3", "episodes=4", "queries=1", "seed=9"], tmp_path
    )
    episodic = build(cfg.protocol, "protocol", base=Protocol, named=True)
    assert isinstance(episodic, EpisodicProtocol) and isinstance(episodic, Protocol)
    assert (
        episodic.name,
        episodic.shots,
        episodic.ways,
        episodic.n_episodes,
        episodic.queries,
        episodic.seed,
        episodic.dataset,
    ) == ("episodic", 2, 3, 4, 1, 9, "esc50")
    cfg = compose_config(["protocol=paper", "dataset=esc50", "shots=4", "protocol.seed=7"], tmp_path)
    paper = build(cfg.protocol, "protocol", base=Protocol, named=True)
    assert isinstance(paper, PaperProtocol)
    assert (paper.name, paper.shots, paper.seed, paper.dataset, paper.folds, paper.cv_seed) == (
        "paper",
        4,
        7,
        "esc50",
        5,
        0,
    )
    assert (paper.support_draw, paper.at_most, paper.reliability) == ("random", False, "support")


def test_pipeline_builds_the_protocol_its_config_names(tmp_path) -> None:
    from calm.errors import ConfigError
    from calm.run.job import build_protocol
    from tests.cli import compose_config

    cfg = compose_config(["protocol=paper", "shots=3"], tmp_path)
    assert isinstance(build_protocol(cfg), PaperProtocol)
    cfg.protocol._target_ = "calm.protocols.Pools"
    with pytest.raises(ConfigError, match="not a calm.protocols.base.Protocol"):
        build_protocol(cfg)
