"""What several test modules share: running a rule on plain statistics, a test layer and its
reference-style estimator, and the model-quality measures; the high-precision mpmath reference
moments; the case tables, grids and checks of the moment-engine accuracy tests, which the
default tier (``moment_engine/``) and the slow tier (``slow/``) run on different points."""
from __future__ import annotations

import functools
import io
import logging
import math
from typing import Any, Callable, Sequence

import keras
import mpmath
import numpy as np
import sympy

from autoinit_sym import AutoInit, moments
from autoinit_sym.cli import main
from autoinit_sym.estimators import LayerOutputDistributionEstimator
from autoinit_sym.estimators.registry import lookup
from autoinit_sym.measure import measure
from autoinit_sym.moment_engine import catalog
from autoinit_sym.moment_engine.closed_form import ClosedForm, derive
from autoinit_sym.moment_engine.expressions import X, breakpoints
from autoinit_sym.moment_engine.piecewise import split_pieces
from autoinit_sym.statistics.state import TensorState
from autoinit_sym.walk.graph import build_graph


def propagated(rule: Any, means: Sequence[float], variances: Sequence[float], **fields: Sequence[Any]) -> Any:
    """``rule``'s output (mean, var), or a list of pairs for several outputs, for inputs with
    ``means`` and ``variances`` (and per-input record ``fields`` such as ``shared=[0.3]``)."""
    states = [TensorState(float(m), float(v), **{k: vals[i] for k, vals in fields.items()})
              for i, (m, v) in enumerate(zip(means, variances))]
    out = rule.propagate(states)
    records = [out] if isinstance(out, TensorState) else list(out)
    pairs = [(s.mean, s.var) for s in records]
    return pairs[0] if len(pairs) == 1 else pairs


def records(rule: Any, means: Sequence[float], variances: Sequence[float],
            **fields: Sequence[Any]) -> list[TensorState]:
    """``rule``'s output records for inputs built as in :func:`propagated`."""
    states = [TensorState(float(m), float(v), **{k: vals[i] for k, vals in fields.items()})
              for i, (m, v) in enumerate(zip(means, variances))]
    out = rule.propagate(states)
    return [out] if isinstance(out, TensorState) else list(out)


class Doubling(keras.layers.Layer):
    """y = 2 x, behind a check on the values (Python control flow): it cannot be traced, so it
    stands for a layer without a rule, which is probed."""

    def call(self, x):
        if keras.ops.any(keras.ops.isnan(x)):
            raise ValueError("NaN input")
        return x + x

    def compute_output_shape(self, input_shape):
        return input_shape


class DoublingEstimator(LayerOutputDistributionEstimator):
    """Mean 2m, variance 4v; returns only (mean, var), as estimators written for the reference do."""

    def estimate(self, means_in, vars_in):
        return 2.0 * means_in[0], 4.0 * vars_in[0]


DRAWS = tuple(range(16))


def log_errors(model, input_mean=0.0, input_var=1.0, samples=64, seeds=DRAWS) -> dict[str, float]:
    """|log(mean over draws of the measured var / predicted var)| per single-output layer call.

    Each seed redraws the weights (AutoInit's seed) and the noise. A prediction is the
    expectation over the weight draw of the variance pooled over positions, channels and
    samples, so it is compared with the arithmetic mean over draws: for ReLU the pooled second
    moment is exactly linear in each layer's weight variance, so that mean is unbiased, while
    one narrow draw (or a geometric mean) wanders low by the spread of log E[z^2], about 0.6
    at the tenth ReLU convolution of width 64."""
    predicted: dict[str, float] = {}
    measured_vars: dict[str, list[float]] = {}
    for seed in seeds:
        model, estimates = AutoInit(input_data_mean=input_mean, input_data_var=input_var,
                                    weight_init_config={"seed": seed}).initialize_model(model, return_estimates=True)
        measured = measure(model, input_mean, input_var, samples=samples, seed=seed, batch_size=samples)
        for key, estimate in estimates.items():
            meas = measured.get(key)
            if meas is None or isinstance(estimate.var, tuple) or estimate.var <= 0:
                continue
            predicted[key] = estimate.var
            measured_vars.setdefault(key, []).append(meas[1])
    return {key: abs(math.log(np.mean(v) / predicted[key])) for key, v in measured_vars.items()
            if len(v) == len(seeds) and np.mean(v) > 0}


