"""Choosing settings: CALM grids on one split, any estimator's grid through its API, support-set
cross-validation (the one rule used by the paper protocol and the search), the paper protocol's
cross-validated and oracle choices, and `AutoSelect`, a method chosen per support set by that rule."""

from calm.selection.auto import AutoSelect
from calm.selection.cross_validation import (
    fold_seed,
    stratified_folds,
    support_cv_scores,
    support_folds,
)
from calm.selection.grid import evaluate_grid
from calm.selection.paper import (
    PaperGridReport,
    paper_grid_report,
    paper_sweep_report,
    select_by_cross_validation,
)
from calm.selection.rows import tuned_row_names
from calm.selection.settings import (
    DEFAULT_SETTING,
    CalmGrid,
    CalmSetting,
    GridResult,
    first_best,
    heads_top_k,
)
from calm.selection.sweep import MethodGrid, SweepPoint, sweep_cross_validation, sweep_split

__all__ = [
    "AutoSelect",
    "DEFAULT_SETTING",
    "CalmGrid",
    "CalmSetting",
    "GridResult",
    "MethodGrid",
    "PaperGridReport",
    "SweepPoint",
    "evaluate_grid",
    "first_best",
    "fold_seed",
    "heads_top_k",
    "paper_grid_report",
    "paper_sweep_report",
    "select_by_cross_validation",
    "stratified_folds",
    "support_cv_scores",
    "support_folds",
    "sweep_cross_validation",
    "sweep_split",
    "tuned_row_names",
]
