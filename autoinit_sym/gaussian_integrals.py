"""Truncated Gaussian integrals of z**k * exp(a*x), x = mu + sigma*z, z ~ N(0, 1).

``truncated_moments(a, lo, hi, kmax, mu, sigma)`` gives, as SymPy expressions,

    M_k = E[Z**k * exp(a*X); lo < X < hi],   k = 0..kmax,   X = mu + sigma*Z,

from the recursion (integration by parts of z * exp(b*z) * phi(z), b = a*sigma)

    M_k = b*M_{k-1} + (k-1)*M_{k-2} + t_lo**(k-1)*B(lo) - t_hi**(k-1)*B(hi),
    B(c) = exp(a*c) * phi(t_c),   t_c = (c - mu)/sigma,

and M_0 = exp(a*mu + b**2/2) * (Phi(t_hi - b) - Phi(t_lo - b)) (completing the square).
M_0 is written with three SymPy functions (``gauss_exp_below``, ``gauss_exp_above``,
``gauss_exp_between``) whose NumPy versions in ``NUMPY_FUNCTIONS`` never form
inf*0: in a tail they use exp(a*c - t_c**2/2) * erfcx(.), whose exponent has no
cancellation; ``.rewrite(sympy.erfc)`` turns them into plain exp/erfc formulas.
"""
from __future__ import annotations

from typing import Callable, Dict, List

import numpy as np
import sympy as sp
from scipy import special

_SQRT_HALF = np.sqrt(0.5)


def _cdf_exp(a: sp.Expr, c: sp.Expr, mu: sp.Expr, sigma: sp.Expr, upper: bool) -> sp.Expr:
    """exp(a*mu + a**2*sigma**2/2) * Phi(+-(t - a*sigma)) in exp/erfc."""
    shifted = (c - mu) / sigma - a * sigma
    sign = 1 if upper else -1
    return sp.exp(a * mu + a**2 * sigma**2 / 2) * sp.erfc(sign * shifted / sp.sqrt(2)) / 2


class gauss_exp_below(sp.Function):
    """E[exp(a*X); X < c] for X ~ N(mu, sigma**2); arguments (a, c, mu, sigma)."""

    nargs = 4

    def _eval_rewrite_as_erfc(self, a, c, mu, sigma, **kwargs):
        return _cdf_exp(a, c, mu, sigma, upper=False)


class gauss_exp_above(sp.Function):
    """E[exp(a*X); X > c] for X ~ N(mu, sigma**2); arguments (a, c, mu, sigma)."""

    nargs = 4

    def _eval_rewrite_as_erfc(self, a, c, mu, sigma, **kwargs):
        return _cdf_exp(a, c, mu, sigma, upper=True)


class gauss_exp_between(sp.Function):
    """E[exp(a*X); lo < X < hi] for X ~ N(mu, sigma**2); arguments (a, lo, hi, mu, sigma)."""

    nargs = 5

    def _eval_rewrite_as_erfc(self, a, lo, hi, mu, sigma, **kwargs):
        return _cdf_exp(a, lo, mu, sigma, upper=True) - _cdf_exp(a, hi, mu, sigma, upper=True)


