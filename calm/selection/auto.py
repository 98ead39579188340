"""`method=auto`: each support set chooses its own method by cross-validation on the support set alone.

CALM does not win on every task (its class-conditional reliabilities can fit the support speakers and
not carry to new ones), and which side of that line a new task falls on is not known in advance. The
`AutoSelect` estimator holds a list of candidate estimators with their settings, scores each on the
support set by cross-validation, and predicts with the winner refitted on the whole support set.
The query clips are never seen before the choice: `fit` receives the support set only.

The rule, once:
- folds: leave-one-out (every support clip held out on its own) when the support set has at most
  `leave_one_out_up_to` clips, else `folds` stratified folds (`calm.selection.cross_validation`, the
  rule of the paper grid's `[cv]` rows and the search), dealt with `fold_seed(cv_seed, episode seed)`;
  the same folds for every candidate;
- score: pooled held-out accuracy over all support clips (`pooled_fold_scores`);
- ties: the candidate listed first (`first_best`);
- a support set with a single clip in some class cannot be cross-validated (holding that clip out
  leaves its class without a prototype): the first candidate is used, and the record says so.

Cost: the candidates share each fold's cosine products (`calm.selection.candidates`), so a fit costs
about (folds + 1) support-sized products plus posteriors per candidate tau, then one fit of the winner.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from calm.config.builder import build
from calm.errors import ConfigError
from calm.methods import Estimator
from calm.methods.prototypes import FeaturesLike, LabelsLike, check_fitted
from calm.selection.candidates import CandidatePlan, fold_accuracies
from calm.selection.cross_validation import (
    fold_seed,
    pooled_fold_scores,
    support_folds,
    too_few_clips,
)
from calm.selection.settings import first_best

LEAVE_ONE_OUT = "leave_one_out"
STRATIFIED = "stratified_folds"
NOT_CROSS_VALIDATED = "default"  # the first candidate, when the support set cannot be cross-validated


def auto_folds(
    labels: np.ndarray, n_classes: int, folds: int, leave_one_out_up_to: int, seed: int
) -> tuple[np.ndarray | None, int, str]:
    """(fold id per clip, number of folds, how the folds were made) for choosing on one support set:
    leave-one-out up to `leave_one_out_up_to` clips, else `support_folds`; (None, 0, reason) when some
    class has a single clip or no split keeps every class in every fold's fit."""
    labels = np.asarray(labels)
    smallest = int(np.bincount(labels, minlength=n_classes).min())
    if smallest < 2:
        return None, 0, too_few_clips(smallest)
    if len(labels) <= leave_one_out_up_to:
        return np.arange(len(labels)), len(labels), LEAVE_ONE_OUT
    fold, n_folds, smallest = support_folds(labels, n_classes, folds, seed)
    if fold is None:
        return None, 0, too_few_clips(smallest)
    return fold, n_folds, STRATIFIED