def assert_quality(errors: dict[str, float], median: float = 0.1, p90: float = 0.35) -> None:
    values = np.array(list(errors.values()))
    worst = sorted(errors.items(), key=lambda kv: -kv[1])[:5]
    assert len(values) >= 5
    assert np.median(values) <= median and np.quantile(values, 0.9) <= p90, (
        f"median {np.median(values):.3f}, p90 {np.quantile(values, 0.9):.3f}; worst {worst}")


APPLICATION_DRAWS = {"EfficientNetB0": (0, 1, 2, 3)}
"""Depthwise blocks make a channel's nearby positions correlated (statistics.lag_correlation);
EfficientNetB0's squeeze pools depend on it. Its squeeze-and-excitation reductions have 4 to
48 channels, so one weight draw scatters their variance widely: it is measured over 4 draws
(32x32: median 0.066, p90 0.298; one draw: 0.083 / 0.335)."""


def assert_application_tracks(name: str, caplog: Any) -> None:
    """keras.applications ``name`` at 32x32: every call has a rule, none is probed, and the
    predictions track measurement (:func:`assert_quality`)."""
    model = getattr(keras.applications, name)(weights=None, input_shape=(32, 32, 3), classes=10)
    assert all(lookup(call.operation) is not None for call in build_graph(model).calls if not call.submodel)
    with caplog.at_level(logging.WARNING, logger="autoinit_sym"):
        errors = log_errors(model, samples=64, seeds=APPLICATION_DRAWS.get(name, (0,)))
    assert "No LayerOutputDistributionEstimator" not in caplog.text
    assert_quality(errors)


# ---------------------------------------------------------------------------------------------
# High-precision reference moments (mpmath)
#
# (E[f(X)], Var[f(X)]), X ~ N(mu, var), independent of the engine's numerics: tanh-sinh
# quadrature (mpmath.quad) at ``REFERENCE_DPS`` digits in standardized coordinates, with the
# z-axis split at every breakpoint of f, around x = 0 and at a few scales around each, and
# infinite tails. f itself is evaluated with extra digits far from 0 (where 1 + e^x cancels),
# the integrand is rescaled to order one (mpmath's tolerance is absolute), and the variance is
# E[(f - m)^2] around the high-precision mean m (no cancellation).
# Used by the accuracy tests and the benchmarks (tests/benchmarks/bench_moments.py).
# ---------------------------------------------------------------------------------------------

REFERENCE_DPS = 32


@functools.lru_cache(maxsize=None)
def _mp_function(expr: sympy.Expr) -> Callable:
    return sympy.lambdify(X, expr, modules="mpmath")


def _reference_edges(points: Sequence[float], mu: mpmath.mpf, sigma: mpmath.mpf) -> list:
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
    """(E[f(X)], Var[f(X)]), f = ``expr`` in ``X``, to about ``REFERENCE_DPS`` digits, returned
    as Python floats."""
    return _cached_reference(expr, tuple(breakpoints(expr)), float(mu), float(var))


