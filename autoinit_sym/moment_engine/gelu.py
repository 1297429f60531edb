"""Gaussian moments of GELU, f(x) = x Phi(x) (Keras ``gelu`` with approximate=False).

For X ~ N(mu, s^2) let t = sqrt(1 + s^2), r = sqrt(1 + 2 s^2), h = mu / t, q = s^2 / t^2, and
phi, Phi the standard normal density and CDF. Two facts carry the derivation:

- Gaussian products: phi(x) N(x; mu, s^2) = phi(h)/t * N(x; mu/t^2, q), and E[Phi(a + b Z)] =
  Phi(a / sqrt(1 + b^2)); so E[Phi(X)] = Phi(h), E[phi(X)] = phi(h)/t.
- Stein's identity E[(X - mu) g(X)] = s^2 E[g'(X)].

Mean: E[X Phi(X)] = mu Phi(h) + s^2 E[phi(X)] = mu Phi(h) + s^2 phi(h)/t.

Second moment: with U1, U2 ~ N(0, 1) independent of X, Phi(X)^2 = P(U1 < X, U2 < X | X), and
(U1 - X, U2 - X) / t are standard normals with correlation rho = s^2/t^2 = q, so
A = E[Phi(X)^2] = Phi2(h, h; q) = Phi(h) - 2 T(h, 1/r) (Owen's T; (1 - q)/(1 + q) = 1/r^2).
With G = Phi^2, G' = 2 Phi phi, two Stein steps give
E[X^2 G] = mu E[X G] + s^2 E[G] + s^2 E[X G'],  E[X G] = mu A + s^2 E[G'],
E[Phi phi (X)] = phi(h)/t Phi(h/r),  E[X Phi phi (X)] = phi(h)/t (mu/t^2 Phi(h/r) + q t/r phi(h/r)),
(the last two by the product rule above, Y ~ N(mu/t^2, q), E[Y Phi(Y)] = m Phi(m/c) + q phi(m/c)/c,
c = r/t), hence

    E[f^2] = (mu^2 + s^2) A + 2 s^2 mu (1 + 1/t^2) phi(h) Phi(h/r) / t + 2 s^4 phi(h) phi(h/r) / (t^2 r).

Check: mu = 0, s = 1 gives 1/3 + 1/(2 pi sqrt 3).

Mean, float-safe: for h < 0 it is written phi(h)/t (t^2 c(-h) - 1), c(x) = 1 - x R(x) with R
the Mills ratio (Phi(-x) = phi(x) R(x), via erfcx), so both terms share phi(h) and cancel only
where the mean crosses zero.

Variance, float-safe. E[f^2] - E[f]^2 cancels for narrow inputs (relative loss ~ E[f^2]/Var,
1e11 at mu = 40, s^2 = 1e-8), and inside E[f^2], A's Phi(h) - 2T cancels in the left tail.
Per point, the first of these that applies:

1. Chaos series: Var f(X) = sum_{k>=1} s^(2k)/k! E[f^(k)(X)]^2 (Hermite expansion of
   f(mu + s Z)), all terms >= 0, with E[f'(X)] = Phi(h) + h phi(h)/t^2 and, from
   f^(k) = (-1)^k (He_{k-2} - He_k) phi for k >= 2, E[f^(k)(X)] = (-1)^k t^(1-k) phi(h)
   (He_{k-2}(h) - He_k(h)/t^2). SERIES_TERMS terms through the scaled recurrence
   a_k = phi(h) He_k(h) sqrt(q^k/k!) (no overflow). Used where it has converged: q <= SERIES_Q
   and h^2 q <= SERIES_SPREAD (terms fall like (h^2 q)^k/k!; truncation below rounding), or where
   all k >= 2 terms together, at most 3 t^2 exp(-h^2/(1+q)) / (2 pi sqrt(1 - q^2)) by Mehler's
   formula, are below 1e-17 of the k = 1 term (mu >> 0: Var = s^2 E[f']^2).
2. Left tail, mu/(s r) <= -TAIL_Z (the mass of phi(X)^2 N(X; mu, s^2) lies at x < 0):
   E[f^2] = exp(-mu^2/r^2)/(2 pi r) E[Y^2 R(-Y)^2], Y ~ N(mu/r^2, s^2/r^2), the smooth
   expectation by TAIL_NODES-point Gauss-Hermite (error <= 1e-14 for TAIL_Z >= 2, measured).
3. Otherwise the Owen's T formula for E[f^2].
4. Where that cancels and mu < 0 (h <~ -5 with var >~ 4, mu/(s r) > -TAIL_Z: the mass of f^2 p
   lies on both sides of 0), E[f^2] = E[f^2; X < 0] + E[f^2; X > 0], each a smooth integral:
   the first is 2.'s expectation truncated at y = 0 (SPLIT_PANELS Gauss-Legendre panels in Y's
   standard units, from -12 to 0), the second phi(mu/s)/s int_0^inf x^2 Phi(x)^2
   exp(-x |mu|/s^2 - x^2/(2 s^2)) dx on SPLIT_LEVELS geometric panels (ratio 2) from 0 to
   min(60 s^2/|mu|, 12 s).
For 2 to 4, Var = E[f^2] - E[f]^2 is kept where (1 + h^2) (sum of |terms|) / Var <=
CANCELLATION_MAX (rounding of erfc, exp and Owen's T at |h| >> 1 is ~ eps h^2; measured error
<= 1e-11). Points that fail every check are reported as not covered by
:func:`variance_closed_form`, and :class:`GeluClosedForm` integrates them with the engine's
quadrature; none were found over |mu| <= 1e12, 1e-12 <= var <= 1e14.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import sympy as sp
from scipy import special

from autoinit_sym.moment_engine import quadrature
from autoinit_sym.moment_engine.closed_form import MU, SIGMA
from autoinit_sym.moment_engine.expressions import X, numpy_function
from autoinit_sym.moment_engine.methods import Integrand, MomentMethod
from autoinit_sym.moment_engine.nodes import gauss_legendre, standard_normal_nodes

GELU = X / 2 * (1 + sp.erf(X / sp.sqrt(2)))

SERIES_Q = 0.125          # chaos series where q = s^2/(1 + s^2) <= SERIES_Q ...
SERIES_SPREAD = 4.0       # ... and h^2 q <= SERIES_SPREAD (terms fall like (h^2 q)^k / k!)
SERIES_TERMS = 40
TAIL_Z = 2.0              # Gauss-Hermite left-tail form where mu / (s r) <= -TAIL_Z
TAIL_NODES = 96
CANCELLATION_MAX = 1e5    # largest accepted (1 + h^2) sum |terms| / result in E[f^2] - E[f]^2
SPLIT_PANELS = 8          # Gauss-Legendre panels (LEGENDRE_NODES each) for x < 0 in the split form
SPLIT_LEVELS = 24         # geometric panels (ratio 2) for x > 0 in the split form
LEGENDRE_NODES = 10

_SQRT_2PI = math.sqrt(2 * math.pi)
_HERMITE_Z, _HERMITE_W = standard_normal_nodes(TAIL_NODES)
_LEGENDRE_T, _LEGENDRE_W = gauss_legendre(LEGENDRE_NODES)


def is_gelu(expr: sp.Expr) -> bool:
    """True if ``expr`` (in ``x``) is x Phi(x)."""
    return expr.has(sp.erf) and sp.expand(expr - GELU) == 0


def _phi(z: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * z * z) / _SQRT_2PI


def _owens_t_expr(h: sp.Expr, a: sp.Expr) -> sp.Expr:
    """Owen's T(h, a) = 1/(2 pi) int_0^a exp(-h^2 (1 + y^2)/2) / (1 + y^2) dy, as a SymPy Integral."""
    y = sp.Dummy("y")
    return sp.Integral(sp.exp(-h**2 * (1 + y**2) / 2) / (1 + y**2), (y, 0, a)) / (2 * sp.pi)


