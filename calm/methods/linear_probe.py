"""Linear probe baseline: a linear classifier on the features of SAV's top_k heads (docs/design/formulas.md).

Heads are scored and ranked on the support set exactly as SAV does (`sav_head_scores`, `sav_rank`);
the kept heads' features are L2-normalised per head and concatenated, and one linear layer is
trained on them with cross-entropy by a `pytorch_lightning.Trainer`: CPU, full batch (every step
sees the whole support set), AdamW, a fixed number of steps, weights initialised from `seed`, so a
fit is deterministic and leaves the global random state alone. A fit runs once per episode, so the
Trainer is configured to do nothing else: no logger, checkpoints, progress bar or model summary.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from numbers import Integral, Real

import pytorch_lightning as pl
import torch
from torch import nn

from calm.errors import ConfigError
from calm.methods.base import Estimator
from calm.methods.checks import check_top_k
from calm.methods.prototypes import (
    FeaturesLike,
    LabelsLike,
    l2_normalize,
)

# Lightning announces the devices on every Trainer; a job builds one Trainer per episode.
TRAINER_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "pytorch_lightning.accelerators.cuda")
QUIET_WARNINGS = (
    ".*does not have many workers.*",
    ".*infer the batch.*",
    ".*GPU available but not used.*",
    ".*smaller than the logging interval.*",
    ".*LeafSpec.*",
)


class ProbeModule(pl.LightningModule):
    """One linear layer over the concatenated head features, trained with cross-entropy and AdamW."""

    def __init__(self, n_features: int, n_classes: int, lr: float, weight_decay: float, seed: int) -> None:
        super().__init__()
        self.linear = nn.utils.skip_init(nn.Linear, n_features, n_classes)  # its own init would use the global RNG
        self.lr = lr
        self.weight_decay = weight_decay
        bound = 1.0 / math.sqrt(n_features)  # nn.Linear's init range, drawn from a private generator
        generator = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            self.linear.weight.uniform_(-bound, bound, generator=generator)
            self.linear.bias.uniform_(-bound, bound, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)


class FullBatch:
    """The whole support set as one batch, `steps` times: one epoch is the whole training run."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
        self.x, self.y, self.steps = x, y, steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return ((self.x, self.y) for _ in range(self.steps))


@contextmanager
def quiet_trainer() -> Iterator[None]:
    """Silence the device banner and the warnings that do not apply to a full-batch CPU fit."""
    loggers = [logging.getLogger(name) for name in TRAINER_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            for noise in QUIET_WARNINGS:
                warnings.filterwarnings("ignore", message=noise)
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


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
        module = ProbeModule(x.shape[1], n_classes, float(self.lr), float(self.weight_decay), int(self.seed))
        with quiet_trainer():
            trainer = pl.Trainer(
                accelerator="cpu",
                devices=1,
                max_epochs=1,
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                num_sanity_val_steps=0,
                limit_val_batches=0,
                use_distributed_sampler=False,
            )
            trainer.fit(module, train_dataloaders=FullBatch(x, labels.cpu(), int(self.steps)))
        self.module_ = module.eval()
        return self

    @torch.no_grad()
    def predict_scores(self, features: FeaturesLike) -> torch.Tensor:
        """Class probabilities (m, C) of the probe (softmax of its logits), on the query's device."""
        features = self._query(features)
        logits = self.module_(probe_features(features, self.selected_heads_).cpu())
        return torch.softmax(logits, dim=1).to(features.device)