@functools.lru_cache(maxsize=None)
def _cached_reference(expr: sympy.Expr, points: tuple[float, ...], mu: float,
                      var: float) -> tuple[float, float]:
    f = _mp_function(expr)
    with mpmath.workdps(REFERENCE_DPS):
        mu_mp, sigma = mpmath.mpf(mu), mpmath.sqrt(mpmath.mpf(var))
        edges = [-mpmath.inf, *_reference_edges(points, mu_mp, sigma), mpmath.inf]
        norm = 1 / mpmath.sqrt(2 * mpmath.pi)

        inner = edges[1:-1]
        samples = inner + [(a + b) / 2 for a, b in zip(inner, inner[1:])]

        def expectation(g: Callable) -> mpmath.mpf:
            # mpmath.quad's tolerance is absolute: integrate h / scale, scale ~ max |h|
            def h(z):
                x = mu_mp + sigma * z
                # log(1 + e^x) and the like cancel at x << 0 in mpmath too: evaluate f with the
                # ~|x| / 2.3 extra digits that keep REFERENCE_DPS significant ones (up to |x| = 120)
                with mpmath.workdps(REFERENCE_DPS + int(min(abs(x), 120) / 2)):
                    value = g(f(x))
                return +value * mpmath.exp(-z * z / 2)
            scale = max(abs(h(z)) for z in samples) or mpmath.mpf(1)
            return mpmath.quad(lambda z: h(z) / scale, edges) * scale * norm

        mean = expectation(lambda v: v)
        variance = expectation(lambda v: (v - mean) ** 2)
        return float(mean), float(variance)


# ---------------------------------------------------------------------------------------------
# moments() accuracy against the reference (moment_engine/test_moments.py, slow/test_moments_full_grid.py)
#
# Relative error <= 1e-9 over |mu| <= 3, 0.01 <= var <= 25 (grid A) and <= 1e-6 over
# |mu| <= 100, 1e-8 <= var <= 1e6 (grid B), never NaN/inf/negative; a variance below
# 1e-10 * E[f^2] only has to stay below that level. Values under 1e-30 are judged by absolute
# error. A mean is also allowed float64's cancellation floor, 8 eps * sqrt(E[f^2]) (an odd f at
# mu = 0 has mean 0, which no float sum reproduces).
# ---------------------------------------------------------------------------------------------

GRID_A = [(mu, var) for mu in (-3.0, -1.3, -0.2, 0.0, 0.7, 3.0) for var in (0.01, 0.2, 1.0, 5.0, 25.0)]
GRID_B = [(50.0, 1e-4), (-50.0, 1e-4), (100.0, 1e-8), (-100.0, 1e-8), (-100.0, 1e6), (100.0, 1e6),
          (0.0, 1e6), (0.0, 1e-8), (7.0, 1e-8), (-7.0, 1e-8), (30.0, 1e3), (-30.0, 1e3),
          (-10.0, 4.0), (10.0, 0.5), (-20.0, 100.0), (2.0, 1e4), (0.5, 1e-6), (-2.5, 3e5)]
RTOL_A, RTOL_B = 1e-9, 1e-6
EPS = np.finfo(float).eps

MOMENT_CASES = [(name, dict(catalog.get(name).example)) for name in catalog.names()] + [
    ("celu", {"alpha": 2.0}),
    ("elu", {"alpha": 0.5}),
    ("gelu", {"approximate": True}),
    ("hard_shrink", {"threshold": 1.0}),
    ("leaky_relu", {"negative_slope": 0.01}),
    ("relu", {"negative_slope": 0.1, "max_value": 6.0, "threshold": 0.5}),
    ("relu", {"max_value": 3.0}),
    ("relu", {"threshold": -0.5}),
    ("soft_shrink", {"threshold": 1.0}),
    ("squareplus", {"b": 1.0}),
    ("threshold", {"threshold": 1.0, "default_value": -1.0}),
    ("x*tanh(log(1 + exp(x)))", {}),
    ("a*x**2 + Abs(x - 1)", {"a": 0.5}),
    ("exp(-x**2)", {}),
    ("Heaviside(x) * x**3", {}),
    ("sigmoid(2*x)", {}),
]
"""(activation, parameters): every registered activation at its example parameters, then other
parameters and user expressions. Taken when this module is first imported, so before any test
registers an activation of its own."""
MOMENT_CASE_IDS = [f"{n}{p or ''}".replace(" ", "") for n, p in MOMENT_CASES]


def sampled_points(index: int) -> list[tuple[tuple[float, float], float]]:
    """((mu, var), rtol) of a few points for case ``index``, rotating through the grids so all
    cases together cover them (the default tier)."""
    a = [GRID_A[(7 * index + k) % len(GRID_A)] for k in (0, 13)]
    b = [GRID_B[0], GRID_B[1 + (5 * index) % (len(GRID_B) - 1)]]
    return [(p, RTOL_A) for p in a] + [(p, RTOL_B) for p in b]


