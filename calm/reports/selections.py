"""Which candidate a choosing estimator (`calm.selection.AutoSelect`, `method=auto`) chose: per episode
(columns of episodes.csv), and in sum per method (a share per candidate in results.json, a line in
the notes). Any estimator that leaves a `selection_` record after `fit` is reported this way."""

from __future__ import annotations

from collections import Counter
from typing import Any

SELECTION_COLUMNS = ("selected", "selected_by", "selected_cv_accuracy")
HOW = {
    "leave_one_out": "leave-one-out cross-validation",
    "stratified_folds": "stratified-fold cross-validation",
    "default": "no cross-validation (a class had a single support clip: the first candidate)",
}


def selection_fields(estimator: Any) -> dict[str, Any]:
    """The episode-row columns of a fit that chose a candidate: its name, how it was chosen
    (leave_one_out, stratified_folds, or default when the support set could not be cross-validated)
    and its cross-validated accuracy (NaN when not cross-validated); {} for other estimators."""
    record = getattr(estimator, "selection_", None)
    if record is None:
        return {}
    score = record["cv_accuracy"].get(record["selected"], float("nan"))
    return dict(zip(SELECTION_COLUMNS, (record["selected"], record["selected_by"], score), strict=True))


def selection_shares(episode_rows: list[dict[str, Any]], methods: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per choosing method: the episodes, each candidate's share of them (every candidate listed, in
    order, 0 when never chosen) and how the choices were made (counts per selected_by)."""
    out = {}
    for name, estimator in methods.items():
        mine = [row for row in episode_rows if row["method"] == name and "selected" in row]
        if not mine or not hasattr(estimator, "candidates"):
            continue
        won = Counter(row["selected"] for row in mine)
        out[name] = {
            "episodes": len(mine),
            "shares": {c: won[c] / len(mine) for c in estimator.candidates},
            "selected_by": dict(Counter(row["selected_by"] for row in mine)),
        }
    return out


def selection_notes(shares: dict[str, dict[str, Any]]) -> list[str]:
    """One line per choosing method: the candidates that won, with their shares, and how they were chosen."""
    notes = []
    for name, record in shares.items():
        won = ", ".join(f"{c} {share:.0%}" for c, share in record["shares"].items() if share > 0)
        how = ", ".join(f"{HOW[how]} in {n}" for how, n in record["selected_by"].items())
        notes.append(
            f"{name}: the candidate each episode used, chosen on its support set only (test clips "
            f"unused): {won} of {record['episodes']} episodes; chosen by {how}"
        )
    return notes
