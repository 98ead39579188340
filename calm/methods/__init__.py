"""Model-free few-shot estimators on cached head activations (docs/design/formulas.md).

Every estimator derives from `Estimator` (fit / predict_scores / predict). The functional cores are
documented here too: `calm_core` holds every CALM formula (shared with the paper grid in
`calm.selection`), `sav_core` SAV's, `prototypes` the prototype and cosine math both build on,
`ties` the tie rule of every head ranking (index order, or a seeded random order per episode).
"""

from calm.methods.ablations import GRW, Concat, ConfidenceWeighted, TopKSoft, UniformSoft
from calm.methods.base import Estimator
from calm.methods.calm import CALM, calm_scores_from
from calm.methods.calm_core import (
    calm_posteriors,
    calm_reliability,
    calm_scores,
    calm_weights,
    shrink,
    weight_sets,
)
from calm.methods.linear_probe import LinearProbe
from calm.methods.prototypes import Similarities, episode_similarities
from calm.methods.sav import SAV
from calm.methods.sav_core import sav_predict_from

__all__ = [
    "CALM",
    "GRW",
    "SAV",
    "Concat",
    "ConfidenceWeighted",
    "Estimator",
    "LinearProbe",
    "Similarities",
    "TopKSoft",
    "UniformSoft",
    "calm_posteriors",
    "calm_reliability",
    "calm_scores",
    "calm_scores_from",
    "calm_weights",
    "episode_similarities",
    "sav_predict_from",
    "shrink",
    "weight_sets",
]
