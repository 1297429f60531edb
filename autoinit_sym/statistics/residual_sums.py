"""Activations of residual sums: g(c f(z) + n), an activation's output plus Gaussian branches.

In a residual block without normalization, x + branch(x) adds a ReLU output (non-negative,
with an atom at 0) to a Gaussian branch; the activation after the sum does not see a
Gaussian, and treating it as one misses the variance by +0.07 in log per block (measured
on ReLU residual nets). Here the sum x = c f(z) + n, z ~ N(mu_z, v_z) with position-shared
part s_z, n ~ N(mu_n, v_n) with position-shared part s_n, is integrated exactly:

    E[g^k] = E_z[ E_n[g(c f(z) + n)^k] ],

the inner expectation by the moment engine's Gaussian moments of g, the outer by the
graded quadrature (``autoinit_sym.moment_engine.quadrature``) split at f's breakpoints. The output's
position-shared variance is Var over the offsets (a_z, a_n) of E[g | a_z, a_n]
(Gauss-Hermite over both). The output is then recorded as the activation f'(z') whose
mean, variance and shared variance match (moment matching), so the next block's sum is
integrated the same way.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

import numpy as np
from scipy.optimize import brentq

from autoinit_sym.moment_engine.expressions import numpy_function
from autoinit_sym.moment_engine.nodes import standard_normal_nodes
from autoinit_sym.moment_engine.quadrature import gaussian_moments
from autoinit_sym.statistics.activation import (VARIANCE_FLOOR, Activation, ActivationOutput, activation_output,
                                                activation_shared)

OFFSET_NODES = 12
"""Gauss-Hermite nodes per position-shared offset in :func:`shifted_shared`."""
MATCH_TOLERANCE = 1e-20
"""Squared relative residual at which :func:`matched_output` stops."""
MATCH_ITERATIONS = 30
"""Newton steps :func:`matched_output` takes at most before keeping the Gaussian guess."""
NEWTON_STEP = 1e-7
"""Relative finite-difference step of the Newton Jacobian."""


@dataclass(frozen=True)
class ShiftedActivation:
    """A tensor c a + n elementwise: a an unscaled :class:`ActivationOutput` f(z), c a
    coefficient, n ~ N(mean, var) independent of a with position-shared variance ``shared``
    (the other branches of a sum)."""

    activation: ActivationOutput
    coefficient: float
    mean: float
    var: float
    shared: float = 0.0


@lru_cache(maxsize=None)
def _pointwise(engine: Any) -> Callable[[np.ndarray], np.ndarray]:
    """f itself, as NumPy code, from the engine's expression."""
    return numpy_function(engine.expr)


def _conditional(engine: Any, origin: ShiftedActivation, noise_mean: float, noise_var: float,
                 part: str) -> Callable[[np.ndarray], np.ndarray]:
    """z -> E_n[g(c f(z) + n)] (``part`` "mean") or Var_n[...] ("variance"), n ~ N(noise_mean, noise_var)."""
    f = _pointwise(origin.activation.engine())
    moment = engine.mean if part == "mean" else engine.variance
    return lambda z: moment(origin.coefficient * f(z) + noise_mean, noise_var)


def shifted_moments(engine: Any, origin: ShiftedActivation) -> tuple[float, float]:
    """(E[g(x)], Var[g(x)]) for x = c f(z) + n: with h(z) = E_n[g] and u(z) = Var_n[g],
    E[g] = E_z[h] and Var[g] = E_z[u] + Var_z[h] (no cancellation)."""
    inner = origin.activation
    breaks, mu, var = inner.engine().breakpoints, np.array([inner.mean]), np.array([inner.var])
    mean, spread = gaussian_moments(_conditional(engine, origin, origin.mean, origin.var, "mean"), breaks, mu, var)
    within, _ = gaussian_moments(_conditional(engine, origin, origin.mean, origin.var, "variance"), breaks, mu, var)
    return float(mean[0]), float(within[0] + spread[0])


