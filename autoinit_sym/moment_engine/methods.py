"""The protocol every moment method follows, and the budget that bounds symbolic derivations.

A method computes E[f(X)], Var[f(X)] and E[f(X)^2] for X ~ N(mu, var) over broadcast
float64 arrays (inputs already checked: var > 0, both finite). ``match(integrand)``
returns an instance when the method applies to the activation, None when it does not,
and raises :class:`MethodUnavailable` when it would apply but is not used (a size limit
or the time budget; the message says which). The facade tries the methods in order
(specialised closed forms first, generic quadrature last), as scipy.stats'
rv_continuous overrides a generic integral with an exact formula where it has one.
"""
from __future__ import annotations

import abc
import time
from dataclasses import dataclass
from typing import Callable, ClassVar, Optional, Sequence

import numpy as np
import sympy


class MethodUnavailable(Exception):
    """A method that would apply is not used; the message says why (shown to the user)."""


class DerivationTimeout(MethodUnavailable):
    """A symbolic derivation ran past its time budget."""


class Deadline:
    """A time budget in seconds (None: unlimited); :meth:`check` raises DerivationTimeout once it
    has run out. Derivations call it between their steps, each of which the methods' size
    limits keep short, so the overrun is bounded by one step."""

    def __init__(self, seconds: Optional[float]) -> None:
        if seconds is not None and not seconds > 0:
            raise ValueError(f"time budget must be a positive number of seconds or None, got {seconds!r}")
        self.seconds = seconds
        self._end = None if seconds is None else time.perf_counter() + seconds

    def check(self, step: str) -> None:
        """Raise DerivationTimeout if the budget is spent (``step`` names where)."""
        if self._end is not None and time.perf_counter() > self._end:
            raise DerivationTimeout(f"the closed-form derivation ran past its time budget of "
                                    f"{self.seconds:g} s (at {step})")


@dataclass(frozen=True)
class Integrand:
    """What a method is matched against: the activation ``expr`` (SymPy in x, numbers
    substituted, validated), its breakpoints, its NumPy function and the derivation deadline."""

    expr: sympy.Expr
    breakpoints: Sequence[float]
    function: Callable[[np.ndarray], np.ndarray]
    deadline: Deadline


class MomentMethod(abc.ABC):
    """Moments of f(X), X ~ N(mu, var). ``name`` is what ``ActivationMoments.method`` reports;
    ``mean_expr``/``second_moment_expr`` are SymPy formulas in mu and sigma, or None."""

    name: ClassVar[str]
    mean_expr: Optional[sympy.Expr]
    second_moment_expr: Optional[sympy.Expr]

    @classmethod
    @abc.abstractmethod
    def match(cls, integrand: Integrand) -> Optional["MomentMethod"]:
        """An instance for ``integrand``, None if the method does not apply (MethodUnavailable
        if it applies but is not used)."""

    @abc.abstractmethod
    def mean(self, mu: np.ndarray, var: np.ndarray) -> np.ndarray:
        """E[f(X)]."""

    @abc.abstractmethod
    def variance(self, mu: np.ndarray, var: np.ndarray) -> np.ndarray:
        """Var[f(X)], without the cancellation of E[f^2] - E[f]^2."""

    def second_moment(self, mu: np.ndarray, var: np.ndarray) -> np.ndarray:
        """E[f(X)^2] = Var[f(X)] + E[f(X)]^2."""
        mean = self.mean(mu, var)
        return self.variance(mu, var) + mean * mean

    def mean_variance(self, mu: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(E[f(X)], Var[f(X)])."""
        return self.mean(mu, var), self.variance(mu, var)
