"""Clip-level scores of per-label questions, for grids: when each query row is one question about a
multi-label clip (`calm.data.questions`), a setting is also scored per clip, from its per-question
predictions. Two definitions, both reported: `exact_match_questions` (every question of the clip
answered right; the authors' CALM runner, and the ranking metric) and `exact_match_sets` (the set of
labels predicted for the clip's questions equals its true set; the authors' SAV runner). The formulas
live in `calm.methods.metrics`; this module only names them and checks the group ids.
"""

from __future__ import annotations

import numpy as np
import torch

from calm.errors import ConfigError
from calm.methods.metrics import batched_question_exact_match, batched_set_exact_match
from calm.selection.settings import QUESTION_METRIC

SET_METRIC = "exact_match_sets"
CLIP_METRICS = (QUESTION_METRIC, SET_METRIC)


def group_tensor(groups: np.ndarray | torch.Tensor, n_queries: int) -> torch.Tensor:
    """Group ids as a 1-D int64 CPU tensor, one non-negative id per query row."""
    g = torch.as_tensor(np.asarray(groups) if not isinstance(groups, torch.Tensor) else groups).cpu()
    if (
        g.ndim != 1
        or g.shape[0] != n_queries
        or g.dtype not in (torch.int32, torch.int64)
        or (g.numel() and int(g.min()) < 0)
    ):
        raise ConfigError(
            f"query_groups must be {n_queries} non-negative integer clip ids (one per query row), "
            f"got shape {tuple(g.shape)} and dtype {g.dtype}",
            "pass calm.data.questions.question_groups(table, episode.query)",
        )
    return g.long()


def clip_exact_matches(pred: torch.Tensor, true: torch.Tensor, groups: torch.Tensor) -> dict[str, np.ndarray]:
    """Both clip-level exact matches, percent (S,), of predictions (S, N) of N questions with labels (N,)
    and clip ids (N,)."""
    true, groups = true.to(pred.device), groups.to(pred.device)
    return {
        QUESTION_METRIC: batched_question_exact_match(pred, true, groups).cpu().numpy(),
        SET_METRIC: batched_set_exact_match(pred, true, groups).cpu().numpy(),
    }