def _exp_sum(a: float, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """exp(a*mu + (a*sigma)**2/2) as exp(a*mu) * exp((a*sigma)**2/2): the factor exp(a*mu) is
    then rounded exactly as in the coefficients, so centered sums cancel it exactly."""
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        split = np.exp(a * mu) * np.exp(0.5 * (a * sigma) ** 2)
        joint = np.exp(a * mu + 0.5 * (a * sigma) ** 2)
    return np.where(np.isfinite(split) & (split != 0), split, joint)


def _below(a: float, c: float, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """NumPy gauss_exp_below: erfcx form in the lower tail, exp * ndtr elsewhere."""
    t = (c - mu) / sigma
    if a == 0:
        return special.ndtr(t)
    g = t - a * sigma
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        tail = 0.5 * np.exp(a * c - 0.5 * t * t) * special.erfcx(-g * _SQRT_HALF)
        bulk = _exp_sum(a, mu, sigma) * special.ndtr(g)
    return np.where(g < 0, tail, bulk)


def _above(a: float, c: float, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """NumPy gauss_exp_above: erfcx form in the upper tail, exp * ndtr elsewhere."""
    t = (c - mu) / sigma
    if a == 0:
        return special.ndtr(-t)
    g = t - a * sigma
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        tail = 0.5 * np.exp(a * c - 0.5 * t * t) * special.erfcx(g * _SQRT_HALF)
        bulk = _exp_sum(a, mu, sigma) * special.ndtr(-g)
    return np.where(g > 0, tail, bulk)


def _between(a: float, lo: float, hi: float, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """NumPy gauss_exp_between: a difference of same-tail terms, or erf differences across the peak."""
    g_lo = (lo - mu) / sigma - a * sigma
    g_hi = (hi - mu) / sigma - a * sigma
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        lower = _below(a, hi, mu, sigma) - _below(a, lo, mu, sigma)
        upper = _above(a, lo, mu, sigma) - _above(a, hi, mu, sigma)
        peak = (0.5 * _exp_sum(a, mu, sigma)
                * (special.erf(g_hi * _SQRT_HALF) - special.erf(g_lo * _SQRT_HALF)))
    return np.where(g_hi <= 0, lower, np.where(g_lo >= 0, upper, peak))


# Name -> NumPy implementation, for sympy.lambdify(modules=[NUMPY_FUNCTIONS, "scipy", "numpy"]).
NUMPY_FUNCTIONS: Dict[str, Callable] = {
    "gauss_exp_below": _below,
    "gauss_exp_above": _above,
    "gauss_exp_between": _between,
}


def exp_mass(a: sp.Expr, lo: sp.Expr, hi: sp.Expr, mu: sp.Expr, sigma: sp.Expr) -> sp.Expr:
    """M_0 = E[exp(a*X); lo < X < hi] for X ~ N(mu, sigma**2); lo/hi may be -oo/+oo."""
    if lo.is_infinite and hi.is_infinite:
        return sp.exp(a * mu) * sp.exp(a**2 * sigma**2 / 2)
    if lo.is_infinite:
        return gauss_exp_below(a, hi, mu, sigma)
    if hi.is_infinite:
        return gauss_exp_above(a, lo, mu, sigma)
    return gauss_exp_between(a, lo, hi, mu, sigma)


def _boundary(a: sp.Expr, c: sp.Expr, mu: sp.Expr, sigma: sp.Expr) -> sp.Expr:
    """B(c) = exp(a*c) * phi((c - mu)/sigma), zero at an infinite endpoint."""
    if c.is_infinite:
        return sp.S.Zero
    t = (c - mu) / sigma
    return sp.exp(a * c - t**2 / 2) / sp.sqrt(2 * sp.pi)


def truncated_moments(a: sp.Expr, lo: sp.Expr, hi: sp.Expr, kmax: int,
                      mu: sp.Expr, sigma: sp.Expr) -> List[sp.Expr]:
    """[M_0, ..., M_kmax] with M_k = E[Z**k * exp(a*X); lo < X < hi], X = mu + sigma*Z."""
    b = a * sigma
    t_lo = sp.S.Zero if lo.is_infinite else (lo - mu) / sigma
    t_hi = sp.S.Zero if hi.is_infinite else (hi - mu) / sigma
    b_lo, b_hi = _boundary(a, lo, mu, sigma), _boundary(a, hi, mu, sigma)
    moments = [exp_mass(a, lo, hi, mu, sigma)]
    for k in range(1, kmax + 1):
        previous = (k - 1) * moments[k - 2] if k >= 2 else sp.S.Zero
        moments.append(b * moments[k - 1] + previous
                       + t_lo ** (k - 1) * b_lo - t_hi ** (k - 1) * b_hi)
    return moments