def all_points() -> list[tuple[tuple[float, float], float]]:
    """((mu, var), rtol) of every point of both grids (the slow tier)."""
    return [(p, RTOL_A) for p in GRID_A] + [(p, RTOL_B) for p in GRID_B]


def assert_matches_reference(m: Any, mu: float, var: float, rtol: float) -> None:
    """The moments object ``m`` agrees with :func:`reference` at (mu, var) within ``rtol``, as
    the section's comment says; where the reference overflows, ``m`` must not be finite."""
    ref_mean, ref_var = reference(m.expr, mu, var)
    if not (math.isfinite(ref_mean) and math.isfinite(ref_var)):
        assert not np.isfinite(m.mean(mu, var)) or not np.isfinite(m.variance(mu, var))
        return
    mean, variance = float(m.mean(mu, var)), float(m.variance(mu, var))
    where = f"{m.name} {m.params} at mu={mu}, var={var}: got ({mean!r}, {variance!r}), " \
            f"mpmath ({ref_mean!r}, {ref_var!r})"
    assert math.isfinite(mean) and math.isfinite(variance), where
    assert variance >= 0.0, where
    second = ref_var + ref_mean**2
    floor = 8 * EPS * math.sqrt(second)
    assert abs(mean - ref_mean) <= rtol * max(abs(ref_mean), 1e-30) + floor, where
    if ref_var >= 1e-10 * second:
        assert abs(variance - ref_var) <= rtol * max(ref_var, 1e-30), where
    else:
        assert variance <= 1e-10 * second + 1e-30, where


# ---------------------------------------------------------------------------------------------
# Closed-form moments of piecewise exp-polynomial activations against mpmath quadrature
# (moment_engine/test_closed_form.py, slow/test_closed_form_full_grid.py)
# ---------------------------------------------------------------------------------------------

_HALF = sympy.Rational(1, 2)
SELU_ALPHA, SELU_SCALE = 1.6732632423543772, 1.0507009873554805

_x, _P = X, sympy.Piecewise
CLOSED_FORM_ACTIVATIONS = {
    "relu": sympy.Max(0, _x),
    "leaky_relu": sympy.Max(_x, sympy.Float(0.2) * _x),
    "relu6": sympy.Min(6, sympy.Max(0, _x)),
    "relu_layer": _P((6, _x >= 6), (_x, _x >= 1), (sympy.Float(0.3) * (_x - 1), True)),  # max 6, thr 1, slope .3
    "relu_nested": -sympy.Float(0.1) * sympy.Max(0, 1 - _x)
    + sympy.Min(6, sympy.Max(0, _P((_x, _x > 1), (0, True)))),
    "elu": _P((_x, _x > 0), (sympy.exp(_x) - 1, True)),
    "selu": SELU_SCALE * _P((_x, _x > 0), (SELU_ALPHA * (sympy.exp(_x) - 1), True)),
    "celu_2": sympy.Max(0, _x) + sympy.Min(0, 2 * (sympy.exp(_x / 2) - 1)),
    "celu_10": _P((_x, _x > 0), (10 * (sympy.exp(_x / 10) - 1), True)),  # exp(x/10) - 1 cancels if unpaired
    "hard_sigmoid": _P((0, _x < -sympy.Rational(5, 2)), (1, _x > sympy.Rational(5, 2)), (_x / 5 + _HALF, True)),
    "hard_silu": _x * sympy.Min(1, sympy.Max(0, (_x + 3) / 6)),
    "hard_tanh": sympy.Min(1, sympy.Max(-1, _x)),
    "hard_shrink": _x * sympy.Heaviside(sympy.Abs(_x) - _HALF),
    "soft_shrink": sympy.sign(_x) * sympy.Max(sympy.Abs(_x) - _HALF, 0),
    "sparse_plus": _P((0, _x <= -1), ((_x + 1) ** 2 / 4, _x < 1), (_x, True)),
    "sparse_sigmoid": _P((0, _x <= -1), ((_x + 1) / 2, _x < 1), (1, True)),
    "threshold": _P((_x, _x > 1), (-2, True)),
    "exponential": sympy.exp(_x),
    "linear": _x,
    "polynomial": _x**3 - 2 * _x + 1,
    "exp_poly_user": _P((_x * sympy.exp(-_x), _x > 0), (_x**2, True)),
}
"""Keras definitions (keras.src.ops.nn / activations), written in the ways users write them."""

