"""The paper grid streams splits larger than its memory budget: results equal the resident path's, and
every split (support, test, reliability set V) is read block by block instead of being held. The
generic sweep (any other estimator) scores its rows in chunks under the same budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import calm.methods.ablations as ablations
import calm.methods.base as base
from calm.methods import GRW, SAV
from calm.methods.calm_core import calm_posteriors, clip_reliability
from calm.methods.prototypes import cosine_similarities, prototype_dots
from calm.methods.sav_core import sav_head_scores
from calm.selection import CalmGrid, MethodGrid, paper_grid_report, paper_sweep_report
from calm.selection.grid import SplitScorer, rows_within
from tests.test_grid import split

GRID = CalmGrid(
    reliability=("margin_clamped", "brier"), tau=(0.05, 1.0), tau_w=(0.5, 2.0), top_k=(3, None), shrinkage=(0.0, 0.5)
)
# (2 * 5 classes + 1) * 24 heads * 4 bytes per resident row: 7 rows per block
TINY_BUDGET = 7 * 11 * 24 * 4


class CountingRows:
    """A tensor read a slice at a time, as `calm.cache.RowView` is; counts the rows read."""

    def __init__(self, rows: torch.Tensor) -> None:
        self.data, self.shape, self.read = rows.half(), tuple(rows.shape), 0

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, part):
        out = self.data[part].float()
        self.read += out.shape[0]
        return out


@pytest.fixture(scope="module")
def data():
    support, labels, query, query_labels = split(shots=6, queries=40, seed=3)
    val, _, _, val_labels = split(shots=5, queries=1, seed=4)
    return support, labels, query, query_labels, val, torch.arange(5).repeat_interleave(5)


def report(data, budget, device="cpu", **extra):
    support, labels, query, query_labels, val, val_labels = data
    rows = {name: CountingRows(x) for name, x in (("support", support), ("query", query), ("val", val))}
    out = paper_grid_report(
        rows["support"],
        labels,
        rows["query"],
        query_labels,
        GRID,
        n_classes=5,
        folds=3,
        reliability=(rows["val"], val_labels),
        memory_budget=budget,
        device=device,
        **extra,
    )
    return out, rows


def same(a, b) -> None:
    np.testing.assert_allclose(a.test.accuracy, b.test.accuracy, atol=1e-9)
    np.testing.assert_allclose(a.test.macro_f1, b.test.macro_f1, atol=1e-9)
    for key in ("cv_choice", "oracle", "val_choice"):
        assert getattr(a, key)["setting"] == getattr(b, key)["setting"], key
        assert getattr(a, key)["test"] == pytest.approx(getattr(b, key)["test"]), key


def test_streamed_blocks_equal_the_resident_grid_and_reread_the_rows(data) -> None:
    whole, whole_rows = report(data, 2**30)
    streamed, streamed_rows = report(data, TINY_BUDGET)
    assert whole.test.accuracy.min() < whole.test.accuracy.max(), "the grid does not discriminate"
    same(whole, streamed)
    # held whole, the test rows are read once; streamed, V once for the reliabilities and again when scored
    assert whole_rows["query"].read == 40
    assert streamed_rows["val"].read > whole_rows["val"].read


def test_scorer_holds_one_block_and_reliabilities_match(data) -> None:
    support, labels, query, _, val, val_labels = data
    whole = SplitScorer(support, labels, query, 5, reliability=(val, val_labels))
    small = SplitScorer(support, labels, query, 5, reliability=(val, val_labels), memory_budget=TINY_BUDGET)
    assert len(small.block_slices("query")) == 6 and len(whole.block_slices("query")) == 1
    for tau in (0.05, 1.0):
        a, b = whole.reliabilities(tau, ["brier"])["brier"], small.reliabilities(tau, ["brier"])["brier"]
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert max(block.stop - block.start for block in small.block_slices("query")) == 7


def test_model_dtype_cosines_streamed_with_equal_results(data) -> None:
    support, labels, query, _, val, val_labels = data
    whole, _ = report(data, 2**30, dtype=torch.bfloat16)
    streamed, rows = report(data, TINY_BUDGET, dtype=torch.bfloat16)
    same(whole, streamed)
    assert rows["val"].read > 25, "V is read again when it is scored, not held"
    scorer = SplitScorer(
        support, labels, query, 5, reliability=(val, val_labels), dtype=torch.float16, memory_budget=TINY_BUDGET
    )
    assert [b.stop - b.start for b in scorer.block_slices("query")] == [7] * 5 + [5]
    for block in scorer.blocks("query"):
        assert scorer._cosines["query"].shape[1] == block.stop - block.start, "one block of cosines held"


def test_questions_and_targets_counted_over_blocks(data) -> None:
    support, labels, query, query_labels, val, val_labels = data
    groups = np.arange(40) // 3  # questions of one clip in consecutive rows, split across blocks
    targets = torch.nn.functional.one_hot(query_labels, 5).bool()
    targets[::4, 0] = True
    kwargs = {"query_groups": groups, "query_targets": targets}
    whole, _ = report(data, 2**30, **kwargs)
    streamed, _ = report(data, TINY_BUDGET, **kwargs)
    same(whole, streamed)
    np.testing.assert_allclose(whole.test.exact_match, streamed.test.exact_match)
    for name, values in whole.test.by_clip.items():
        np.testing.assert_allclose(values, streamed.test.by_clip[name])


def test_eer_of_a_two_class_split_streamed() -> None:
    support, labels, query, query_labels = split(classes=2, shots=8, queries=30, seed=5)
    kwargs = {"n_classes": 2, "folds": 2, "positive_class": 1}
    whole = paper_grid_report(support, labels, query, query_labels, GRID, **kwargs)
    streamed = paper_grid_report(support, labels, query, query_labels, GRID, memory_budget=5 * 5 * 24 * 4, **kwargs)
    assert whole.oracle["test"]["eer"] == pytest.approx(streamed.oracle["test"]["eer"])
    np.testing.assert_allclose(whole.test.accuracy, streamed.test.accuracy)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_grid_on_cuda_equals_the_cpu(data) -> None:
    cpu, _ = report(data, TINY_BUDGET)
    gpu, _ = report(data, TINY_BUDGET, device="cuda")
    same(cpu, gpu)


class BatchSpy(GRW):
    """GRW that remembers the most clips it was asked to score at once, and the dtype it was fitted on."""

    largest, fitted_on = 0, set()

    def fit(self, features, labels, **kwargs):
        BatchSpy.fitted_on.add(features.dtype)
        return super().fit(features, labels, **kwargs)

    def predict_scores(self, features):
        BatchSpy.largest = max(BatchSpy.largest, features.shape[0])
        return super().predict_scores(features)


def sweep(data, budget, device="cpu"):
    support, labels, query, query_labels, val, val_labels = data
    points = MethodGrid.from_config(
        "grw", {"tau": [0.05, 1.0], "tau_w": [0.5, 7.0], "top_k": [2, None]}, {"tau", "tau_w", "top_k"}, "test"
    ).points()
    BatchSpy.largest, BatchSpy.fitted_on = 0, set()
    out = paper_sweep_report(
        lambda values: BatchSpy(**values),
        points,
        support.half(),
        labels,
        CountingRows(query),
        query_labels,
        n_classes=5,
        folds=3,
        reliability=(val.half(), val_labels),
        memory_budget=budget,
        device=device,
    )
    return out, BatchSpy.largest


def test_sweep_scores_in_chunks_under_the_budget_with_equal_results(data) -> None:
    whole, whole_batch = sweep(data, 2**30)
    streamed, streamed_batch = sweep(data, TINY_BUDGET)
    assert whole.test.accuracy.min() < whole.test.accuracy.max(), "the sweep does not discriminate"
    assert BatchSpy.fitted_on == {torch.float32}, "each fit gets float32 rows, upcast from the fp16 support and V"
    np.testing.assert_array_equal(whole.test.accuracy, streamed.test.accuracy)
    np.testing.assert_array_equal(whole.test.macro_f1, streamed.test.macro_f1)
    same(whole, streamed)
    assert whole_batch == 40, "within a large budget the 40 test clips are scored in one chunk"
    assert streamed_batch == rows_within(TINY_BUDGET, 24, 5) == 7, "test, folds and V are scored 7 clips at a time"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_sweep_on_cuda_equals_the_cpu(data) -> None:
    cpu, _ = sweep(data, TINY_BUDGET)
    gpu, _ = sweep(data, TINY_BUDGET, device="cuda")
    same(cpu, gpu)


def test_sav_ranks_heads_on_chunks_of_the_support(monkeypatch) -> None:
    g = torch.Generator().manual_seed(5)
    labels = torch.arange(600) % 3
    support = torch.randn(3, 6, 4, generator=g)[labels] + 2.0 * torch.randn(600, 6, 4, generator=g)
    widest = []
    monkeypatch.setattr(base, "prototype_dots", lambda x, p: widest.append(x.shape[0]) or prototype_dots(x, p))
    fitted = SAV(top_k=3).fit(support, labels)
    assert max(widest) == base.FIT_CHUNK < 600, "the support's products are computed a chunk at a time"
    whole = sav_head_scores(prototype_dots(support, fitted.prototypes_), labels)
    assert torch.equal(fitted.head_scores_, whole) and whole.min() < whole.max()


def test_grw_measures_reliabilities_on_chunks_of_v(monkeypatch) -> None:
    g = torch.Generator().manual_seed(6)
    labels = torch.arange(600) % 3
    centres = torch.randn(3, 6, 4, generator=g)
    support = centres[labels[:30]] + 2.0 * torch.randn(30, 6, 4, generator=g)
    v = centres[labels] + 2.0 * torch.randn(600, 6, 4, generator=g)
    widest = []
    monkeypatch.setattr(
        ablations, "cosine_similarities", lambda x, p: widest.append(x.shape[0]) or cosine_similarities(x, p)
    )
    fitted = GRW(tau=0.1, tau_w=0.5, top_k=3).fit(support, labels[:30], reliability_set=(v, labels))
    assert max(widest) == base.FIT_CHUNK < 600, "V's posteriors are computed a chunk at a time"
    posteriors = calm_posteriors(cosine_similarities(v, fitted.prototypes_), 0.1)
    whole = clip_reliability(posteriors, labels, "margin_clamped", scratch=True).mean(dim=1)
    torch.testing.assert_close(fitted.reliability_, whole, rtol=0, atol=1e-7)
    assert whole.min() < whole.max() and fitted.kept_heads_.sum() == 3