def _check_count(name: str, value: Any, low: int, fix: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ConfigError(f"AutoSelect {name} must be an integer >= {low}, got {value!r}", fix)


class AutoSelect(Estimator):
    """Chooses one of `candidates` per support set by cross-validation on it, then is that candidate
    refitted on the whole support set (module docstring: folds, score, ties).

    `candidates`: name -> estimator, or name -> estimator config (a mapping with `_target_`, as in
    `configs/estimator/`), in the order that settles ties. `folds`, `leave_one_out_up_to`, `cv_seed`:
    the fold rule. `fit(..., tie_seed=s)` (the pipeline passes each episode's seed) seeds the fold deal
    with `fold_seed(cv_seed, s)` and is passed on to every candidate's fits.

    After `fit`: `selected_` (the winner's name), `winner_` (that candidate, fitted on the whole
    support set), `selection_` (a record: selected, selected_by = leave_one_out | stratified_folds |
    default, folds, cv_accuracy per candidate in percent, note).
    """

    fitted_attribute = "winner_"

    def __init__(
        self,
        candidates: Mapping[str, Estimator | Mapping[str, Any]],
        folds: int = 5,
        leave_one_out_up_to: int = 20,
        cv_seed: int = 0,
    ) -> None:
        if not isinstance(candidates, Mapping) or not candidates:
            raise ConfigError(
                f"AutoSelect needs a non-empty mapping of candidates, got {candidates!r}",
                "list them under `candidates:` as name: {_target_: ..., settings} (configs/estimator/auto.yaml)",
            )
        self.candidates = {str(name): self._candidate(str(name), spec) for name, spec in candidates.items()}
        _check_count("folds", folds, 2, "set folds to 2 or more (5 is the paper grid's)")
        _check_count(
            "leave_one_out_up_to",
            leave_one_out_up_to,
            0,
            "set leave_one_out_up_to to a number of support clips (0: never leave-one-out)",
        )
        _check_count("cv_seed", cv_seed, 0, "set cv_seed to a non-negative integer such as 0")
        self.folds = int(folds)
        self.leave_one_out_up_to = int(leave_one_out_up_to)
        self.cv_seed = int(cv_seed)
        self.winner_: Estimator | None = None

    @staticmethod
    def _candidate(name: str, spec: Estimator | Mapping[str, Any]) -> Estimator:
        if isinstance(spec, Estimator):
            return spec
        if isinstance(spec, Mapping) and "_target_" in spec:
            return build(spec, "estimator", base=Estimator)
        raise ConfigError(
            f"AutoSelect candidate {name!r} is {spec!r}, not an estimator",
            f"give {name} an estimator config with `_target_` (e.g. calm.methods.CALM) and its "
            "settings, or an Estimator object",
        )

    def fit(
        self, features: FeaturesLike, labels: LabelsLike, *, n_classes: int | None = None, tie_seed: int | None = None
    ) -> AutoSelect:
        """Score every candidate by cross-validation on this support set, then fit the best on all of it."""
        features, labels, n_classes = self._support(features, labels, n_classes)
        names = list(self.candidates)
        seed = fold_seed(self.cv_seed, 0 if tie_seed is None else tie_seed)
        fold, n_folds, how = auto_folds(labels.cpu().numpy(), n_classes, self.folds, self.leave_one_out_up_to, seed)
        if fold is None:
            best, scores = 0, {}
            note = f"{how}, so the first candidate ({names[0]}) is used"
            how = NOT_CROSS_VALIDATED
        else:
            plan = CandidatePlan.of(list(self.candidates.values()), tie_seed)
            pooled = pooled_fold_scores(
                fold,
                n_folds,
                lambda held: fold_accuracies(plan, features, labels, held.to(features.device), n_classes, tie_seed),
            )
            best = first_best(pooled)
            scores = {name: float(score) for name, score in zip(names, pooled, strict=True)}
            scheme = "leave-one-out" if how == LEAVE_ONE_OUT else f"stratified {n_folds}-fold cross-validation"
            note = f"{scheme} on the {len(labels)} support clips; ties to the candidate listed first"
        self.selected_ = names[best]
        tie = {} if tie_seed is None else {"tie_seed": tie_seed}
        self.winner_ = self.candidates[self.selected_].fit(features, labels, n_classes=n_classes, **tie)
        self.selection_ = {
            "selected": self.selected_,
            "selected_by": how,
            "folds": n_folds,
            "cv_accuracy": scores,
            "note": note,
        }
        return self

    def predict_scores(self, features: FeaturesLike) -> torch.Tensor:
        """The winner's class scores (m, C) (CALM: score_c; SAV: vote counts; ...)."""
        check_fitted(self, self.fitted_attribute)
        return self.winner_.predict_scores(features)

    def predict(self, features: FeaturesLike) -> torch.Tensor:
        """The winner's predictions (m,), with its own tie rule (SAV's differs from argmax of its votes)."""
        check_fitted(self, self.fitted_attribute)
        return self.winner_.predict(features)


ACROSS_LABEL = (
    "chosen across the tuned methods by cross-validation on the support set (each method's own [cv] "
    "setting; the best pooled held-out score on the same folds); the test set is not used"
)


def choice_across_methods(cv_choices: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """protocol=paper's `auto[cv]`: among the tuned methods' `[cv]` records (`labelled_choices`), the
    one with the best cross-validated score, ties to the first in `cv_choices` order.

    Every method's grid is cross-validated on the same folds with the same metric (`support_folds`
    with the protocol's folds and cv_seed), so this is one cross-validated choice over the union of
    the grids. When no method could be cross-validated (a class with a single support clip), the first
    method's record is used, marked `selected_by: default`.
    """
    if not cv_choices:
        raise ConfigError("no tuned method to choose among", "list methods with a grid in the grids file")
    names = list(cv_choices)
    scores = {name: record.get("cv_score") for name, record in cv_choices.items()}
    scored = [name for name in names if scores[name] is not None]
    if scored:
        chosen = scored[first_best([scores[name] for name in scored])]
        how, note = "cross_validation", cv_choices[chosen].get("note", "")
    else:
        chosen, how = names[0], NOT_CROSS_VALIDATED
        note = f"no method could be cross-validated ({cv_choices[chosen].get('note', '')}); {chosen} is used"
    record = cv_choices[chosen]
    return {
        "label": ACROSS_LABEL,
        "selected": chosen,
        "selected_by": how,
        "cv_score": scores[chosen],
        "cv_scores": scores,
        "setting": {"method": chosen, **(record.get("setting") or {})},
        "test": dict(record["test"]),
        "note": note,
    }