NARROW_GRID = [(0.0, 1.0), (-1.3, 0.04), (2.5, 25.0), (0.7, 0.01)]
EXTREMES = {  # (mu, var) far off centre, very narrow, very wide
    "relu": [(50.0, 1e-4), (50.0, 1e-8), (-100.0, 1e6)],
    "elu": [(-100.0, 1e6), (-1.0, 1e-8)],
    "celu_10": [(0.0, 1e-8), (-0.5, 1e-8)],
    "relu6": [(6.0, 1e-6)],
    "hard_silu": [(3.0, 1e-8)],
    "exponential": [(5.0, 1e-8), (-30.0, 20.0)],
    "sparse_plus": [(-1.0, 1e-8), (-2.5, 0.0235)],
    "hard_shrink": [(0.5, 1e-8)],
    "polynomial": [(100.0, 1e-8)],
}
MORE_EXTREMES = {
    "relu": [(-5.0, 1.0), (1e-5, 1e-8)],
    "elu": [(0.0, 1e-8), (100.0, 1e-8)],
    "selu": [(-100.0, 1e6), (30.0, 1e-6)],
    "relu6": [(-100.0, 1e6), (3.0, 1e-8)],
    "hard_silu": [(-2.0, 1e-8), (100.0, 1e6)],
    "exponential": [(100.0, 1e-8)],
    "sparse_plus": [(0.5, 1e-8), (-3.0, 0.0554)],
    "hard_shrink": [(-100.0, 1e-8)],
    "polynomial": [(-100.0, 1e6)],
}
# Default tier: each activation at one narrow-grid point (in turn) and the extremes; the rest
# (every other narrow-grid point and MORE_EXTREMES) is the slow tier.
CLOSED_FORM_FAST = [(name, *NARROW_GRID[i % len(NARROW_GRID)]) for i, name in enumerate(CLOSED_FORM_ACTIVATIONS)]
CLOSED_FORM_FAST += [(name, mu, var) for name, points in EXTREMES.items() for mu, var in points]
CLOSED_FORM_SLOW = [(name, mu, var) for name in CLOSED_FORM_ACTIVATIONS for mu, var in NARROW_GRID
                    if (name, mu, var) not in CLOSED_FORM_FAST]
CLOSED_FORM_SLOW += [(name, mu, var) for name, points in MORE_EXTREMES.items() for mu, var in points]


def closed_form_reference(expr: sympy.Expr, mu: float, var: float) -> tuple[float, float, float]:
    """(mean, second moment, variance) at 30 digits: mpmath quad over z = (x - mu)/sigma,
    split at the breakpoints and at the peaks of every exp(r*x) * phi against which f, f**2 integrate."""
    with mpmath.workdps(30):
        mu_, sigma = mpmath.mpf(mu), mpmath.sqrt(mpmath.mpf(var))
        f = sympy.lambdify(X, sympy.piecewise_fold(expr.rewrite(sympy.Piecewise)), "mpmath")
        pieces = split_pieces(expr, X)
        points = {mpmath.mpf(0)}
        for piece in pieces[1:]:
            t = (mpmath.mpf(float(piece.lo)) - mu_) / sigma
            points.update(t + d for d in (-2, -0.25, 0, 0.25, 2))
        for rate in {float(a) for piece in pieces for _, a in piece.terms}:
            points.update(r * sigma + d for r in (rate, 2 * rate) for d in (-3, 0, 3))
        grid = [-mpmath.inf] + sorted(p for p in points if abs(p) < 1e4) + [mpmath.inf]
        mean = scaled_quad(lambda z: f(mu_ + sigma * z) * mpmath.npdf(z), grid)
        second = scaled_quad(lambda z: f(mu_ + sigma * z) ** 2 * mpmath.npdf(z), grid)
        return float(mean), float(second), float(second - mean**2)


