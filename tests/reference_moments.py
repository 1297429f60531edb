"""High-precision reference moments of f(X), X ~ N(mu, var), computed with mpmath.

Independent of the engine's numerics: tanh-sinh quadrature (mpmath.quad) at
``DPS`` digits in standardized coordinates, with the z-axis split at every breakpoint
of f, around x = 0 and at a few scales around each, and infinite tails. The
variance is E[(f - m)^2] around the high-precision mean m (no cancellation).
Used by the accuracy tests and the benchmarks.
"""
from __future__ import annotations

import functools
from typing import Callable, Sequence

import mpmath
import sympy

from autoinit_sym.expressions import X, breakpoints

DPS = 32


@functools.lru_cache(maxsize=None)
def _mp_function(expr: sympy.Expr) -> Callable:
    return sympy.lambdify(X, expr, modules="mpmath")


def _split_points(points: Sequence[float], mu: mpmath.mpf, sigma: mpmath.mpf) -> list:
    """z-edges: each special point and offsets of (1/16, 1, 16) / sigma around it, plus
    a coarse grid over the bulk of the Gaussian; sorted, unique, finite."""
    edges = {mpmath.mpf(z) for z in range(-12, 13, 4)}
    for p in (0, *points):
        zp = (mpmath.mpf(p) - mu) / sigma
        edges.add(zp)
        for k in (-4, 0, 4):
            for sign in (-1, 1):
                edges.add(zp + sign * mpmath.mpf(2) ** k / sigma)
    return sorted(e for e in edges if abs(e) < 60)


def reference(expr: sympy.Expr, mu: float, var: float) -> tuple[float, float]:
    """(E[f(X)], Var[f(X)]) to about ``DPS`` digits, returned as Python floats."""
    return _reference(expr, tuple(breakpoints(expr)), float(mu), float(var))


@functools.lru_cache(maxsize=None)
def _reference(expr: sympy.Expr, points: tuple[float, ...], mu: float,
               var: float) -> tuple[float, float]:
    f = _mp_function(expr)
    with mpmath.workdps(DPS):
        mu_mp, sigma = mpmath.mpf(mu), mpmath.sqrt(mpmath.mpf(var))
        edges = [-mpmath.inf, *_split_points(points, mu_mp, sigma), mpmath.inf]
        norm = 1 / mpmath.sqrt(2 * mpmath.pi)

        def expectation(g: Callable) -> mpmath.mpf:
            return mpmath.quad(lambda z: g(f(mu_mp + sigma * z)) * mpmath.exp(-z * z / 2), edges) * norm

        mean = expectation(lambda v: v)
        variance = expectation(lambda v: (v - mean) ** 2)
        return float(mean), float(variance)
