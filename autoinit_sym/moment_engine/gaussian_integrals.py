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

Three more primitives serve the float-safe arrangement in ``closed_form``:
``gauss_tail_moment`` (moments of a piece far out in a tail, by Laplace's continued
fraction, used through ``one_sided_moment``), ``gauss_expm1`` and ``gauss_expm1_centered``
(E[exp(a*X) - 1] and E[exp(a*X) - exp(a*mu)] on an interval, by a series when a*sigma is small).
"""
from __future__ import annotations

from math import comb, factorial
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
    """NumPy gauss_exp_above, as the mirror image of :func:`_below`:
    E[exp(a*X); X > c] = E[exp(-a*Y); Y < -c] with Y = -X ~ N(-mu, sigma**2) (every step
    negates exactly, so the values are the same bit for bit)."""
    return _below(-a, -c, -mu, sigma)


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


class gauss_tail_moment(sp.Function):
    """E[((X - c)/sigma)**j * exp(a*X); X > c] for X ~ N(mu, sigma**2); arguments (j, a, c, mu, sigma).
    Used only where c lies beyond the shifted mean: u = (c - mu)/sigma - a*sigma >= TAIL_START."""

    nargs = 5


# Beyond this many standard deviations, moments of a tail piece use gauss_tail_moment.
TAIL_START = 4


def _tail_moment(j: int, a: float, c: float, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """NumPy gauss_tail_moment = exp(a*c) * phi(t) * j! * I_j(u), t = (c - mu)/sigma, u = t - a*sigma,
    I_j(u) = int_0^inf w**j/j! exp(-u*w - w**2/2) dw = prod_{k<=j} r_k, with the ratios
    r_{k-1} = 1/(u + k*r_k) run down from k = j + 30 (Laplace's continued fraction for the
    Mills ratio: no cancellation for u > 0).  Zero where u < TAIL_START - 1 (never selected)."""
    mu, sigma = np.broadcast_arrays(np.asarray(mu, dtype=np.float64), np.asarray(sigma, dtype=np.float64))
    t = (c - mu) / sigma
    u = t - a * sigma
    out = np.zeros(t.shape)
    tail = u > TAIL_START - 1
    if np.any(tail):
        u_tail, t_tail = u[tail], t[tail]
        ratio, product = np.zeros_like(u_tail), np.ones_like(u_tail)
        for k in range(j + 30, 0, -1):
            ratio = 1.0 / (u_tail + k * ratio)
            if k - 1 <= j:
                product *= ratio
        with np.errstate(under="ignore"):
            out[tail] = np.exp(a * c - 0.5 * t_tail * t_tail) / np.sqrt(2 * np.pi) * factorial(j) * product
    return out


class gauss_expm1(sp.Function):
    """E[exp(a*X) - 1; lo < X < hi] for X ~ N(mu, sigma**2); arguments (a, lo, hi, mu, sigma)."""

    nargs = 5


class gauss_expm1_centered(sp.Function):
    """E[exp(a*X) - exp(a*mu); lo < X < hi] for X ~ N(mu, sigma**2); arguments (a, lo, hi, mu, sigma)."""

    nargs = 5


# Below this |a*sigma|, exp(a*X) - exp(a*mu) is summed as a series (no first-order cancellation).
SERIES_RATE = 0.5
_SERIES_TERMS = 30


def _mass(a: float, lo: float, hi: float, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """E[exp(a*X); lo < X < hi] with lo/hi possibly infinite."""
    if np.isinf(lo) and np.isinf(hi):
        return _exp_sum(a, mu, sigma)
    if np.isinf(lo):
        return _below(a, hi, mu, sigma)
    if np.isinf(hi):
        return _above(a, lo, mu, sigma)
    return _between(a, lo, hi, mu, sigma)


def _expm1_series(b: np.ndarray, alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """E[exp(b*Z) - 1; alpha < Z < beta] = sum_j b**j/j! M_j, M_j the truncated moments of Z
    (M_j = (j-1) M_{j-2} + alpha**(j-1) phi(alpha) - beta**(j-1) phi(beta))."""
    def edge(t: np.ndarray, power: int) -> np.ndarray:
        finite = np.isfinite(t)
        t = np.where(finite, t, 0.0)
        return np.where(finite, t**power * np.exp(-0.5 * t * t), 0.0) / np.sqrt(2 * np.pi)

    with np.errstate(under="ignore", over="ignore", invalid="ignore"):
        before, current = special.ndtr(beta) - special.ndtr(alpha), edge(alpha, 0) - edge(beta, 0)
        total, weight = b * current, b
        for j in range(2, _SERIES_TERMS + 1):
            before, current = current, (j - 1) * before + edge(alpha, j - 1) - edge(beta, j - 1)
            weight = weight * b / j
            total = total + weight * current
    return total


def _expm1_centered(a: float, lo: float, hi: float, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """NumPy gauss_expm1_centered: exp(a*mu) * series where |a*sigma| <= SERIES_RATE, else the
    difference of the two tail-safe masses (which then cancels by at most a factor ~2)."""
    mu, sigma = np.broadcast_arrays(np.asarray(mu, dtype=np.float64), np.asarray(sigma, dtype=np.float64))
    b = a * sigma
    small = np.abs(b) <= SERIES_RATE
    out = np.empty(mu.shape)
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        if np.any(small):
            m, s = mu[small], sigma[small]
            out[small] = np.exp(a * m) * _expm1_series(b[small], (lo - m) / s, (hi - m) / s)
        if not np.all(small):
            m, s = mu[~small], sigma[~small]
            out[~small] = _mass(a, lo, hi, m, s) - np.exp(a * m) * _mass(0, lo, hi, m, s)
    return out


def _expm1(a: float, lo: float, hi: float, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """NumPy gauss_expm1: where exp(a*x) stays near 1 over the input (|a*sigma| <= SERIES_RATE,
    |a*mu| <= 1), the centered series plus expm1(a*mu) * P(lo < X < hi); elsewhere exp(a*x) - 1
    does not cancel and the plain difference of the tail-safe masses is exact enough."""
    mu, sigma = np.broadcast_arrays(np.asarray(mu, dtype=np.float64), np.asarray(sigma, dtype=np.float64))
    near_one = (np.abs(a * sigma) <= SERIES_RATE) & (np.abs(a * mu) <= 1)
    out = np.empty(mu.shape)
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        if np.any(near_one):
            m, s = mu[near_one], sigma[near_one]
            out[near_one] = _expm1_centered(a, lo, hi, m, s) + np.expm1(a * m) * _mass(0, lo, hi, m, s)
        if not np.all(near_one):
            m, s = mu[~near_one], sigma[~near_one]
            out[~near_one] = _mass(a, lo, hi, m, s) - _mass(0, lo, hi, m, s)
    return out


# Name -> NumPy implementation, for sympy.lambdify(modules=[NUMPY_FUNCTIONS, "scipy", "numpy"]).
NUMPY_FUNCTIONS: Dict[str, Callable] = {
    "gauss_exp_below": _below,
    "gauss_exp_above": _above,
    "gauss_exp_between": _between,
    "gauss_tail_moment": _tail_moment,
    "gauss_expm1": _expm1,
    "gauss_expm1_centered": _expm1_centered,
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


def one_sided_moment(n: int, a: sp.Expr, near: sp.Expr, far: sp.Expr, side: int,
                     mu: sp.Expr, sigma: sp.Expr) -> sp.Expr:
    """E[X**n * exp(a*X); X between near and far] for a piece lying in one tail of the Gaussian,
    ``near`` its finite endpoint closest to the mean, ``side`` = +1 if the piece is above it.

    x**n is expanded in powers of d = side*(x - near) >= 0, and
    E[d**j; near..far] = sigma**j D_j(near) - sum_i binom(j, i) |far - near|**(j-i) sigma**i D_i(far),
    D_i(c) = E[(side*(X - c)/sigma)**i exp(a*X); beyond c]; all terms positive, the second
    (further out) much smaller: no cancellation.
    """
    def beyond(i: int, c: sp.Expr) -> sp.Expr:
        return (gauss_tail_moment(i, a, c, mu, sigma) if side > 0
                else gauss_tail_moment(i, -a, -c, -mu, sigma))

    total = sp.S.Zero
    for j in range(n + 1):
        part = sigma**j * beyond(j, near)
        if not far.is_infinite:
            gap = abs(far - near)
            part -= sum((comb(j, i) * gap ** (j - i) * sigma**i * beyond(i, far) for i in range(j + 1)),
                        sp.S.Zero)
        total += comb(n, j) * near ** (n - j) * side**j * part
    return total
