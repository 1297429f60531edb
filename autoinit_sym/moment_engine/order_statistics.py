"""Moments of maxima of Gaussians: the max of k iid N(0, 1) values, and Clark's max/min of two.

NumPy/SciPy only (no Keras), so the pooling and merging estimators and the notebooks
share one implementation.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import integrate, optimize, special

_LOG_SQRT_2PI = 0.5 * np.log(2.0 * np.pi)


def _log_density(x: float, k: int) -> float:
    """log of k * phi(x) * Phi(x)^(k-1), the density of the max of k iid N(0, 1)."""
    return np.log(k) - 0.5 * x * x - _LOG_SQRT_2PI + (k - 1) * special.log_ndtr(x)


def _mode_and_width(k: int) -> tuple[float, float]:
    """Mode of the max-of-k density and a length scale (1/sqrt of minus its log-curvature)."""
    if k == 1:
        return 0.0, 1.0

    def slope(x: float) -> float:  # d/dx log density = -x + (k-1) phi/Phi
        return -x + (k - 1) * np.exp(_log_mills_inverse(x))

    mode = optimize.brentq(slope, 0.0, 12.0, xtol=1e-14)
    h = 1e-4
    curvature = (slope(mode + h) - slope(mode - h)) / (2 * h)
    return mode, 1.0 / np.sqrt(-curvature)


def _log_mills_inverse(x: float) -> float:
    """log(phi(x) / Phi(x)), stable in both tails."""
    return -0.5 * x * x - _LOG_SQRT_2PI - special.log_ndtr(x)


def _pooled_count(k: int) -> int:
    """``k`` as an int, checked to be a positive integer (the number of pooled values)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer (number of pooled values), got {k!r}")
    return int(k)


@lru_cache(maxsize=4096)
def max_of_iid_normal_moments(k: int) -> tuple[float, float]:
    """(E[M_k], Var[M_k]) for M_k the maximum of k iid standard normal values.

    One-dimensional adaptive quadrature of the density k phi(x) Phi(x)^(k-1), evaluated in
    log space (``log_ndtr``), on an interval of +-40 widths around the mode, split at the
    mode and at +-1, 2, 4 widths; the variance integrates (x - mean)^2 directly, so
    there is no cancellation. Relative error below 1e-9 for 1 <= k <= 10^6 (tested against
    mpmath up to 10^5). Cached per k.
    """
    k = _pooled_count(k)
    if k == 1:
        return 0.0, 1.0
    mode, width = _mode_and_width(k)
    offsets = np.array([-40, -4, -2, -1, 0, 1, 2, 4, 40], dtype=float)
    edges = mode + width * offsets

    def integrate_weighted(weight) -> float:
        total = 0.0
        for lo, hi in zip(edges[:-1], edges[1:]):
            value, _ = integrate.quad(lambda x: weight(x) * np.exp(_log_density(x, k)), lo, hi,
                                      epsabs=1e-16, epsrel=1e-12, limit=200)
            total += value
        return total

    mass = integrate_weighted(lambda x: 1.0)
    mean = integrate_weighted(lambda x: x) / mass
    var = integrate_weighted(lambda x: (x - mean) ** 2) / mass
    return float(mean), float(var)


@lru_cache(maxsize=1024)
def max_of_iid_normal_nodes(k: int, points: int = 401) -> tuple[np.ndarray, np.ndarray]:
    """Quadrature nodes and weights (summing to 1) for expectations over M_k, the max of k
    iid N(0, 1): the trapezoid rule on +-16 widths around the mode of the density
    k phi(x) Phi(x)^(k-1), spectrally accurate for smooth integrands."""
    k = _pooled_count(k)
    mode, width = _mode_and_width(k)
    nodes = np.linspace(mode - 16 * width, mode + 16 * width, points)
    weights = np.exp(_log_density(nodes, k))
    return nodes, weights / weights.sum()


def max_pool_moments(mean: float, var: float, k: int) -> tuple[float, float]:
    """Mean and variance of the max of k iid N(mean, var): mean + sd E[M_k], var Var[M_k]."""
    m_k, v_k = max_of_iid_normal_moments(k)
    return mean + np.sqrt(var) * m_k, var * v_k


def clark_max(mean1, var1, mean2, var2) -> tuple[np.ndarray, np.ndarray]:
    """Exact mean and variance of max(X1, X2) for independent X_i ~ N(mean_i, var_i) (Clark, 1961).

    With theta = sqrt(var1 + var2) and a = (mean1 - mean2) / theta:
    E[max] = mean1 Phi(a) + mean2 Phi(-a) + theta phi(a),
    E[max^2] = (var1 + mean1^2) Phi(a) + (var2 + mean2^2) Phi(-a) + (mean1 + mean2) theta phi(a).
    Evaluated after shifting both by the larger mean, so narrow far-off-centre inputs keep
    their precision. Broadcasts over arrays.
    """
    m1, v1, m2, v2 = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (mean1, var1, mean2, var2)))
    shift = np.maximum(m1, m2)
    d1, d2 = m1 - shift, m2 - shift
    theta = np.sqrt(v1 + v2)
    degenerate = np.where(d1 >= d2, np.inf, -np.inf)  # both constant: the larger one wins
    a = np.where(theta > 0, (d1 - d2) / np.where(theta > 0, theta, 1.0), degenerate)
    p1, p2 = special.ndtr(a), special.ndtr(-a)
    dens = np.exp(-0.5 * a ** 2) / np.sqrt(2 * np.pi)
    first = d1 * p1 + d2 * p2 + theta * dens
    second = (v1 + d1 ** 2) * p1 + (v2 + d2 ** 2) * p2 + (d1 + d2) * theta * dens
    return first + shift, np.maximum(second - first ** 2, 0.0)


def clark_min(mean1, var1, mean2, var2) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of min(X1, X2) = -max(-X1, -X2) for independent Gaussians."""
    mean, var = clark_max(-np.asarray(mean1, dtype=float), var1, -np.asarray(mean2, dtype=float), var2)
    return -mean, var