def shifted_shared(engine: Any, origin: ShiftedActivation, out_var: float) -> float:
    """Position-shared variance of g(c f(z) + n): Var over the offsets a_z ~ N(0, s_z),
    a_n ~ N(0, s_n) of G(a_z, a_n) = E[g | a_z, a_n] (Gauss-Hermite in both, the graded
    quadrature over the rest of z), clipped to [0, out_var]."""
    inner = origin.activation
    s_z, s_n = min(inner.shared, inner.var), min(origin.shared, origin.var)
    if s_z <= 0 and s_n <= 0:
        return 0.0
    nodes, weights = standard_normal_nodes(OFFSET_NODES)
    z_rows = inner.mean + math.sqrt(s_z) * nodes if s_z > 0 else np.array([inner.mean])
    z_weights = weights if s_z > 0 else np.ones(1)
    z_var = np.full(z_rows.size, max(inner.var - s_z, VARIANCE_FLOOR * inner.var))
    n_nodes, n_weights = (nodes, weights) if s_n > 0 else (np.zeros(1), np.ones(1))
    n_var = max(origin.var - s_n, VARIANCE_FLOOR * origin.var)
    grid = np.array([gaussian_moments(_conditional(engine, origin, origin.mean + math.sqrt(max(s_n, 0.0)) * u,
                                                   n_var, "mean"),
                                      inner.engine().breakpoints, z_rows, z_var)[0] for u in n_nodes])
    centre = float(n_weights @ grid @ z_weights)
    return min(max(float(n_weights @ (grid - centre) ** 2 @ z_weights), 0.0), out_var)


def matched_output(activation: Activation, out_mean: float, out_var: float, out_shared: float, mean: float,
                   var: float, shared: float) -> ActivationOutput | None:
    """The :class:`ActivationOutput` f(z'), z' ~ N(mu, v) with shared part s, whose mean,
    variance and shared variance are the given ones (moment matching by Newton's method from
    the Gaussian guess N(mean, var)): the law the next residual sum or max pool assumes for
    this activation's non-Gaussian input. The Gaussian guess where nothing matches; None for
    activations without an origin."""
    guess = activation_output(activation, mean, var, shared)
    second = out_var + out_mean ** 2
    if guess is None or not second > 0:
        return guess
    engine = guess.engine()
    scale = math.sqrt(second)

    def residuals(mu: np.ndarray, log_v: np.ndarray) -> np.ndarray:
        v = np.exp(log_v)
        return np.stack([(np.asarray(engine.mean(mu, v)) - out_mean) / scale,
                         np.asarray(engine.second_moment(mu, v)) / second - 1.0])

    point = np.array([mean, math.log(var)])
    for _ in range(MATCH_ITERATIONS):
        step = NEWTON_STEP * np.array([scale, 1.0])
        values = residuals(point[0] + np.array([0.0, step[0], 0.0]), point[1] + np.array([0.0, 0.0, step[1]]))
        if not np.all(np.isfinite(values)):
            return guess
        if float(values[:, 0] @ values[:, 0]) <= MATCH_TOLERANCE:
            break
        jacobian = (values[:, 1:] - values[:, :1]) / step
        try:
            point = point - np.linalg.solve(jacobian, values[:, 0])
        except np.linalg.LinAlgError:
            return guess
    else:
        return guess
    mu, v = float(point[0]), math.exp(float(point[1]))
    target = min(max(out_shared, 0.0), out_var)

    def excess(s: float) -> float:
        return activation_shared(activation, mu, v, s, out_var) - target

    s = 0.0 if target <= 0 else v if target >= out_var else brentq(excess, 0.0, v, xtol=1e-12 * v)
    return dataclasses.replace(guess, mean=mu, var=v, shared=s)


def activation_of_sum(activation: Activation, origin: ShiftedActivation, gaussian: tuple[float, float],
                      per_position: tuple[float, float], mean: float, var: float,
                      shared: float) -> tuple[float, float, float, ActivationOutput | None]:
    """(mean, var, shared, origin) of g(x) for the residual sum x (``origin``): the pooled
    moments of :func:`shifted_moments`, carried to ``per_position`` (the profile-weighted
    moments computed as if x were Gaussian, whose pooled value is ``gaussian``) by the ratios
    of mean and second moment, which is exact for positively homogeneous f and g at zero-mean
    pre-activations (every position is then a rescaled copy of the same sum)."""
    engine = activation.engine()
    exact_mean, exact_var = shifted_moments(engine, origin)
    exact_shared = shifted_shared(engine, origin, exact_var)
    (g_mean, g_var), (p_mean, p_var) = gaussian, per_position
    g_second = g_var + g_mean ** 2
    out_mean = p_mean * exact_mean / g_mean if g_mean != 0 else exact_mean
    second = (p_var + p_mean ** 2) * (exact_var + exact_mean ** 2) / g_second if g_second > 0 else exact_var
    out_var = max(second - out_mean ** 2, 0.0)
    out_shared = exact_shared * out_var / exact_var if exact_var > 0 else 0.0
    matched = matched_output(activation, exact_mean, exact_var, exact_shared, mean, var, shared)
    return out_mean, out_var, min(out_shared, out_var), matched
