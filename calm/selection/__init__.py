"""Choosing settings: CALM grids on one split, support-set cross-validation (the one rule used by the
paper protocol and the search), and the paper protocol's cross-validated and oracle choices."""

from calm.selection.cross_validation import (
    fold_seed,
    stratified_folds,
    support_cv_scores,
    support_folds,
)
from calm.selection.grid import evaluate_grid
from calm.selection.paper import PaperGridReport, paper_grid_report, select_by_cross_validation
from calm.selection.rows import tuned_row_names
from calm.selection.settings import DEFAULT_SETTING, CalmGrid, CalmSetting, GridResult

__all__ = [
    "DEFAULT_SETTING",
    "CalmGrid",
    "CalmSetting",
    "GridResult",
    "PaperGridReport",
    "evaluate_grid",
    "fold_seed",
    "paper_grid_report",
    "select_by_cross_validation",
    "stratified_folds",
    "support_cv_scores",
    "support_folds",
    "tuned_row_names",
]
