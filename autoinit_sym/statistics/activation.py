"""Activations of a Gaussian: what an activation is (classified once) and its output's moments.

Every user (activation layers, fused activations of weighted layers, activation ops, lag
correlations, residual sums) reads one :class:`Activation`, made by :func:`classify`, which
says which of these an activation is:

- ``identity``: linear / None: the input unchanged;
- ``softmax``: softmax or log-softmax over an axis (``statistics.softmax``);
- ``glu``: halves of the last axis, a * sigmoid(b);
- ``axis_wise``: not elementwise and without a rule (sparsemax): passed through;
- ``engine``: an elementwise function the moment engine knows (closed form or quadrature);
- ``foreign``: any other callable, integrated numerically through the function itself.

Assumption: the input elements are Gaussian N(mean, var) (independent across the softmax
axis for softmax); the moments are exact for that input.
"""
from __future__ import annotations

import logging
import math
import sys
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from autoinit_sym.moment_engine.activation_moments import ActivationMoments, moments
from autoinit_sym.moment_engine.nodes import standard_normal_nodes
from autoinit_sym.statistics.methods import EXACT, PASS_THROUGH, QUADRATURE
from autoinit_sym.statistics.softmax import softmax_statistics

logger = logging.getLogger("autoinit_sym")

IDENTITY, SOFTMAX, GLU, AXIS_WISE, ENGINE, FOREIGN = "identity", "softmax", "glu", "axis_wise", "engine", "foreign"
KINDS = (IDENTITY, SOFTMAX, GLU, AXIS_WISE, ENGINE, FOREIGN)

HERMITE_POINTS = 201
"""Gauss-Hermite nodes for a foreign function's moments."""
SHARED_HERMITE_POINTS = 64
"""Gauss-Hermite nodes over the position-shared offset in :func:`activation_shared`."""
VARIANCE_FLOOR = 1e-12
"""Relative variance given to the moment engine where an input's variance would be ~0 (a
position whose profile is ~0, a conditional variance with all of it shared)."""

_IDENTITY_NAMES = ("linear", "identity", None)
_SOFTMAX_NAMES = ("softmax", "log_softmax")
_AXIS_WISE_NAMES = ("sparsemax",)

NON_DECREASING = frozenset({"relu", "relu6", "leaky_relu", "elu", "selu", "celu", "softplus", "sigmoid",
                            "hard_sigmoid", "tanh", "hard_tanh", "softsign", "exponential"})
"""Keras activations f with f(x) <= f(y) for x <= y (with their default parameters)."""
NON_NEGATIVE = frozenset({"relu", "relu6", "softplus", "sigmoid", "hard_sigmoid", "exponential"})
"""Keras activations with f >= 0 everywhere (so a zero next to f values never wins a max)."""


def _name_of(activation: Any) -> str | None:
    if activation is None or isinstance(activation, str):
        return activation
    return getattr(activation, "__name__", type(activation).__name__)


def _is_keras_function(activation: Any) -> bool:
    """True for names, None and the functions in ``keras.activations`` (Keras is only
    consulted when the caller already loaded it: a function can only come from there then)."""
    if activation is None or isinstance(activation, str):
        return True
    keras = sys.modules.get("keras")
    return keras is not None and getattr(keras.activations, _name_of(activation), None) is activation


def _through_backend(function: Callable[[Any], Any]) -> Callable[[np.ndarray], np.ndarray]:
    """``function`` (a Keras-side callable) evaluated on a float64 NumPy array."""
    ops = sys.modules["keras"].ops

    def evaluate(x: np.ndarray) -> np.ndarray:
        return np.asarray(ops.convert_to_numpy(function(ops.convert_to_tensor(x, "float64"))), dtype=np.float64)
    return evaluate


@dataclass(frozen=True)
class Activation:
    """One activation, classified once: ``kind`` (one of :data:`KINDS`), its Keras ``name``
    (None for a foreign function), its Keras ``params`` (sorted pairs) and, for a foreign
    function, ``function`` (float64 NumPy array -> array)."""

    kind: str
    name: str | None = None
    params: tuple[tuple[str, Any], ...] = ()
    function: Callable[[np.ndarray], np.ndarray] | None = None

    @property
    def elementwise(self) -> bool:
        """True where f acts on each element alone (identity, engine and foreign functions)."""
        return self.kind in (IDENTITY, ENGINE, FOREIGN)

    def engine(self) -> ActivationMoments:
        """The moment engine's object for an ``engine`` activation."""
        if self.kind != ENGINE:
            raise ValueError(f"the {self.kind} activation {self.name!r} has no moment-engine object")
        return moments(self.name, **dict(self.params))

    def non_decreasing_and_non_negative(self) -> tuple[bool, bool]:
        """Whether f is non-decreasing, and whether it is also >= 0 everywhere (a ReLU layer is
        non-decreasing for negative_slope >= 0, non-negative for negative_slope = 0 and
        threshold >= 0)."""
        params = dict(self.params)
        if self.kind != ENGINE or self.name not in NON_DECREASING or \
                min(params.get("negative_slope") or 0.0, params.get("alpha", 0.0)) < 0:
            return False, False
        non_negative = self.name in NON_NEGATIVE and not params.get("negative_slope") \
            and (params.get("threshold") or 0.0) >= 0
        return True, bool(non_negative)


