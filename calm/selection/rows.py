"""Names of the result rows a tuned method produces under protocol=paper, in one place: the tables
read them from here rather than spelling them again."""

from __future__ import annotations

CV_SUFFIX = "[cv]"
ORACLE_SUFFIX = "[oracle]"


def tuned_row_names(method: str) -> tuple[str, str]:
    """(chosen by support-set cross-validation, best of grid on test = oracle) row names of `method`."""
    return f"{method}{CV_SUFFIX}", f"{method}{ORACLE_SUFFIX}"
