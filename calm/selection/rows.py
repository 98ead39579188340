"""Names of the result rows a tuned method produces under protocol=paper, in one place: the tables
read them from here rather than spelling them again."""

from __future__ import annotations

CV_SUFFIX = "[cv]"
VAL_SUFFIX = "[val]"
ORACLE_SUFFIX = "[oracle]"


def tuned_row_names(method: str, with_val: bool = False) -> tuple[str, ...]:
    """(chosen by support-set cross-validation, [best on the reliability set V, only when V is named],
    best of grid on test = oracle) row names of `method`, in row order."""
    return (f"{method}{CV_SUFFIX}", *((f"{method}{VAL_SUFFIX}",) if with_val else ()), f"{method}{ORACLE_SUFFIX}")
