"""Baselines that run the backbone itself (generation), unlike `calm.methods`, whose estimators only
read cached head activations: the zero-shot answer baseline and pseudo-labelled support sets, with
the generation loop and answer-to-class matching they share.

Each module exports the results row names it produces (`ZERO_SHOT_ROW`, `PSEUDO_LABEL_SUFFIX`), so
tables and figures import a row's name from where the row is made instead of spelling it again.
"""

from calm.baselines.answer_matching import match_answer
from calm.baselines.generation import generation_device
from calm.baselines.pseudo_label import SUFFIX as PSEUDO_LABEL_SUFFIX
from calm.baselines.pseudo_label import (
    PseudoLabelSettings,
    check_single_label,
    pseudo_label_episodes,
)
from calm.baselines.zero_shot import (
    ZERO_SHOT_ROW,
    ZeroShotAnswers,
    ZeroShotSettings,
    answer_clips,
    zero_shot_accuracy,
    zero_shot_store,
)

__all__ = [
    "PSEUDO_LABEL_SUFFIX",
    "ZERO_SHOT_ROW",
    "PseudoLabelSettings",
    "ZeroShotAnswers",
    "ZeroShotSettings",
    "answer_clips",
    "check_single_label",
    "generation_device",
    "match_answer",
    "pseudo_label_episodes",
    "zero_shot_accuracy",
    "zero_shot_store",
]
