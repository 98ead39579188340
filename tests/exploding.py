"""An estimator that fails mid-job, to check that a failing job still finishes its W&B run."""

from __future__ import annotations

from calm.methods.base import Estimator


class ExplodingEstimator(Estimator):
    def __init__(self, **settings) -> None:
        self.settings = settings

    def fit(self, features, labels, *, n_classes=None, tie_seed=None):
        raise RuntimeError("boom: estimator failed on purpose")

    def predict_scores(self, features):
        raise AssertionError("unreachable")
