"""Results say how many selected heads were chosen among ties: at 1 shot every SAV head scores 100 %
on its own support clip, so all of SAV's top_k are the tie rule's choice."""

from __future__ import annotations

import numpy as np
import torch

from calm.methods import CALM, SAV
from calm.protocols import Episode
from calm.reports.episodic import evaluate, tied_selections
from calm.run.tracking import NullTracker
from calm.testing.synthetic import synthetic_split


def test_one_shot_sav_reports_every_selected_head_as_tied_and_calm_none_without_top_k() -> None:
    split = synthetic_split(heads=30, dim=4, classes=3, support_per_class=1, queries=2, seed=0)
    features = torch.cat([split.support, split.query])
    episodes = [
        Episode(
            index=i,
            seed=i,
            classes=np.arange(3),
            support=np.arange(3),
            support_labels=np.arange(3),
            query=np.arange(3, 9),
            query_labels=split.query_labels.numpy(),
        )
        for i in range(2)
    ]
    _, rows = evaluate(episodes, features, {"sav": SAV(top_k=5), "calm": CALM()}, NullTracker())
    assert tied_selections(rows) == {"sav": 5.0, "calm": 0.0}
