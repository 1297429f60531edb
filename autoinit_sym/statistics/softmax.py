"""Softmax and log-softmax: mean exact, second moment by conditional Monte Carlo.

For logits z_1..z_n iid N(mu, var) over the softmax axis (n is the size of that
axis only), s_i = e^{z_i} / sum_j e^{z_j}. Softmax and log-softmax are invariant to
a common shift of the logits, so ``mu`` does not matter. By symmetry E[s_i] = 1/n
exactly. The second moment has no closed form; conditioning on L = log sum_{j>1}
e^{z_j} (the other n - 1 logits) reduces it to one-dimensional Gaussian integrals,

    s_1 = sigmoid(z_1 - L),        log s_1 = -softplus(L - z_1),

whose moments the moment engine evaluates by quadrature on a grid of L (a cubic
spline carries them to every sampled L). Only L
is sampled (a seeded, vectorized sum of n - 1 lognormals), and sampling stops once
the standard error is below 0.3% of the result (or a draw budget is spent), so the
result is reproducible and within 1%. Results are cached by (n, var rounded to
3 significant digits).
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Callable

import numpy as np
from scipy.interpolate import CubicSpline

from autoinit_sym.moment_engine.activation_moments import ActivationMoments, moments
from autoinit_sym.statistics.methods import CLOSED_FORM, EXACT, MONTE_CARLO, QUADRATURE

SEED = 20230207
"""Fixed seed of the sampled log-sum-exp of the other logits (results are reproducible)."""

RELATIVE_ERROR = 0.003   # stop once the standard error is below this fraction of the result
MIN_ROWS = 256           # rows (samples of L) per chunk at least
MAX_ROWS = 200_000       # rows drawn at most
MAX_DRAWS = 30_000_000   # lognormal draws at most (rows * (n - 1))
CHUNK_DRAWS = 2_000_000  # lognormal draws per chunk (16 MB of float64)
SMALL_VAR = 1e-4         # below this logit variance the first-order expansion is exact to ~1e-4
GRID_STEP = 0.02         # spline step in L (times max(1, sd)) for the conditional terms


def _moments(name: str) -> ActivationMoments:
    return moments(name)


def _softmax_terms(L: np.ndarray, var: float, n: int) -> tuple[np.ndarray, np.ndarray, float]:
    """E[s | L] and E[(s - 1/n)^2 | L] for s = sigmoid(z - L), z ~ N(0, var)."""
    sigmoid = _moments("sigmoid")
    center = 1.0 / n
    first = sigmoid.mean(-L, var)
    second = sigmoid.second_moment(-L, var) - 2 * center * first + center * center
    return first, second, center


def _log_softmax_terms(L: np.ndarray, var: float, n: int) -> tuple[np.ndarray, np.ndarray, float]:
    """E[log s | L] and E[(log s + log n)^2 | L] for log s = -softplus(L - z), z ~ N(0, var)."""
    softplus = _moments("softplus")
    center = -math.log(n)
    first = -softplus.mean(L, var)
    second = softplus.second_moment(L, var) - 2 * center * first + center * center
    return first, second, center


Terms = Callable[[np.ndarray, float, int], tuple[np.ndarray, np.ndarray, float]]


def _interpolated(terms: Terms, L: np.ndarray, var: float, n: int
                  ) -> tuple[np.ndarray, np.ndarray, float]:
    """``terms`` at the points ``L``, by a cubic spline through its values on a grid of
    step GRID_STEP * max(1, sd) spanning them (the terms are Gaussian-smoothed sigmoids,
    smooth in L on that scale; the moment engine then runs on a few hundred points
    instead of every sample)."""
    step = GRID_STEP * max(1.0, math.sqrt(var))
    lo, hi = math.floor(L.min() / step) - 2, math.ceil(L.max() / step) + 2
    grid = np.arange(lo, hi + 1) * step
    first, second, center = terms(grid, var, n)
    return CubicSpline(grid, first)(L), CubicSpline(grid, second)(L), center


def _row_log_sum_exp(z: np.ndarray, scale: float) -> np.ndarray:
    """log sum_j exp(scale * z[i, j]) per row i, computed in place in ``z`` (a fresh draw):
    the row maximum m is factored out, m + log sum_j exp(scale * z - m), so nothing overflows
    (scipy's logsumexp computes the same, with more passes and copies over the array)."""
    z *= scale
    top = z.max(axis=1)
    z -= top[:, None]
    np.exp(z, out=z)
    return top + np.log(z.sum(axis=1))


def _conditional_monte_carlo(terms: Terms, var: float, n: int, exact_mean: float | None
                             ) -> tuple[float, float]:
    """(mean, var) of one output element from conditional terms averaged over sampled L."""
    rng = np.random.default_rng(SEED)
    std = math.sqrt(var)
    rows_per_chunk = max(MIN_ROWS, min(MAX_ROWS, CHUNK_DRAWS // (n - 1)))
    firsts, seconds = [], []
    rows = 0
    while True:
        size = min(rows_per_chunk, MAX_ROWS - rows)
        L = _row_log_sum_exp(rng.standard_normal((size, n - 1)), std)
        first, second, center = _interpolated(terms, L, var, n)
        firsts.append(first)
        seconds.append(second)
        rows += size
        f, s = np.concatenate(firsts), np.concatenate(seconds)
        mean = exact_mean if exact_mean is not None else float(f.mean())
        variance = float(s.mean()) - (mean - center) ** 2
        error_var = s.std() / math.sqrt(rows)
        error_mean = 0.0 if exact_mean is not None else f.std() / math.sqrt(rows)
        converged = (error_var <= RELATIVE_ERROR * variance
                     and error_mean <= RELATIVE_ERROR * max(abs(mean), math.sqrt(variance)))
        if converged or rows >= MAX_ROWS or rows * (n - 1) >= MAX_DRAWS:
            return mean, variance


@lru_cache(maxsize=1024)
def _cached(n: int, var: float, log: bool) -> tuple[float, float, str]:
    if n == 1 or var == 0.0:
        return (-math.log(n), 0.0, EXACT) if log else (1.0 / n, 0.0, EXACT)
    if var < SMALL_VAR:  # s_i ~ 1/n + (z_i - mean z)/n to first order
        if log:
            return -math.log(n) - var * (n - 1) / (2 * n), var * (n - 1) / n, CLOSED_FORM
        return 1.0 / n, var * (n - 1) / n**3, CLOSED_FORM
    if n == 2:  # s_1 = sigmoid(z_1 - z_2), log s_1 = -softplus(z_2 - z_1), z_1 - z_2 ~ N(0, 2 var)
        if log:
            softplus = _moments("softplus")
            return -float(softplus.mean(0.0, 2 * var)), float(softplus.variance(0.0, 2 * var)), QUADRATURE
        return 0.5, float(_moments("sigmoid").variance(0.0, 2 * var)), QUADRATURE
    if log:
        mean, variance = _conditional_monte_carlo(_log_softmax_terms, var, n, None)
    else:
        mean, variance = _conditional_monte_carlo(_softmax_terms, var, n, 1.0 / n)
    return mean, variance, MONTE_CARLO


def softmax_statistics(mean: float, var: float, n: int, log: bool = False) -> tuple[float, float, str]:
    """(mean, var, method) of one softmax (or log-softmax) output over an axis of size ``n``.

    Logits iid N(mean, var); ``mean`` does not matter (shift invariance). Softmax mean
    is exactly 1/n; the variance comes from the conditional Monte Carlo described in
    the module docstring (standard error <= 0.3%), exact for n = 1 or var = 0, by
    quadrature for n = 2.
    """
    if not (isinstance(n, (int, np.integer)) and n >= 1):
        raise ValueError(f"softmax axis size n must be a positive int, got {n!r}")
    if not (math.isfinite(var) and var >= 0):
        raise ValueError(f"softmax input variance must be finite and >= 0, got {var!r}")
    if not math.isfinite(mean):
        raise ValueError(f"softmax input mean must be finite, got {mean!r}")
    rounded = float(f"{float(var):.3g}")
    return _cached(int(n), rounded, bool(log))


def mean_sum_of_squares(var: float, n: int) -> tuple[float, str]:
    """E[sum_j s_j^2] = n Var(s) + 1/n for a softmax over n iid N(., var) logits, and
    how Var(s) was obtained."""
    _, variance, method = softmax_statistics(0.0, var, n)
    return n * variance + 1.0 / n, method
