"""High-precision reference moments of f(X), X ~ N(mu, var), computed with mpmath.

Independent of the engine's numerics: tanh-sinh quadrature (mpmath.quad) at
``DPS`` digits in standardized coordinates, with the z-axis split at every breakpoint
of f, around x = 0 and at a few scales around each, and infinite tails. f itself is
evaluated with extra digits far from 0 (where 1 + e^x cancels), the integrand is
rescaled to order one (mpmath's tolerance is absolute), and the variance is
E[(f - m)^2] around the high-precision mean m (no cancellation).
Used by the accuracy tests and the benchmarks.
"""
from __future__ import annotations

import functools
from typing import Callable, Sequence

import mpmath
import sympy

from autoinit_sym.moment_engine.expressions import X, breakpoints

DPS = 32


@functools.lru_cache(maxsize=None)
def _mp_function(expr: sympy.Expr) -> Callable:
    return sympy.lambdify(X, expr, modules="mpmath")


def _split_points(points: Sequence[float], mu: mpmath.mpf, sigma: mpmath.mpf) -> list:
    """z-edges: each special point and offsets of (1/16, 1, 16) / sigma around it, a
    coarse grid over the bulk of the Gaussian, and the peaks of exponentially growing
    integrands; sorted, unique, finite."""
    edges = {mpmath.mpf(z) for z in range(-12, 13, 4)}
    for p in (0, *points):
        zp = (mpmath.mpf(p) - mu) / sigma
        edges.add(zp)
        for k in (-4, 0, 4):
            for sign in (-1, 1):
                edges.add(zp + sign * mpmath.mpf(2) ** k / sigma)
    # exp(a x) growth moves the integrand's peak to z = a sigma (a = 1 for E[f], 2 for E[f^2])
    for a in (1, 2):
        edges.update(a * sigma + d for d in (-8, 0, 8))
    return sorted(e for e in edges if abs(e) < 60 + 2 * sigma)


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

        inner = edges[1:-1]
        samples = inner + [(a + b) / 2 for a, b in zip(inner, inner[1:])]

        def expectation(g: Callable) -> mpmath.mpf:
            # mpmath.quad's tolerance is absolute: integrate h / scale, scale ~ max |h|
            def h(z):
                x = mu_mp + sigma * z
                # log(1 + e^x) and the like cancel at x << 0 in mpmath too: evaluate f with
                # the ~|x| / 2.3 extra digits that keep DPS significant ones (up to |x| = 120)
                with mpmath.workdps(DPS + int(min(abs(x), 120) / 2)):
                    value = g(f(x))
                return +value * mpmath.exp(-z * z / 2)
            scale = max(abs(h(z)) for z in samples) or mpmath.mpf(1)
            return mpmath.quad(lambda z: h(z) / scale, edges) * scale * norm

        mean = expectation(lambda v: v)
        variance = expectation(lambda v: (v - mean) ** 2)
        return float(mean), float(variance)