@functools.cache
def symbolic() -> tuple[sp.Expr, sp.Expr]:
    """(E[f(X)], E[f(X)^2]) in MU and SIGMA (erfc, exp and an Owen's T integral); built on
    first use (it costs SymPy a tenth of a second)."""
    t, r = sp.sqrt(1 + SIGMA**2), sp.sqrt(1 + 2 * SIGMA**2)
    h = MU / t

    def cdf(z: sp.Expr) -> sp.Expr:
        return sp.erfc(-z / sp.sqrt(2)) / 2

    def pdf(z: sp.Expr) -> sp.Expr:
        return sp.exp(-z**2 / 2) / sp.sqrt(2 * sp.pi)

    mean = MU * cdf(h) + SIGMA**2 * pdf(h) / t
    both_below = cdf(h) - 2 * _owens_t_expr(h, 1 / r)
    second = ((MU**2 + SIGMA**2) * both_below + 2 * SIGMA**2 * MU * (1 + 1 / t**2) * pdf(h) * cdf(h / r) / t
              + 2 * SIGMA**4 * pdf(h) * pdf(h / r) / (t**2 * r))
    return mean, second


def mean(mu: np.ndarray, var: np.ndarray) -> np.ndarray:
    """E[f(X)] = mu Phi(h) + s^2 phi(h)/t; for h < 0 as phi(h)/t (t^2 c(-h) - 1) with
    c(x) = 1 - x R(x) (R the Mills ratio), so that phi(h) is a common factor: the two terms
    then cancel only where the mean itself crosses zero."""
    t = np.sqrt(1 + var)
    h = mu / t
    right = mu * special.ndtr(h) + var * _phi(h) / t
    x = np.maximum(-h, 0.0)
    c = 1 - x * math.sqrt(math.pi / 2) * special.erfcx(x / math.sqrt(2))
    left = _phi(h) / t * (t * t * c - 1)
    return np.where(h < 0, left, right)


