"""Activation layers, and the activation map every weighted layer and op uses.

Assumption: the input elements are Gaussian N(mean, var) (independent across the
softmax axis for softmax); outputs are the exact moments of f(X) from the moment
engine (closed form or high-precision quadrature).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, NamedTuple

import keras
import numpy as np

from .base import CLOSED_FORM, EXACT, PASS_THROUGH, QUADRATURE, LayerOutputDistributionEstimator
from .registry import estimates

logger = logging.getLogger("autoinit_sym")

IDENTITY = ("linear", "identity", None)
SOFTMAX = ("softmax", "log_softmax")
AXIS_WISE = ("sparsemax",)  # not elementwise and no rule yet
HERMITE_POINTS = 201
VARIANCE_FLOOR = 1e-12
"""Relative variance given to the moment engine where an input's variance would be ~0 (a
position whose profile is ~0, a conditional variance with all of it shared)."""
SHARED_HERMITE_POINTS = 64
"""Gauss-Hermite nodes over the position-shared offset in :func:`activation_shared`."""


@lru_cache(maxsize=None)
def standard_normal_nodes(points: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Hermite nodes and probability weights for E[g(Z)], Z ~ N(0, 1): E[g(Z)] ~ weights @ g(nodes)
    (exact for polynomials of degree < 2 points). Cached; the arrays are read-only."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(points)
    weights = weights / weights.sum()
    nodes.setflags(write=False)
    weights.setflags(write=False)
    return nodes, weights


def activation_name(activation: Any) -> str | None:
    """The name of ``activation`` (a function, a name, or None for linear)."""
    if activation is None or isinstance(activation, str):
        return activation
    return getattr(activation, "__name__", type(activation).__name__)


def is_keras_activation(activation: Any) -> bool:
    """True for the functions in ``keras.activations`` (and names and None)."""
    if activation is None or isinstance(activation, str):
        return True
    return getattr(keras.activations, activation_name(activation), None) is activation


def activation_statistics(activation: Any, mean: float, var: float, axis_size: int | None = None,
                          **params: Any) -> tuple[float, float, str]:
    """Mean and variance of f(X), X ~ N(mean, var), and how they were obtained.

    ``activation`` is a Keras activation function or name, ``params`` its Keras
    parameters (e.g. ``max_value`` of a ReLU layer). softmax/log_softmax need
    ``axis_size`` (the length of the normalized axis); glu halves the last axis and
    multiplies two independent halves. A function that is not a Keras activation is
    integrated numerically through the function itself (Gauss-Hermite, elementwise).
    """
    if not is_keras_activation(activation):
        return (*_hermite_moments(activation, mean, var), QUADRATURE)
    name = activation_name(activation)
    if name in IDENTITY:
        return float(mean), float(var), EXACT
    if name in SOFTMAX:
        return _softmax(name, mean, var, axis_size)
    if name == "glu":
        return _glu(mean, var)
    if name in AXIS_WISE:
        logger.warning("%s has no estimator yet: passing its input statistics through unchanged", name)
        return float(mean), float(var), PASS_THROUGH
    from autoinit_sym.moment_engine.activation_moments import moments

    try:
        engine = moments(name, **params)
    except (KeyError, ValueError, TypeError) as err:
        raise ValueError(f"activation {name!r} is not known to the moment engine ({err})") from err
    return float(engine.mean(mean, var)), float(engine.variance(mean, var)), engine.method


def activation_shared(activation: Any, mean: float, var: float, shared: float, var_out: float,
                      **params: Any) -> float:
    """Position-shared variance of f(x) for x = mean + a + e, a ~ N(0, shared) common to all
    positions of a channel, e ~ N(0, var - shared) independent: two positions share a, so
    Cov = Var_a(g(a)) with g(a) = E_e[f(mean + a + e)] (the moment engine's mean at
    (mean + a, var - shared)), by Gauss-Hermite over a. Identity keeps ``shared``; a function
    the engine does not know (softmax, glu, custom) keeps the fraction shared / var.
    ``var_out`` is Var f(x), the limit as shared -> var."""
    if var <= 0 or shared <= 0 or var_out <= 0:
        return 0.0
    if shared >= var * (1.0 - 1e-9):
        return var_out
    if not is_keras_activation(activation):
        return var_out * shared / var
    name = activation_name(activation)
    if name in IDENTITY:
        return float(shared)
    if name in SOFTMAX + AXIS_WISE or name == "glu":
        return var_out * shared / var
    from autoinit_sym.moment_engine.activation_moments import moments

    engine = moments(name, **params)
    nodes, weights = standard_normal_nodes(SHARED_HERMITE_POINTS)
    conditional = np.asarray(engine.mean(mean + math.sqrt(shared) * nodes, var - shared), dtype=np.float64)
    centre = float(weights @ conditional)
    return min(max(float(weights @ (conditional - centre) ** 2), 0.0), var_out)


NON_DECREASING = frozenset({"relu", "relu6", "leaky_relu", "elu", "selu", "celu", "softplus", "sigmoid",
                            "hard_sigmoid", "tanh", "hard_tanh", "softsign", "exponential"})
"""Keras activations f with f(x) <= f(y) for x <= y (with their default parameters)."""
NON_NEGATIVE = frozenset({"relu", "relu6", "softplus", "sigmoid", "hard_sigmoid", "exponential"})
"""Keras activations with f >= 0 everywhere (so a zero next to f values never wins a max)."""


@dataclass(frozen=True)
class ActivationOutput:
    """A tensor that is scale * f(z) elementwise: z ~ N(mean, var) with position-shared
    variance ``shared``, f the non-decreasing activation ``name`` with ``params``, and scale
    a non-negative factor per channel with E[scale] = 1, E[scale^2] = ``scale_second``
    (spatial dropout). The max over a window is then scale * f(max z)."""

    name: str
    params: tuple[tuple[str, Any], ...]
    mean: float
    var: float
    shared: float
    non_negative: bool
    scale_second: float = 1.0

    def engine(self) -> Any:
        from autoinit_sym.moment_engine.activation_moments import moments

        return moments(self.name, **dict(self.params))


def activation_output(activation: Any, mean: float, var: float, shared: float,
                      **params: Any) -> ActivationOutput | None:
    """The :class:`ActivationOutput` of a non-decreasing Keras activation applied to
    N(mean, var) with shared variance ``shared``; None for any other activation. A ReLU
    layer is non-decreasing for negative_slope >= 0 and non-negative for negative_slope = 0
    and threshold >= 0."""
    if var <= 0 or not is_keras_activation(activation):
        return None
    name = activation_name(activation)
    if name not in NON_DECREASING or min(params.get("negative_slope", 0.0), params.get("alpha", 0.0)) < 0:
        return None
    non_negative = name in NON_NEGATIVE and not params.get("negative_slope") and params.get("threshold", 0.0) >= 0
    return ActivationOutput(name, tuple(sorted(params.items())), float(mean), float(var),
                            float(min(max(shared, 0.0), var)), non_negative)


class Activated(NamedTuple):
    """What an activation makes of its input: the output's moments, how they were obtained,
    its position-shared variance, its :class:`ActivationOutput` origin (or None), its
    per-position profile (``statistics.border_profile``; None when uniform) and its
    short-range spatial correlation (``statistics.lag_correlation``; None when independent).
    ``sample_shared`` is the part of ``shared`` that varies per sample."""

    mean: float
    var: float
    method: str
    shared: float
    sample_shared: float
    origin: Any
    profile: np.ndarray | None
    lags: Any = None


def adopt(estimator: Any, result: Activated) -> tuple[float, float]:
    """Record an :class:`Activated` result on ``estimator`` (method, shared, per-sample shared,
    origin, profile and lag correlation of its output) and return its (mean, var)."""
    estimator.method, estimator.shared_out = result.method, result.shared
    estimator.sample_shared_out, estimator.origin_out = result.sample_shared, result.origin
    estimator.profile_out, estimator.lags_out = result.profile, result.lags
    return result.mean, result.var


def activated(activation: Any, mean: float, var: float, shared: float, axis_size: int | None = None,
              *, sample_shared: float = 0.0, profile: np.ndarray | None = None, origin: Any = None,
              lags: Any = None, **params: Any) -> Activated:
    """f applied to N(mean, var) with position-shared variance ``shared``: moments by
    :func:`activation_statistics`, shared variance by :func:`activation_shared`, origin by
    :func:`activation_output` (the one rule every activation layer, op and fused activation uses).

    With a per-position second-moment ``profile`` r (mean 1) the input at p is taken as
    N(mean, r(p) (var + mean^2) - mean^2) (the mean uniform over positions, as for any
    pre-activation); the output's moments are then the mixture over positions
    (:func:`profile_moments`) and its profile E[f_p^2] / mean_p E[f_p^2].

    With a ``residual_sums.ShiftedActivation`` ``origin`` (an activation's output plus an
    independent Gaussian branch) the input is not Gaussian: see
    :func:`residual_sums.activation_of_sum`.

    The output keeps the per-sample fraction ``sample_shared / shared`` of its shared variance.
    An input's short-range spatial correlation ``lags`` becomes the output's by
    :func:`spatial_correlation.activated_lags` (kept as it is by the identity), which also adds
    per-sample offsets to the shared variance."""
    per_sample = min(max(sample_shared / shared, 0.0), 1.0) if shared > 0 else 0.0
    out_mean, out_var, method = activation_statistics(activation, mean, var, axis_size, **params)
    gaussian = (out_mean, out_var)
    out_profile = profile
    name = activation_name(activation) if is_keras_activation(activation) else None
    if name in SOFTMAX:
        out_profile = None  # every position's outputs average 1/n
    elif name is not None and name not in IDENTITY + AXIS_WISE and name != "glu":
        from autoinit_sym.moment_engine.activation_moments import moments

        engine = moments(name, **params)
        if profile is not None:
            out_mean, out_var, out_profile = profile_moments(engine, mean, var, profile)
        from autoinit_sym.statistics.residual_sums import ShiftedActivation, activation_of_sum

        if isinstance(origin, ShiftedActivation):
            out_mean, out_var, out_shared, out_origin = activation_of_sum(
                activation, engine, origin, gaussian, (out_mean, out_var), mean, var, shared, **params)
            return Activated(out_mean, out_var, QUADRATURE, out_shared, per_sample * out_shared, out_origin,
                             out_profile)
    out_shared = activation_shared(activation, mean, var, shared, out_var, **params)
    out_sample, out_lags = per_sample * out_shared, lags
    if not (is_keras_activation(activation) and activation_name(activation) in IDENTITY):
        from autoinit_sym.statistics.lag_correlation import activated_lags

        out_lags, offsets = activated_lags(lags, activation, params, mean, var, shared, per_sample * shared,
                                           out_var, out_shared)
        offsets = min(offsets, out_var - out_shared)
        out_shared, out_sample = out_shared + offsets, out_sample + offsets
    return Activated(out_mean, out_var, method, out_shared, out_sample,
                     activation_output(activation, mean, var, shared, **params), out_profile, out_lags)


def profile_moments(engine: Any, mean: float, var: float, profile: np.ndarray,
                    ) -> tuple[float, float, np.ndarray | None]:
    """Pooled (mean, var) and profile of f(x_p) for x_p ~ N(mean, v_p),
    v_p = r(p) (var + mean^2) - mean^2 (floored at a tiny positive value), evaluated once
    per distinct profile value: mean = sum_u w_u m_u, var = sum_u w_u (v_u + (m_u - mean)^2)."""
    from autoinit_sym.statistics.border_profile import distinct, normalized

    values, inverse, fractions = distinct(profile)
    second = var + mean * mean
    inputs = np.maximum(values * second - mean * mean, VARIANCE_FLOOR * max(var, 1e-300))
    means, variances = (np.asarray(a, dtype=np.float64) for a in engine.mean_variance(mean, inputs))
    out_mean = float(fractions @ means)
    out_var = float(fractions @ (variances + (means - out_mean) ** 2))
    seconds = variances + means * means
    return out_mean, out_var, normalized(seconds[inverse].reshape(profile.shape))


def _softmax(name: str, mean: float, var: float, axis_size: int | None) -> tuple[float, float, str]:
    if axis_size is None:
        logger.warning("%s over an axis of unknown size: passing its input statistics through "
                       "unchanged", name)
        return float(mean), float(var), PASS_THROUGH
    try:
        from .softmax import softmax_statistics
    except ImportError:
        logger.warning("softmax estimator unavailable: passing %s input statistics through "
                       "unchanged", name)
        return float(mean), float(var), PASS_THROUGH
    out_mean, out_var, method = softmax_statistics(mean, var, int(axis_size), log=name == "log_softmax")
    return float(out_mean), float(out_var), method


def _glu(mean: float, var: float) -> tuple[float, float, str]:
    """glu(a, b) = a * sigmoid(b), a and b independent N(mean, var):
    E = mean * E[s], E[out^2] = (var + mean^2) * E[s^2]."""
    from autoinit_sym.moment_engine.activation_moments import moments

    sig = moments("sigmoid")
    s_mean, s_second = float(sig.mean(mean, var)), float(sig.second_moment(mean, var))
    out_mean = mean * s_mean
    return out_mean, (var + mean * mean) * s_second - out_mean * out_mean, sig.method


def _hermite_moments(fn: Callable[[Any], Any], mean: float, var: float) -> tuple[float, float]:
    """E[f(X)], Var[f(X)] for X ~ N(mean, var) by Gauss-Hermite quadrature through ``fn``."""
    nodes, weights = standard_normal_nodes(HERMITE_POINTS)
    x = mean + math.sqrt(var) * nodes
    y = np.asarray(keras.ops.convert_to_numpy(fn(keras.ops.convert_to_tensor(x, "float64"))),
                   dtype=np.float64)
    centre = float(np.dot(weights, y))
    return centre, float(np.dot(weights, (y - centre) ** 2))


def _last_axis(shapes: list[tuple]) -> int | None:
    if not shapes or not shapes[0]:
        return None
    return shapes[0][-1]


class _ActivationLayer(LayerOutputDistributionEstimator):
    """Shared rule of the activation layers: :func:`activated` with the layer's function and
    parameters (softmax over the last axis); subclasses say which (:meth:`activation`)."""

    def activation(self) -> tuple[Any, dict[str, Any]]:
        """The activation (function or name) and its Keras parameters."""
        raise NotImplementedError

    def estimate(self, means_in, vars_in):
        activation, params = self.activation()
        return adopt(self, activated(activation, means_in[0], vars_in[0], self.shared(), _last_axis(self.input_shapes),
                                     sample_shared=self.sample_shared(), profile=self.profile(),
                                     origin=self.origin(), lags=self.lags(), **params))


@estimates(keras.layers.Activation)
class ActivationEstimator(_ActivationLayer):
    """Activation(f): moments of f(X) (softmax over the last axis)."""
    method_label = "closed_form or quadrature (per activation; monte_carlo for softmax)"

    def activation(self):
        return self.layer.activation, {}


@estimates(keras.layers.ReLU)
class ReLUEstimator(_ActivationLayer):
    """ReLU(max_value, negative_slope, threshold): piecewise-linear moments in closed form."""
    method = CLOSED_FORM

    def activation(self):
        layer = self.layer
        max_value = None if layer.max_value is None else float(layer.max_value)
        return "relu", dict(negative_slope=float(layer.negative_slope), max_value=max_value,
                            threshold=float(layer.threshold))


@estimates(keras.layers.LeakyReLU)
class LeakyReLUEstimator(_ActivationLayer):
    """LeakyReLU(negative_slope): closed form."""
    method = CLOSED_FORM

    def activation(self):
        return "leaky_relu", dict(negative_slope=float(self.layer.negative_slope))


@estimates(keras.layers.ELU)
class ELUEstimator(_ActivationLayer):
    """ELU(alpha): closed form."""
    method = CLOSED_FORM

    def activation(self):
        return "elu", dict(alpha=float(self.layer.alpha))


@estimates(keras.layers.PReLU)
class PReLUEstimator(LayerOutputDistributionEstimator):
    """PReLU: f(x) = max(x, 0) + a * min(x, 0) with the per-channel slopes a drawn from
    ``alpha_initializer``. The two parts never overlap, so
    E[f] = E[P] + E[a] E[N] and E[f^2] = E[P^2] + E[a^2] E[N^2],
    with P = relu(X), N = -relu(-X)."""

    method = CLOSED_FORM

    def estimate(self, means_in, vars_in):
        from autoinit_sym.moment_engine.activation_moments import moments

        from .weighted import initializer_statistics

        relu = moments("relu")
        mean, var = float(means_in[0]), float(vars_in[0])
        a_mean, a_var = initializer_statistics(self.layer.alpha_initializer, self.layer.alpha)
        pos_mean, pos_second = float(relu.mean(mean, var)), float(relu.second_moment(mean, var))
        neg_mean, neg_second = -float(relu.mean(-mean, var)), float(relu.second_moment(-mean, var))
        out_mean = pos_mean + a_mean * neg_mean
        out_second = pos_second + (a_var + a_mean * a_mean) * neg_second
        self.method = relu.method
        return out_mean, max(out_second - out_mean * out_mean, 0.0)
