"""Setting checks shared by every estimator, so a rule such as "what top_k may be" has one home."""

from __future__ import annotations

from numbers import Integral, Real

from calm.errors import ConfigError


def check_positive(name: str, value: float) -> None:
    """tau, tau_w: a positive real number (a bool is not one)."""
    if not isinstance(value, Real) or isinstance(value, bool) or not value > 0:
        raise ConfigError(f"{name} must be a positive number, got {value!r}", f"set {name} > 0 (e.g. tau=0.07, tau_w=0.5)")


def check_top_k(owner: str, top_k: int | None, allow_all: bool) -> None:
    """top_k: a positive integer; with `allow_all` also None or 0 (all heads), as for CALM."""
    if allow_all and top_k is None:
        return
    low = 0 if allow_all else 1
    if isinstance(top_k, bool) or not isinstance(top_k, Integral) or top_k < low:
        if allow_all:
            raise ConfigError(f"{owner} top_k must be null or a non-negative integer, got {top_k!r}",
                              "set top_k to null (all heads) or a number of heads per class")
        raise ConfigError(f"{owner} top_k must be a positive integer, got {top_k!r}", "set top_k to e.g. 20")
