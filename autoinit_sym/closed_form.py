"""Closed-form Gaussian moments of piecewise exp-polynomial activations.

For X ~ N(mu, sigma**2) and f piecewise (between numeric breakpoints) a finite sum of
c * x**n * exp(a*x), ``derive(expr, x)`` gives E[f(X)] and E[f(X)**2] exactly: with
x = mu + sigma*z each term becomes sum_k binom(n, k) mu**(n-k) sigma**k * z**k exp(a*x),
and E[z**k exp(a*X); lo < X < hi] is a truncated Gaussian moment
(``gaussian_integrals.truncated_moments``).  f**2 is of the same form.

The variance is never formed as E[f**2] - E[f]**2.  With P the piece holding mu,
g(x) = f(x) - f_P(mu) is again piecewise exp-polynomial, and on P its polynomial part
starts at z**1, so Var = E[g**2] - E[g]**2 keeps full relative precision for narrow
inputs (relu at mu=50, var=1e-8).  The compiled variance picks P from mu at run time.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from math import comb
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import sympy as sp

from autoinit_sym.gaussian_integrals import NUMPY_FUNCTIONS, truncated_moments
from autoinit_sym.piecewise import Piece, Terms, split_pieces

X = sp.Symbol("x", real=True)
MU = sp.Symbol("mu", real=True)
SIGMA = sp.Symbol("sigma", positive=True)

# (k, a) -> coefficient (in MU, SIGMA) of z**k * exp(a*x), x = MU + SIGMA*z.
ZTerms = Dict[Tuple[int, sp.Expr], sp.Expr]

_MODULES = [NUMPY_FUNCTIONS, "scipy", "numpy"]


@dataclass(frozen=True)
class ClosedForm:
    """Closed-form moments of f(X), X ~ N(mu, sigma**2), compiled for NumPy.

    ``mean_expr`` and ``second_moment_expr`` use exp and erfc; ``variance_expr`` is the
    cancellation-free form that ``variance`` evaluates (Piecewise in mu, with the
    tail-safe functions of ``gaussian_integrals``).  All callables take (mu, var)
    with NumPy broadcasting and return float64 arrays.
    """

    mean_expr: sp.Expr
    second_moment_expr: sp.Expr
    variance_expr: sp.Expr
    _mean: Callable = field(repr=False, compare=False)
    _second_moment: Callable = field(repr=False, compare=False)
    _variance: Callable = field(repr=False, compare=False)

    def mean(self, mu, var) -> np.ndarray:
        """E[f(X)]."""
        return _evaluate(self._mean, mu, var)

    def second_moment(self, mu, var) -> np.ndarray:
        """E[f(X)**2]."""
        return _evaluate(self._second_moment, mu, var)

    def variance(self, mu, var) -> np.ndarray:
        """Var[f(X)], never negative."""
        return np.maximum(_evaluate(self._variance, mu, var), 0.0)


def derive(expr: sp.Expr, x: sp.Symbol = X) -> Optional[ClosedForm]:
    """Closed-form moments of ``expr`` (in ``x``), or None if it is not piecewise exp-polynomial."""
    pieces = split_pieces(sp.sympify(expr).subs(x, X), X)
    if pieces is None:
        return None
    mean = sum((_expectation(_standardize(p.terms), p) for p in pieces), sp.S.Zero)
    second = sum((_expectation(_square(_standardize(p.terms)), p) for p in pieces), sp.S.Zero)
    variance = _centered_variance(pieces)
    return ClosedForm(
        mean_expr=mean.rewrite(sp.erfc),
        second_moment_expr=second.rewrite(sp.erfc),
        variance_expr=variance,
        _mean=_compile(mean),
        _second_moment=_compile(second),
        _variance=_compile(variance),
    )


def _standardize(terms: Terms) -> ZTerms:
    """Rewrite sum c x**n exp(a x) in z, x = MU + SIGMA*z: binomial expansion of x**n."""
    out: ZTerms = {}
    for (n, a), c in terms.items():
        for k in range(n + 1):
            _accumulate(out, (k, a), c * comb(n, k) * MU ** (n - k) * SIGMA ** k)
    return out


def _centered(pieces: List[Piece], home: Piece) -> List[ZTerms]:
    """z-terms of g = f - f_home(MU) on every piece; on ``home`` the constant z**0 parts
    of the polynomial terms are dropped instead of subtracted, so nothing cancels."""
    at_mu = sum((c * MU ** n * sp.exp(a * MU) for (n, a), c in home.terms.items()), sp.S.Zero)
    out = []
    for piece in pieces:
        terms = _standardize(piece.terms)
        if piece is home:
            terms.pop((0, sp.S.Zero), None)
            for (n, a), c in piece.terms.items():
                if not a.is_zero:
                    _accumulate(terms, (0, sp.S.Zero), -c * MU ** n * sp.exp(a * MU))
        else:
            _accumulate(terms, (0, sp.S.Zero), -at_mu)
        out.append(terms)
    return out


def _centered_variance(pieces: List[Piece]) -> sp.Expr:
    """Var[f(X)] = E[g**2] - E[g]**2 with g centered on the piece holding MU (Piecewise in MU)."""
    branches = []
    for home in pieces:
        g = _centered(pieces, home)
        first = sum((_expectation(t, p) for t, p in zip(g, pieces)), sp.S.Zero)
        second = sum((_expectation(_square(t), p) for t, p in zip(g, pieces)), sp.S.Zero)
        cond = sp.true if home.hi.is_infinite else MU < home.hi
        branches.append((second - first**2, cond))
    return branches[0][0] if len(branches) == 1 else sp.Piecewise(*branches)


def _square(terms: ZTerms) -> ZTerms:
    """z-terms of the square: z**k exp(a x) * z**j exp(b x) = z**(k+j) exp((a+b) x)."""
    out: ZTerms = {}
    items = list(terms.items())
    for i, ((k1, a1), c1) in enumerate(items):
        _accumulate(out, (2 * k1, 2 * a1), c1 * c1)
        for (k2, a2), c2 in items[i + 1:]:
            _accumulate(out, (k1 + k2, a1 + a2), 2 * c1 * c2)
    return out


def _expectation(terms: ZTerms, piece: Piece) -> sp.Expr:
    """E[sum c z**k exp(a X); piece.lo < X < piece.hi], one moment recursion per rate a."""
    by_rate: Dict[sp.Expr, List[Tuple[int, sp.Expr]]] = {}
    for (k, a), c in terms.items():
        by_rate.setdefault(a, []).append((k, c))
    total = sp.S.Zero
    for a, entries in by_rate.items():
        moments = truncated_moments(a, piece.lo, piece.hi, max(k for k, _ in entries), MU, SIGMA)
        total += sum((c * moments[k] for k, c in entries), sp.S.Zero)
    return total


def _accumulate(terms: ZTerms, key: Tuple[int, sp.Expr], value: sp.Expr) -> None:
    """terms[key] += value, dropping exact zeros."""
    total = terms.get(key, sp.S.Zero) + value
    if total.is_zero:
        terms.pop(key, None)
    else:
        terms[key] = total


def _compile(expr: sp.Expr) -> Callable:
    """lambdify over (MU, SIGMA) with the tail-safe NumPy functions and common subexpressions."""
    return sp.lambdify((MU, SIGMA), expr, modules=_MODULES, cse=True)


def _evaluate(function: Callable, mu, var) -> np.ndarray:
    """Call a compiled moment at broadcast (mu, var) with sigma = sqrt(var), as float64."""
    mu = np.asarray(mu, dtype=np.float64)
    var = np.asarray(var, dtype=np.float64)
    if np.any(~(var > 0)):
        raise ValueError(f"var must be > 0 (got min {np.min(var)!r}): the input variance of a Gaussian")
    with np.errstate(over="ignore", invalid="ignore", under="ignore", divide="ignore"):
        out = function(mu, np.sqrt(var))
    return np.array(np.broadcast_to(out, np.broadcast(mu, var).shape), dtype=np.float64)
