"""The linear probe's training: one linear layer fitted by a `pytorch_lightning.Trainer` on the whole
support set as one batch (calm.methods.linear_probe). Its own module because importing Lightning takes
seconds: the probe imports it with its first fit, so a job without a probe starts without it.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import pytorch_lightning as pl
import torch
from torch import nn

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


def train_probe(
    x: torch.Tensor, labels: torch.Tensor, n_classes: int, lr: float, weight_decay: float, seed: int, steps: int
) -> ProbeModule:
    """A `ProbeModule` on (n, features) `x`, trained `steps` full-batch AdamW steps on the CPU; in eval mode."""
    module = ProbeModule(x.shape[1], n_classes, lr, weight_decay, seed)
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
        trainer.fit(module, train_dataloaders=FullBatch(x, labels, steps))
    return module.eval()
