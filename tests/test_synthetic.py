import torch

from calm.methods import CALM
from calm.testing.synthetic import synthetic_split


def test_balanced_split_shapes_and_labels() -> None:
    split = synthetic_split(heads=12, dim=4, classes=3, support_per_class=5, queries=2)
    assert tuple(split.support.shape) == (15, 12, 4) and tuple(split.query.shape) == (6, 12, 4)
    assert split.labels.tolist() == [0] * 5 + [1] * 5 + [2] * 5 and split.n_classes == 3
    assert split.query_labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_random_queries_are_reproducible_and_carry_class_signal() -> None:
    a = synthetic_split(heads=16, dim=8, classes=4, support_per_class=5, queries=40, balanced_queries=False, seed=3)
    b = synthetic_split(heads=16, dim=8, classes=4, support_per_class=5, queries=40, balanced_queries=False, seed=3)
    assert torch.equal(a.query, b.query) and a.query.shape[0] == 40
    strong = synthetic_split(heads=16, dim=8, classes=4, support_per_class=5, queries=10, signal=2.0)
    pred = CALM().fit(strong.support, strong.labels).predict(strong.query)
    assert (pred == strong.query_labels).float().mean() > 0.9
