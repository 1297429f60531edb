"""Activation layers: Activation, ReLU, LeakyReLU, ELU, PReLU and Softmax.

Assumption: the input elements are Gaussian N(mean, var) (independent across the softmax
axis for softmax); outputs are the exact moments of f(X) from the moment engine (closed
form or high-precision quadrature), through ``statistics.elementwise.activated``.
"""
from __future__ import annotations

from typing import Any, Sequence

import keras

from autoinit_sym.moment_engine.activation_moments import moments
from autoinit_sym.statistics.activation import classify
from autoinit_sym.statistics.elementwise import activated
from autoinit_sym.statistics.softmax import softmax_statistics
from autoinit_sym.statistics.state import TensorState

from .attention_weights import masked_weights
from .base import CLOSED_FORM, MONTE_CARLO, LayerRule
from .registry import rule_for
from .shapes import elements_along
from .weighted import initializer_statistics


def _last_axis(shapes: list[tuple]) -> int | None:
    if not shapes or not shapes[0]:
        return None
    return shapes[0][-1]


class _ActivationLayer(LayerRule):
    """Shared rule of the activation layers: ``statistics.elementwise.activated`` with the
    layer's function and parameters (softmax over the last axis); subclasses say which
    (:meth:`activation`)."""

    def activation(self) -> tuple[Any, dict[str, Any]]:
        """The activation (function or name) and its Keras parameters."""
        raise NotImplementedError

    def propagate(self, inputs: Sequence[TensorState]) -> TensorState:
        function, params = self.activation()
        state, self.method = activated(inputs[0], classify(function, **params), _last_axis(self.input_shapes))
        return state


@rule_for(keras.layers.Activation)
class ActivationEstimator(_ActivationLayer):
    """Activation(f): moments of f(X) (softmax over the last axis)."""
    method_label = "closed_form or quadrature (per activation; monte_carlo for softmax)"

    def activation(self):
        return self.layer.activation, {}


@rule_for(keras.layers.ReLU)
class ReLUEstimator(_ActivationLayer):
    """ReLU(max_value, negative_slope, threshold): piecewise-linear moments in closed form."""
    method = CLOSED_FORM

    def activation(self):
        layer = self.layer
        max_value = None if layer.max_value is None else float(layer.max_value)
        return "relu", dict(negative_slope=float(layer.negative_slope), max_value=max_value,
                            threshold=float(layer.threshold))


@rule_for(keras.layers.LeakyReLU)
class LeakyReLUEstimator(_ActivationLayer):
    """LeakyReLU(negative_slope): closed form."""
    method = CLOSED_FORM

    def activation(self):
        return "leaky_relu", dict(negative_slope=float(self.layer.negative_slope))


@rule_for(keras.layers.ELU)
class ELUEstimator(_ActivationLayer):
    """ELU(alpha): closed form."""
    method = CLOSED_FORM

    def activation(self):
        return "elu", dict(alpha=float(self.layer.alpha))


@rule_for(keras.layers.PReLU)
class PReLUEstimator(LayerRule):
    """PReLU: f(x) = max(x, 0) + a * min(x, 0) with the per-channel slopes a drawn from
    ``alpha_initializer``. The two parts never overlap, so
    E[f] = E[P] + E[a] E[N] and E[f^2] = E[P^2] + E[a^2] E[N^2],
    with P = relu(X), N = -relu(-X)."""

    method = CLOSED_FORM

    def propagate(self, inputs: Sequence[TensorState]) -> TensorState:
        relu = moments("relu")
        mean, var = inputs[0].mean, inputs[0].var
        a_mean, a_var = initializer_statistics(self.layer.alpha_initializer, self.layer.alpha)
        pos_mean, pos_second = float(relu.mean(mean, var)), float(relu.second_moment(mean, var))
        neg_mean, neg_second = -float(relu.mean(-mean, var)), float(relu.second_moment(-mean, var))
        out_mean = pos_mean + a_mean * neg_mean
        out_second = pos_second + (a_var + a_mean * a_mean) * neg_second
        self.method = relu.method
        return self.output(inputs, out_mean, max(out_second - out_mean * out_mean, 0.0))


def axis_size(shape: tuple, axis: int | tuple[int, ...], name: str) -> int:
    """Number of elements along ``axis`` (an int or several) of ``shape``; error if unknown."""
    size = elements_along(shape, (axis,) if isinstance(axis, int) else tuple(axis))
    if size is None:
        raise ValueError(f"softmax over axis {axis} of layer {name!r} needs a known size along "
                         f"that axis; input shape is {shape}")
    return size


@rule_for(keras.layers.Softmax)
class SoftmaxEstimator(LayerRule):
    """Softmax layer over ``axis``: mean 1/n (n = size of the softmax axes only); variance
    by :func:`softmax_statistics`. Inputs iid Gaussian. A 0/1 mask (a second input, as in
    keras_hub's causal decoders) sets which keys each query sees
    (:func:`~autoinit_sym.estimators.attention_weights.masked_weights`)."""

    method = MONTE_CARLO  # typical; each call records how it was obtained (exact, quadrature)

    def propagate(self, inputs: Sequence[TensorState]) -> TensorState:
        if not self.input_shapes:
            raise ValueError(f"Softmax layer {self.layer.name!r}: input shape unknown")
        n = axis_size(tuple(self.input_shapes[0]), self.layer.axis, self.layer.name)
        if len(inputs) > 1:
            masked = masked_weights(inputs[0].var, n, inputs[1])
            if masked is not None:
                mean, var, self.method = masked
                return self.output(inputs[:1], mean, var)
        mean, var, self.method = softmax_statistics(inputs[0].mean, inputs[0].var, n)
        return self.output(inputs, mean, var)