def scaled_quad(integrand: Callable, grid: Sequence) -> mpmath.mpf:
    """mpmath.quad of integrand / S times S, S its largest value on the grid: mpmath.quad's
    tolerance is absolute, so an integral of 1e-30 would otherwise get only a few digits."""
    scale = max(abs(integrand(p)) for p in grid[1:-1]) or mpmath.mpf(1)
    return mpmath.quad(lambda z: integrand(z) / scale, grid) * scale


def relative_error(got: float, want: float, floor: float = 1e-30) -> float:
    """Relative error, absolute below ``floor`` (1e-30, or the rounding level of the pieces)."""
    return abs(got - want) / abs(want) if abs(want) > floor else abs(got - want) / floor * 1e-30


def cached_closed_form(cache: dict, name: str) -> ClosedForm:
    """derive() of CLOSED_FORM_ACTIVATIONS[name], kept in ``cache`` (a module-scoped fixture's dict)."""
    if name not in cache:
        cache[name] = derive(CLOSED_FORM_ACTIVATIONS[name], X)
    return cache[name]


def assert_closed_form_matches_mpmath(cf: ClosedForm | None, name: str, mu: float, var: float) -> None:
    """``cf`` (derived for CLOSED_FORM_ACTIVATIONS[name]) gives mean, second moment and variance
    at (mu, var) within 1e-9 of :func:`closed_form_reference` on the narrow grid (|mu| <= 3,
    0.01 <= var <= 25), 1e-6 elsewhere; a variance below 1e-10 E[f^2] only has to stay below it."""
    assert cf is not None
    mean, second, variance = closed_form_reference(CLOSED_FORM_ACTIVATIONS[name], mu, var)
    tol = 1e-9 if abs(mu) <= 3 and 0.01 <= var <= 25 else 1e-6
    got_mean, got_second, got_var = (float(cf.mean(mu, var)), float(cf.second_moment(mu, var)),
                                     float(cf.variance(mu, var)))
    # A mean that vanishes by cancellation between pieces (selu at 0, 1) is judged on the scale of f.
    assert relative_error(got_mean, mean, max(1e-30, 1e-6 * np.sqrt(second))) <= tol, (got_mean, mean)
    assert relative_error(got_second, second) <= tol, (got_second, second)
    assert got_var >= 0
    if variance >= 1e-10 * second:
        assert relative_error(got_var, variance) <= tol, (got_var, variance)
    else:
        assert got_var < 1e-10 * second


# ---------------------------------------------------------------------------------------------
# GELU closed form against a 50-digit mpmath reference
# (moment_engine/test_gelu_closed_form.py, slow/test_gelu_full_grid.py)
#
# Relative error <= 1e-9 for E[f(X)] and Var[f(X)], f = x Phi(x), on GELU_GRID. Values below
# float64's normal range (2.2e-308; mu = -40 with var <= 0.01 gives 1e-345 to 1e-700) cannot
# carry a relative precision; there the returned value must be within 2.2e-308 of the
# reference (it is 0 or a subnormal).
# ---------------------------------------------------------------------------------------------

GELU_MUS = (-40.0, -8.0, -3.0, -1.0, 0.0, 0.5, 2.0, 8.0, 40.0)
GELU_VARS = (1e-8, 1e-4, 0.01, 1.0, 25.0, 1e4)
GELU_GRID = [(mu, var) for mu in GELU_MUS for var in GELU_VARS]
# one point per path: chaos series (narrow, and higher terms negligible), left-tail Gauss-Hermite,
# the Owen's T formula, the split at x = 0, values below float64's range
GELU_SAMPLE = [(-8.0, 1e-8), (40.0, 1e-8), (-3.0, 0.01), (-40.0, 1.0), (0.0, 1.0), (2.0, 25.0),
               (0.5, 1e4), (-40.0, 25.0), (-40.0, 1e-4), (40.0, 0.01)]
