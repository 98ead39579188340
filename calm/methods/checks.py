"""Setting checks shared by every estimator, so a rule such as "what top_k may be" has one home."""

from __future__ import annotations

from numbers import Real

from calm.config.schema import TOP_K
from calm.errors import ConfigError


def check_positive(name: str, value: float) -> None:
    """tau, tau_w: a positive real number (a bool is not one)."""
    if not isinstance(value, Real) or isinstance(value, bool) or not value > 0:
        raise ConfigError(
            f"{name} must be a positive number, got {value!r}", f"set {name} > 0 (e.g. tau=0.07, tau_w=0.5)"
        )


def check_top_k(owner: str, top_k: int | None) -> None:
    """top_k, the same for every estimator (CALM, GRW, TopKSoft, SAV, LinearProbe): null keeps every
    head, a positive integer keeps that many (all of them when it exceeds the model's head count).

    0 once meant "all heads" for CALM alone while SAV refused it; one meaning for null and no
    meaning for 0 keeps a setting from changing sense when it moves from one estimator to another.
    """
    if not TOP_K.accepts(top_k):
        raise ConfigError(
            f"{owner} top_k must be {TOP_K.expected}, got {top_k!r}",
            "set top_k to null to keep every head, or to a number of heads such as 20 "
            "(a number above the model's head count also keeps every head)",
        )