def classify(activation: Any, **params: Any) -> Activation:
    """The :class:`Activation` of a Keras activation function or name (with its Keras
    ``params``, e.g. ``max_value`` of a ReLU layer), an :class:`Activation` (returned as it
    is), or any other callable (``foreign``)."""
    if isinstance(activation, Activation):
        return activation
    if not _is_keras_function(activation):
        if not callable(activation):
            raise TypeError(f"an activation must be a name, a function or None, got {type(activation).__name__}")
        return Activation(FOREIGN, None, (), _through_backend(activation))
    name = _name_of(activation)
    key = tuple(sorted(params.items()))
    if name in _IDENTITY_NAMES:
        return Activation(IDENTITY, name)
    if name in _SOFTMAX_NAMES:
        return Activation(SOFTMAX, name)
    if name == "glu":
        return Activation(GLU, name)
    if name in _AXIS_WISE_NAMES:
        return Activation(AXIS_WISE, name)
    try:
        moments(name, **params)
    except (KeyError, ValueError, TypeError) as err:
        raise ValueError(f"activation {name!r} is not known to the moment engine ({err})") from err
    return Activation(ENGINE, name, key)


def activation_statistics(activation: Activation | Any, mean: float, var: float,
                          axis_size: int | None = None) -> tuple[float, float, str]:
    """Mean and variance of f(X), X ~ N(mean, var), and how they were obtained
    (softmax needs ``axis_size``, the length of the normalized axis; None passes through).
    ``activation`` is an :class:`Activation` or anything :func:`classify` takes."""
    activation = classify(activation)
    kind = activation.kind
    if kind == IDENTITY:
        return float(mean), float(var), EXACT
    if kind == SOFTMAX:
        if axis_size is None:
            logger.warning("%s over an axis of unknown size: passing its input statistics through unchanged",
                           activation.name)
            return float(mean), float(var), PASS_THROUGH
        out_mean, out_var, method = softmax_statistics(mean, var, int(axis_size), log=activation.name == "log_softmax")
        return float(out_mean), float(out_var), method
    if kind == GLU:
        return _glu(mean, var)
    if kind == AXIS_WISE:
        logger.warning("%s has no estimator yet: passing its input statistics through unchanged", activation.name)
        return float(mean), float(var), PASS_THROUGH
    if kind == FOREIGN:
        return (*_hermite_moments(activation.function, mean, var), QUADRATURE)
    engine = activation.engine()
    return float(engine.mean(mean, var)), float(engine.variance(mean, var)), engine.method


def activation_shared(activation: Activation | Any, mean: float, var: float, shared: float, var_out: float) -> float:
    """Position-shared variance of f(x) for x = mean + a + e, a ~ N(0, shared) common to all
    positions of a channel, e ~ N(0, var - shared) independent: two positions share a, so
    Cov = Var_a(g(a)) with g(a) = E_e[f(mean + a + e)] (the moment engine's mean at
    (mean + a, var - shared)), by Gauss-Hermite over a. Identity keeps ``shared``; an
    activation the engine does not know keeps the fraction shared / var. ``var_out`` is
    Var f(x), the limit as shared -> var."""
    if var <= 0 or shared <= 0 or var_out <= 0:
        return 0.0
    if shared >= var * (1.0 - 1e-9):
        return var_out
    activation = classify(activation)
    if activation.kind == IDENTITY:
        return float(shared)
    if activation.kind != ENGINE:
        return var_out * shared / var
    nodes, weights = standard_normal_nodes(SHARED_HERMITE_POINTS)
    conditional = np.asarray(activation.engine().mean(mean + math.sqrt(shared) * nodes, var - shared),
                             dtype=np.float64)
    centre = float(weights @ conditional)
    return min(max(float(weights @ (conditional - centre) ** 2), 0.0), var_out)


@dataclass(frozen=True)
class ActivationOutput:
    """A tensor that is scale * f(z) elementwise: z ~ N(mean, var) with position-shared
    variance ``shared``, f the non-decreasing ``activation``, and scale a non-negative factor
    per channel with E[scale] = 1, E[scale^2] = ``scale_second`` (spatial dropout). The max
    over a window is then scale * f(max z)."""

    activation: Activation
    mean: float
    var: float
    shared: float
    non_negative: bool
    scale_second: float = 1.0

    def engine(self) -> ActivationMoments:
        return self.activation.engine()


def activation_output(activation: Activation | Any, mean: float, var: float, shared: float) -> ActivationOutput | None:
    """The :class:`ActivationOutput` of a non-decreasing engine activation applied to
    N(mean, var) with shared variance ``shared``; None for any other activation."""
    activation = classify(activation)
    non_decreasing, non_negative = activation.non_decreasing_and_non_negative()
    if var <= 0 or not non_decreasing:
        return None
    return ActivationOutput(activation, float(mean), float(var), float(min(max(shared, 0.0), var)), non_negative)


def _glu(mean: float, var: float) -> tuple[float, float, str]:
    """glu(a, b) = a * sigmoid(b), a and b independent N(mean, var):
    E = mean * E[s], E[out^2] = (var + mean^2) * E[s^2]."""
    sig = moments("sigmoid")
    s_mean, s_second = float(sig.mean(mean, var)), float(sig.second_moment(mean, var))
    out_mean = mean * s_mean
    return out_mean, (var + mean * mean) * s_second - out_mean * out_mean, sig.method


def _hermite_moments(function: Callable[[np.ndarray], np.ndarray], mean: float, var: float) -> tuple[float, float]:
    """E[f(X)], Var[f(X)] for X ~ N(mean, var) by Gauss-Hermite quadrature through ``function``."""
    nodes, weights = standard_normal_nodes(HERMITE_POINTS)
    y = function(mean + math.sqrt(var) * nodes)
    centre = float(np.dot(weights, y))
    return centre, float(np.dot(weights, (y - centre) ** 2))
