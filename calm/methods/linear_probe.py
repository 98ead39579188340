"""Linear probe baseline: a linear classifier on the features of SAV's top_k heads (docs/design/formulas.md).

Heads are scored and ranked on the support set exactly as SAV does (`sav_head_scores`, `sav_rank`);
the kept heads' features are L2-normalised per head and concatenated, and one linear layer is
trained on them with cross-entropy by a `pytorch_lightning.Trainer` (calm.methods.probe_training): CPU,
full batch (every step sees the whole support set), AdamW, a fixed number of steps, weights initialised
from `seed`, so a fit is deterministic and leaves the global random state alone. A fit runs once per episode, so the
Trainer is configured to do nothing else: no logger, checkpoints, progress bar or model summary.
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import TYPE_CHECKING

import torch

from calm.errors import ConfigError
from calm.methods.base import Estimator
from calm.methods.checks import check_top_k
from calm.methods.prototypes import (
    FeaturesLike,
    LabelsLike,
    l2_normalize,
)

if TYPE_CHECKING:
    from calm.methods.probe_training import ProbeModule


def probe_features(features: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
    """(n, k·d): the selected heads' features, each L2-normalised, concatenated in rank order."""
    chosen = l2_normalize(features[:, heads.to(features.device)])
    return chosen.reshape(chosen.shape[0], -1)


def check_probe_settings(top_k: int | None, steps: int, lr: float, weight_decay: float, seed: int) -> None:
    """Reject settings a probe cannot train with, before any data is seen."""
    check_top_k("LinearProbe", top_k)
    if isinstance(steps, bool) or not isinstance(steps, Integral) or steps < 1:
        raise ConfigError(f"LinearProbe steps must be a positive integer, got {steps!r}", "set steps to e.g. 100")
    if isinstance(lr, bool) or not isinstance(lr, Real) or not lr > 0:
        raise ConfigError(f"LinearProbe lr must be a positive number, got {lr!r}", "set lr to e.g. 0.01")
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, Real) or not weight_decay >= 0:
        raise ConfigError(
            f"LinearProbe weight_decay must be a number >= 0, got {weight_decay!r}",
            "set weight_decay to 0 (off) or e.g. 0.01",
        )
    if isinstance(seed, bool) or not isinstance(seed, Integral):
        raise ConfigError(f"LinearProbe seed must be an integer, got {seed!r}", "set seed to e.g. 0")


class LinearProbe(Estimator):
    """Linear classifier on the L2-normalised features of SAV's top_k heads, trained with Lightning.

    `tie_break` / `tie_seed` settle heads of equal support accuracy as in SAV (`seed` is the probe's
    initial weights, a different thing).

    After `fit`: `head_scores_` (K,), `ranking_` (K,), `selected_heads_` (min(top_k, K),) in rank
    order (as SAV), `tied_selections_`, `tie_seed_`, `module_` the trained `ProbeModule`, `n_classes_`.
    """

    def __init__(
        self,
        top_k: int | None = 20,
        steps: int = 100,
        lr: float = 0.01,
        weight_decay: float = 0.01,
        seed: int = 0,
        tie_break: str = "index",
        tie_seed: int = 0,
    ) -> None:
        self.top_k = top_k
        self.steps = steps
        self.lr = lr
        self.weight_decay = weight_decay
        self.seed = seed
        self.tie_break = tie_break
        self.tie_seed = tie_seed
        self._check()
        self.module_: ProbeModule | None = None

    fitted_attribute = "module_"

    def _check(self) -> None:
        check_probe_settings(self.top_k, self.steps, self.lr, self.weight_decay, self.seed)
        self._check_ties()

    def fit(
        self, features: FeaturesLike, labels: LabelsLike, *, n_classes: int | None = None, tie_seed: int | None = None
    ) -> LinearProbe:
        """Rank heads as SAV, keep the top_k, and train the linear layer on their features."""
        self._check()
        features, labels, n_classes = self._rank_heads(features, labels, n_classes, self.top_k, tie_seed)
        x = probe_features(features, self.selected_heads_).cpu()
        # Lightning is imported with the first fit, not with the estimators: most jobs never train a probe.
        from calm.methods.probe_training import train_probe

        module = train_probe(
            x, labels.cpu(), n_classes, float(self.lr), float(self.weight_decay), int(self.seed), int(self.steps)
        )
        self.module_ = module
        return self

    @torch.no_grad()
    def predict_scores(self, features: FeaturesLike) -> torch.Tensor:
        """Class probabilities (m, C) of the probe (softmax of its logits), on the query's device."""
        features = self._query(features)
        logits = self.module_(probe_features(features, self.selected_heads_).cpu())
        return torch.softmax(logits, dim=1).to(features.device)