def _second_moment_terms(mu: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(E[f^2] by the Owen's T formula, sum of the absolute values of its terms)."""
    t2 = 1 + var
    t, r = np.sqrt(t2), np.sqrt(1 + 2 * var)
    h = mu / t
    cdf, twice_t = special.ndtr(h), 2 * special.owens_t(h, 1 / r)
    density = _phi(h)
    first = (mu * mu + var) * (cdf - twice_t)
    cross = 2 * var * mu * (1 + 1 / t2) * density * special.ndtr(h / r) / t
    last = 2 * var * var * density * _phi(h / r) / (t2 * r)
    return first + cross + last, (mu * mu + var) * (cdf + np.abs(twice_t)) + np.abs(cross) + last


def _series_variance(mu: np.ndarray, var: np.ndarray) -> np.ndarray:
    """sum_k s^(2k)/k! E[f^(k)(X)]^2 over k < SERIES_TERMS (see the module docstring)."""
    t2 = 1 + var
    h = mu / np.sqrt(t2)
    q = var / t2
    density = _phi(h)
    slope = special.ndtr(h) + h * density / t2
    total = var * slope * slope
    before, last = density, density * h * np.sqrt(q)            # a_0, a_1
    for k in range(2, SERIES_TERMS):
        current = np.sqrt(q / k) * h * last - q * math.sqrt((k - 1) / k) * before
        derivative = q * before / math.sqrt(k * (k - 1)) - current / t2
        total += t2 * derivative * derivative
        before, last = last, current
    return total


def _panels(edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights, (rows, panels * LEGENDRE_NODES), between consecutive
    columns of ``edges``."""
    lo, hi = edges[:, :-1, None], edges[:, 1:, None]
    half = (hi - lo) / 2
    nodes = (lo + hi) / 2 + half * _LEGENDRE_T
    return nodes.reshape(len(edges), -1), (half * _LEGENDRE_W).reshape(len(edges), -1)


def _mills_square(y: np.ndarray) -> np.ndarray:
    """y^2 R(-y)^2 = (y Phi(y) / phi(y))^2."""
    mills = math.sqrt(math.pi / 2) * special.erfcx(-y / math.sqrt(2))
    return (y * mills) ** 2


def _tail_second_moment(mu: np.ndarray, var: np.ndarray) -> np.ndarray:
    """E[f^2] = exp(-mu^2/r^2)/(2 pi r) E[Y^2 R(-Y)^2], Y ~ N(mu/r^2, s^2/r^2), by Gauss-Hermite."""
    r2 = 1 + 2 * var
    y = (mu / r2)[:, None] + np.sqrt(var / r2)[:, None] * _HERMITE_Z
    return np.exp(-mu * mu / r2) / (2 * math.pi * np.sqrt(r2)) * (_mills_square(y) @ _HERMITE_W)


def _split_second_moment(mu: np.ndarray, var: np.ndarray) -> np.ndarray:
    """E[f^2] for mu < 0 as E[f^2; X < 0] + E[f^2; X > 0] (see the module docstring)."""
    s, r2 = np.sqrt(var), 1 + 2 * var
    centre, spread = mu / r2, s / np.sqrt(r2)
    top = -centre / spread                              # Y's standardized value at y = 0
    bottom = np.minimum(top - 1, -12.0)
    z, w = _panels(bottom[:, None] + (top - bottom)[:, None] * np.linspace(0, 1, SPLIT_PANELS + 1))
    inner = np.sum(w * np.exp(-z * z / 2) * _mills_square(centre[:, None] + spread[:, None] * z), axis=1)
    below = np.exp(-mu * mu / r2) / (2 * math.pi * np.sqrt(r2)) * inner / _SQRT_2PI
    scale = var / -mu
    end = np.minimum(60 * scale, 12 * s)
    edges = end[:, None] * 2.0 ** -np.arange(SPLIT_LEVELS)[::-1]
    x, w = _panels(np.concatenate([np.zeros((len(mu), 1)), edges], axis=1))
    weight = np.exp(-x / scale[:, None] - x * x / (2 * var[:, None]))
    above = _phi(mu / s) / s * np.sum(w * (x * special.ndtr(x)) ** 2 * weight, axis=1)
    return below + above


def variance_closed_form(mu: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Var[f(X)], covered) over 1-d arrays; ``covered`` is False where no form reaches full
    precision (the value there is NaN)."""
    out = np.full(mu.shape, np.nan)
    t2 = 1 + var
    h = mu / np.sqrt(t2)
    q = var / t2
    slope = special.ndtr(h) + h * _phi(h) / t2
    # sum_{k>=2} of the series <= 3 t^2 exp(-h^2/(1+q)) / (2 pi sqrt(1 - q^2)) (Mehler's formula)
    higher = np.log(3 * t2 / (2 * math.pi * np.sqrt(1 - q * q))) - h * h / (1 + q)
    with np.errstate(divide="ignore"):
        negligible = higher <= np.log(1e-17 * var * slope * slope)
    series = ((q <= SERIES_Q) & (h * h * q <= SERIES_SPREAD)) | negligible
    out[series] = _series_variance(mu[series], var[series])
    tail = ~series & (mu <= -TAIL_Z * np.sqrt(var * (1 + 2 * var)))
    formula = ~series & ~tail
    second, size = np.empty(mu.shape), np.empty(mu.shape)
    second[tail] = size[tail] = _tail_second_moment(mu[tail], var[tail])
    second[formula], size[formula] = _second_moment_terms(mu[formula], var[formula])
    rest = ~series
    m = mean(mu[rest], var[rest])
    value = second[rest] - m * m
    # rounding errors of order eps (1 + h^2) (erfc, Owen's T and exp at |h| >> 1) times the cancellation
    bound = (1 + h[rest] ** 2) * (size[rest] + m * m)
    good = (bound <= CANCELLATION_MAX * value) | (bound == 0)
    out[np.flatnonzero(rest)[good]] = value[good]
    split = np.isnan(out) & (mu < 0)
    if np.any(split):
        m = mean(mu[split], var[split])
        second = _split_second_moment(mu[split], var[split])
        value = second - m * m
        bound = (1 + h[split] ** 2) * (second + m * m)
        good = (bound <= CANCELLATION_MAX * value) | (bound == 0)
        out[np.flatnonzero(split)[good]] = value[good]
    return out, ~np.isnan(out)


class GeluClosedForm(MomentMethod):
    """Moments of GELU for X ~ N(mu, var) (a :class:`MomentMethod` matching x Phi(x) only):
    ``mean_expr``, ``second_moment_expr`` (SymPy in mu and sigma) and ``mean``, ``variance``,
    ``second_moment`` (Var + E[f]^2, both accurate; the Owen's T formula for E[f^2] cancels in the
    left tail) over broadcast arrays (float64). ``variance`` integrates the points
    :func:`variance_closed_form` does not cover with
    :func:`autoinit_sym.moment_engine.quadrature.gaussian_moments`."""

    name = "closed_form"

    def __init__(self) -> None:
        self._f = numpy_function(GELU)
        self.mean_expr, self.second_moment_expr = symbolic()

    @classmethod
    def match(cls, integrand: Integrand) -> "GeluClosedForm | None":
        """An instance if the activation is x Phi(x)."""
        return cls() if is_gelu(integrand.expr) else None

    def mean(self, mu, var) -> np.ndarray:
        """E[f(X)]."""
        mu, var = _broadcast(mu, var)
        with np.errstate(under="ignore"):
            return mean(mu, var)

    def variance(self, mu, var) -> np.ndarray:
        """Var[f(X)]."""
        mu, var = _broadcast(mu, var)
        with np.errstate(under="ignore", over="ignore", divide="ignore", invalid="ignore"):
            out, covered = variance_closed_form(mu.ravel(), var.ravel())
        if not np.all(covered):
            out[~covered] = quadrature.gaussian_moments(self._f, [], mu.ravel()[~covered], var.ravel()[~covered])[1]
        return out.reshape(mu.shape)


def _broadcast(mu, var) -> tuple[np.ndarray, np.ndarray]:
    return np.broadcast_arrays(np.asarray(mu, dtype=np.float64), np.asarray(var, dtype=np.float64))
