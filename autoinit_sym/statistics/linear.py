"""Moments of linear maps, products, mixtures, normalizations and masks of independent Gaussian
tensors: the algebra the merge, normalization, regularization and op rules share.

Notation: inputs x_i with means m_i, variances v_i, position-shared variances s_i
(``statistics.state``); all inputs independent unless they are the same tensor.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import mpmath
import numpy as np
from scipy import integrate, stats

from autoinit_sym.statistics.activation import ActivationOutput
from autoinit_sym.statistics.methods import CLOSED_FORM, EXACT, QUADRATURE
from autoinit_sym.statistics.residual_sums import ShiftedActivation


def linear_moments(coefficients: Sequence[float], means: Sequence[float], variances: Sequence[float],
                   groups: list[list[int]]) -> tuple[float, float]:
    """sum_i c_i x_i: mean sum c_i m_i; var sum over distinct tensors g of (sum_{i in g} c_i)^2 v_g."""
    mean = sum(c * m for c, m in zip(coefficients, means))
    var = sum(sum(coefficients[i] for i in g) ** 2 * variances[g[0]] for g in groups)
    return float(mean), float(var)


def product_moments(means: Sequence[float], variances: Sequence[float],
                    groups: list[list[int]]) -> tuple[float, float]:
    """prod_i x_i over independent distinct tensors, a tensor used p times entering as x^p:
    mean prod E[x_g^p], var prod E[x_g^2p] - mean^2 (Gaussian raw moments)."""
    first, second = 1.0, 1.0
    for g in groups:
        m, sd, p = means[g[0]], math.sqrt(variances[g[0]]), len(g)
        first *= stats.norm.moment(p, loc=m, scale=sd) if sd > 0 else m ** p
        second *= stats.norm.moment(2 * p, loc=m, scale=sd) if sd > 0 else m ** (2 * p)
    return float(first), float(max(second - first ** 2, 0.0))


def contracted_product_moments(n: int, means: Sequence[float], variances: Sequence[float],
                               same_tensor: bool) -> tuple[float, float]:
    """sum over n independent terms x_k y_k (a dot product / matrix product over length n):
    n times the moments of one product (:func:`product_moments`; x_k^2 when x is y)."""
    mean, var = product_moments(means, variances, [[0, 1]] if same_tensor else [[0], [1]])
    return n * mean, n * var


def mixture_moments(weights: Sequence[float], means: Sequence[float], variances: Sequence[float]
                    ) -> tuple[float, float]:
    """A size-weighted mixture: mean sum w_i m_i, var sum w_i v_i + sum w_i (m_i - mean)^2."""
    w = np.asarray(weights, dtype=float) / np.sum(weights)
    m, v = np.asarray(means, dtype=float), np.asarray(variances, dtype=float)
    mean = float(w @ m)
    return mean, float(w @ v + w @ (m - mean) ** 2)


def gate_fourth_ratio(mean: float, var: float, fixed: float) -> float:
    """E[a^4] / E[a^2]^2 over samples for a factor a = mean + c + e, c ~ N(0, fixed) fixed per
    channel and e ~ N(0, var - fixed) per sample (Gaussian moments, averaged over channels):
    1 + (4 (mean^2 + fixed) v + 2 v^2) / (mean^2 + var)^2 with v = var - fixed."""
    per_sample = max(var - fixed, 0.0)
    second = mean * mean + var
    if not second > 0:
        return 1.0
    return 1.0 + (4.0 * (mean * mean + max(fixed, 0.0)) * per_sample + 2.0 * per_sample ** 2) / second ** 2


def shifted_origin(coefficients: Sequence[float], means: Sequence[float], variances: Sequence[float],
                   shared: Sequence[float], origins: Sequence[Any]) -> ShiftedActivation | None:
    """sum_i c_i x_i of independent inputs, exactly one of them an unscaled activation output
    f(z) and the rest Gaussian: a ``residual_sums.ShiftedActivation`` (c f(z) + N(sum_j c_j m_j,
    sum_j c_j^2 v_j), shared part sum_j c_j^2 s_j), which the next activation integrates
    exactly; None otherwise."""
    found = [i for i, o in enumerate(origins) if isinstance(o, ActivationOutput)]
    if len(found) != 1 or origins[found[0]].scale_second != 1.0 or len(origins) != len(means):
        return None
    i = found[0]
    others = [j for j in range(len(means)) if j != i]
    noise_var = sum(coefficients[j] ** 2 * variances[j] for j in others)
    if not noise_var > 0:
        return None
    return ShiftedActivation(origins[i], coefficients[i], sum(coefficients[j] * means[j] for j in others),
                             noise_var, sum(coefficients[j] ** 2 * shared[j] for j in others))


def affine_moments(scale: Any, offset: Any, mean: float, var: float) -> tuple[float, float]:
    """Moments of ``scale * x + offset`` for x ~ (mean, var), mixed over the broadcast positions.

    mean = avg(scale) mean + avg(offset); var = avg(scale^2) var + Var_positions(scale mean + offset).
    """
    a, b = np.broadcast_arrays(np.asarray(scale, dtype=float), np.asarray(offset, dtype=float))
    centres = a * mean + b
    return float(centres.mean()), float((a ** 2).mean() * var + centres.var())


def affine_shared(scale: Any, offset: Any, mean: float, shared: float) -> float:
    """Position-shared variance of ``scale * x + offset`` (per-channel arrays) for x with mean
    ``mean`` and shared variance ``shared``: avg(scale^2) shared + Var_channels(scale mean + offset)."""
    a, b = np.broadcast_arrays(np.asarray(scale, dtype=float), np.asarray(offset, dtype=float))
    return float((a ** 2).mean() * shared + (a * mean + b).var())


def standardized_second_moment(n: int | None, var: float, epsilon: float) -> tuple[float, str]:
    """E[s^2 / (s^2 + eps)] for s^2 the biased sample variance of n iid N(., var) values, and how.

    This is the second moment of (x - mean_n) / sqrt(s^2 + eps). With n*s^2/var ~ chi^2(n-1) it is
    a one-dimensional integral (quadrature); with n unknown (batch statistics) it is the
    large-n limit var / (var + eps) (closed form).
    """
    if epsilon <= 0:
        return (0.0 if n == 1 else 1.0), EXACT
    if n is None:
        return var / (var + epsilon), CLOSED_FORM
    if n <= 1 or var <= 0:
        return 0.0, EXACT
    c = n * epsilon / var
    dof = n - 1
    dist = stats.chi2(dof)
    centre, spread = float(dof), math.sqrt(2.0 * dof)
    lo, hi = max(0.0, centre - 40 * spread), centre + 40 * spread
    points = [p for p in (centre - 3 * spread, centre, centre + 3 * spread) if lo < p < hi]
    value, _ = integrate.quad(lambda q: q / (q + c) * dist.pdf(q), lo, hi, points=points,
                              epsabs=0.0, epsrel=1e-10, limit=200)
    return value, QUADRATURE


def direction_moments(mean: float, var: float, d: int) -> tuple[float, float]:
    """(E[u_i], E[u_i u_j], i != j) for u = x / ||x||, x of d iid N(mean, var) elements.

    Closed form (projected normal): with delta = sqrt(d) |mean| / sd,
    E[u_i] = sign(mean) / sqrt(d) * delta / sqrt(2) * Gamma((d+1)/2) / Gamma(d/2+1) * 1F1(1/2; d/2+1; -delta^2/2),
    E[u_i u_j] = (1 - 1F1(1; d/2+1; -delta^2/2)) / d; and E[u_i^2] = 1/d exactly.
    """
    if var <= 0:
        return math.copysign(1.0, mean) / math.sqrt(d) if mean else 0.0, 1.0 / d if mean else 0.0
    delta = math.sqrt(d) * abs(mean) / math.sqrt(var)
    z = -delta * delta / 2
    with mpmath.workdps(30):
        first = (delta / mpmath.sqrt(2) * mpmath.exp(mpmath.loggamma((d + 1) / 2) - mpmath.loggamma(d / 2 + 1))
                 * mpmath.hyp1f1(0.5, d / 2 + 1, z))
        cross = (1 - mpmath.hyp1f1(1, d / 2 + 1, z)) / d
    return math.copysign(float(first), mean) / math.sqrt(d), float(cross)


def inverted_dropout_moments(mean: float, var: float, rate: float) -> tuple[float, float]:
    """x * mask / (1 - rate), mask ~ Bernoulli(1 - rate): mean m, var (v + m^2) / (1 - rate) - m^2.

    GaussianDropout (x * N(1, rate / (1 - rate))) has the same two moments."""
    return mean, (var + mean ** 2) / (1.0 - rate) - mean ** 2