GELU_RTOL = 1e-9
NORMAL_MIN = np.finfo(float).tiny
GELU_DPS = 50


@functools.lru_cache(maxsize=None)
def gelu_reference(mu: float, var: float) -> tuple[mpmath.mpf, mpmath.mpf]:
    """(E f, Var f) by mpmath.quad over the Gaussian in z (x = mu + s z) at GELU_DPS digits, split
    at z = 0 (x = mu), at x = 0 and around the left-tail peaks of f p and f^2 p (there f ~ -phi(x),
    so f^c p ~ exp(-c x^2/2) p peaks at x = mu/(1 + c s^2), z-width 1/sqrt(1 + c s^2)). Integrands
    are rescaled to order one (quad's tolerance is absolute); the variance is E[(f - m)^2]."""
    with mpmath.workdps(GELU_DPS):
        m_mu, s = mpmath.mpf(mu), mpmath.sqrt(mpmath.mpf(var))
        points = {mpmath.mpf(0), -m_mu / s}
        for c in (1, 2):
            peak, width = (m_mu / (1 + c * s * s) - m_mu) / s, 1 / mpmath.sqrt(1 + c * s * s)
            points.update(peak + k * width for k in (-8, -2, 0, 2, 8))
        points = sorted(p for p in points if abs(p) < 1e6)
        edges = [-mpmath.inf, *points, mpmath.inf]

        def expectation(g):
            def h(z):
                x = m_mu + s * z
                return g(x * mpmath.ncdf(x)) * mpmath.exp(-z * z / 2)
            scale = max(abs(h(z)) for z in points) or mpmath.mpf(1)
            return mpmath.quad(lambda z: h(z) / scale, edges) * scale / mpmath.sqrt(2 * mpmath.pi)

        mean = expectation(lambda v: v)
        return mean, expectation(lambda v: (v - mean) ** 2)


def gelu_error(got: float, ref: mpmath.mpf) -> float:
    """Relative error; absolute error in units of NORMAL_MIN where the reference is below it."""
    with mpmath.workdps(GELU_DPS):
        if abs(ref) < NORMAL_MIN:
            return float(abs(got - ref) / NORMAL_MIN)
        return float(abs((mpmath.mpf(got) - ref) / ref))


def check_gelu(points: Sequence[tuple[float, float]]) -> None:
    """moments("gelu") is within GELU_RTOL of :func:`gelu_reference` at every (mu, var) of
    ``points`` (evaluated in one vectorized call); the failures are listed together."""
    m = moments("gelu")
    mu, var = np.array(points).T
    mean, variance = m.mean(mu, var), m.variance(mu, var)
    bad = []
    for i, (a, b) in enumerate(points):
        ref_mean, ref_var = gelu_reference(a, b)
        errors = gelu_error(float(mean[i]), ref_mean), gelu_error(float(variance[i]), ref_var)
        if not max(errors) <= GELU_RTOL:
            bad.append(f"mu={a}, var={b}: got ({mean[i]!r}, {variance[i]!r}), mpmath "
                       f"({mpmath.nstr(ref_mean, 17)}, {mpmath.nstr(ref_var, 17)}), errors {errors}")
    assert not bad, "\n".join(bad)


def run_cli(capfd: Any, *argv: Any) -> tuple[int, str, str]:
    """Exit status, stdout and stderr (file-descriptor level, through pytest's ``capfd``) of one
    in-process ``autoinit-sym`` run; arguments may be paths."""
    try:
        status = main([str(a) for a in argv])
    except SystemExit as stop:
        status = stop.code
    out, err = capfd.readouterr()
    return status, out, err


def model_state(model: Any) -> tuple:
    """What tracing must leave as it was: the model's config, its summary text and every layer's
    inbound/outbound node counts."""
    layers = list(model._flatten_layers(include_self=True, recursive=True))
    text = io.StringIO()
    model.summary(print_fn=lambda line, **_: text.write(line + "\n"))
    return (model.get_config(), text.getvalue(),
            [(len(layer._inbound_nodes), len(layer._outbound_nodes)) for layer in layers])
