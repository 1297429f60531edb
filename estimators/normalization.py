"""Normalization layers: BatchNormalization, LayerNormalization, GroupNormalization,
UnitNormalization, RMSNormalization, Normalization and Rescaling.

Inputs are independent Gaussian elements with one (mean, var); training mode (batch
statistics). Per-channel parameters (gamma/beta, scale/offset, adapted mean/variance)
are averaged over their positions: the output statistics are those of the mixture over
channels, as a measurement over the whole tensor sees them.

Position-shared variance c (``statistics.state``): an affine map a x + b per channel
shares avg(a^2) c + Var_channels(a m + b) (:func:`affine_shared`). BatchNormalization in
training mode subtracts each channel's batch mean, which removes per-channel offsets;
assuming those dominate the shared part before it (they do after weighted layers), its
output shares only Var_channels(beta). Layer/Group normalization standardize each
sample's positions separately and keep the input's shared fraction c / var.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import keras
import numpy as np

from autoinit_sym.statistics.linear import (affine_moments, affine_shared, direction_moments,
                                            standardized_second_moment)
from autoinit_sym.statistics.state import TensorState

from .base import CLOSED_FORM, EXACT, QUADRATURE, LayerRule
from .registry import rule_for
from .shapes import elements_along, positive_axes


def per_position(rule: LayerRule) -> dict[str, Any]:
    """The profile a layer normalizing each sample over ``layer.axis`` leaves: uniform
    (``{"profile": None}``) when no spatial axis (1..rank-2) is among those axes (each position
    is scaled to the same second moment), else the carried one (``{}``: positions are scaled
    together, keeping their ratios)."""
    shape = rule.input_shapes[0] if rule.input_shapes else None
    if shape is None:
        return {"profile": None}
    axes = positive_axes(rule.layer.axis, len(shape))
    return {} if any(1 <= a <= len(shape) - 2 for a in axes) else {"profile": None}


def affine_output(rule: LayerRule, inputs: Sequence[TensorState], scale: Any, offset: Any) -> TensorState:
    """The record of the exact affine map x * scale + offset (per-channel arrays allowed)."""
    state = inputs[0]
    return rule.output(inputs, *affine_moments(scale, offset, state.mean, state.var),
                       shared=affine_shared(scale, offset, state.mean, state.shared))


def _parameter(layer: Any, enabled: bool, variable: str, initializer: str, default: float,
               shape: tuple[int, ...] | None) -> np.ndarray:
    """A layer parameter (gamma, beta, ...): its current value if built, else its initializer's."""
    if not enabled:
        return np.asarray(default, dtype=float)
    value = getattr(layer, variable, None)
    if value is not None:
        return np.asarray(keras.ops.convert_to_numpy(value), dtype=float)
    init = keras.initializers.get(getattr(layer, initializer))
    return np.asarray(keras.ops.convert_to_numpy(init(shape or (1,))), dtype=float)


class _Standardizing(LayerRule):
    """gamma * (x - m) / sqrt(s^2 + eps) + beta with m, s^2 the statistics over the reduction set:
    output mean avg(beta), var avg(gamma^2) * E[s^2/(s^2+eps)] + Var_channels(beta)."""

    keeps_shared = True
    """Whether the input's shared fraction survives (False: per-channel offsets, fixed over
    samples, are removed by statistics over the batch; the per-sample part survives)."""

    def reduction_size(self) -> int | None:
        raise NotImplementedError

    def parameter_shape(self) -> tuple[int, ...] | None:
        shape = self.input_shapes[0] if self.input_shapes else None
        if shape is None:
            return None
        dims = tuple(shape[a] for a in positive_axes(self.layer.axis, len(shape)))
        return None if None in dims else dims

    def propagate(self, inputs: Sequence[TensorState]) -> TensorState:
        return self.standardized(inputs)

    def standardized(self, inputs: Sequence[TensorState], **known: Any) -> TensorState:
        """The standardized output's record (class docstring), with the fields in ``known``."""
        state = inputs[0]
        ratio, self.method = standardized_second_moment(self.reduction_size(), state.var, self.layer.epsilon)
        shape = self.parameter_shape()
        gamma = _parameter(self.layer, self.layer.scale, "gamma", "gamma_initializer", 1.0, shape)
        beta = _parameter(self.layer, self.layer.center, "beta", "beta_initializer", 0.0, shape)
        kept = state.shared if self.keeps_shared else state.sample_shared
        fraction = kept / state.var if state.var > 0 else 0.0
        sample_fraction = state.sample_shared / state.var if state.var > 0 else 0.0
        return self.output(inputs, *affine_moments(gamma, beta, 0.0, ratio),
                           shared=affine_shared(gamma, beta, 0.0, ratio * fraction),
                           sample_shared=affine_shared(gamma, 0.0, 0.0, ratio * sample_fraction), **known)


@rule_for(keras.layers.BatchNormalization)
class BatchNormalizationEstimator(_Standardizing):
    """Training mode, batch statistics over batch (and spatial) positions of unknown count:
    mean avg(beta), var avg(gamma^2) var/(var+eps) + Var(beta); shared Var(beta) plus the scaled
    per-sample part (offsets fixed over samples are removed, per-sample gates and masks stay)."""

    method = CLOSED_FORM
    keeps_shared = False

    def reduction_size(self) -> int | None:
        return None

    def propagate(self, inputs: Sequence[TensorState]) -> TensorState:
        # a per-channel affine map keeps the correlation of positions
        return self.standardized(inputs, lags=inputs[0].lags)


@rule_for(keras.layers.LayerNormalization)
class LayerNormalizationEstimator(_Standardizing):
    """Statistics over the normalized axes (d elements): mean avg(beta),
    var avg(gamma^2) E[s^2/(s^2+eps)] + Var(beta), s^2 ~ var chi^2(d-1)/d.
    With the deprecated rms_scaling=True: x gamma / sqrt(s^2 + eps), (mean, E[x^2]) scaled by 1/sqrt(var+eps)."""

    method = QUADRATURE

    def reduction_size(self) -> int | None:
        shape = self.input_shapes[0] if self.input_shapes else None
        return None if shape is None else elements_along(shape, positive_axes(self.layer.axis, len(shape)))

    def propagate(self, inputs: Sequence[TensorState]) -> TensorState:
        if not self.layer.rms_scaling:
            return self.standardized(inputs, **per_position(self))
        self.method = CLOSED_FORM
        state = inputs[0]
        inv = 1.0 / math.sqrt(state.var + self.layer.epsilon)
        gamma = _parameter(self.layer, True, "gamma", "gamma_initializer", 1.0, self.parameter_shape())
        return self.output(inputs, *affine_moments(gamma * inv, 0.0, state.mean, state.var),
                           shared=affine_shared(gamma * inv, 0.0, state.mean, state.shared), **per_position(self))


@rule_for(keras.layers.GroupNormalization)
class GroupNormalizationEstimator(_Standardizing):
    """Statistics over each group: all non-batch positions times channels/groups elements;
    mean avg(beta), var avg(gamma^2) E[s^2/(s^2+eps)] + Var(beta)."""

    method = QUADRATURE

    def reduction_size(self) -> int | None:
        shape = self.input_shapes[0] if self.input_shapes else None
        if shape is None:
            return None
        rank = len(shape)
        size = elements_along(shape, range(1, rank))
        return None if size is None else size // self.layer.groups


@rule_for(keras.layers.UnitNormalization)
class UnitNormalizationEstimator(LayerRule):
    """x / ||x|| over d elements (projected normal, closed form): E[y^2] = 1/d,
    mean from :func:`direction_moments`."""

    method = CLOSED_FORM

    def propagate(self, inputs: Sequence[TensorState]) -> TensorState:
        shape = self.input_shapes[0]
        d = elements_along(shape, positive_axes(self.layer.axis, len(shape)))
        first, _ = direction_moments(inputs[0].mean, inputs[0].var, d)
        return self.output(inputs, first, 1.0 / d - first ** 2, **per_position(self))


@rule_for(keras.layers.RMSNormalization)
class RMSNormalizationEstimator(LayerRule):
    """scale * x / sqrt(mean(x^2) + eps) = scale * sqrt(d) u sqrt(r), u = x/||x||, with the
    epsilon factor r taken at mean(x^2) = E[x^2]: r = E[x^2] / (E[x^2] + eps)."""

    method = CLOSED_FORM

    def propagate(self, inputs: Sequence[TensorState]) -> TensorState:
        mean, var = inputs[0].mean, inputs[0].var
        shape = self.input_shapes[0]
        axes = positive_axes(self.layer.axis, len(shape))
        d = elements_along(shape, axes)
        first, _ = direction_moments(mean, var, d)
        second = var + mean ** 2
        unit_scale = math.sqrt(d * second / (second + self.layer.epsilon))
        scale = np.asarray(keras.ops.convert_to_numpy(self.layer.scale), dtype=float)
        # u has mean `first` and variance 1/d - first^2 per element.
        return self.output(inputs, *affine_moments(scale * unit_scale, 0.0, first, 1.0 / d - first ** 2),
                           **per_position(self))


@rule_for(keras.layers.Normalization)
class NormalizationEstimator(LayerRule):
    """Exact affine map with the adapted statistics m, v per feature:
    (x - m) / max(sqrt(v), eps), or with invert=True m + x * max(sqrt(v), eps)."""

    method = EXACT

    def propagate(self, inputs: Sequence[TensorState]) -> TensorState:
        layer = self.layer
        m, v = (np.asarray(keras.ops.convert_to_numpy(t), dtype=float) for t in (layer.mean, layer.variance))
        sd = np.maximum(np.sqrt(v), keras.config.epsilon())
        scale, offset = (sd, m) if layer.invert else (1.0 / sd, -m / sd)
        return affine_output(self, inputs, scale, offset)


@rule_for(keras.layers.Rescaling)
class RescalingEstimator(LayerRule):
    """Exact affine map x * scale + offset (scale/offset may be per-channel arrays)."""

    method = EXACT

    def propagate(self, inputs: Sequence[TensorState]) -> TensorState:
        scale, offset = (np.asarray(keras.ops.convert_to_numpy(t), dtype=float)
                         for t in (self.layer.scale, self.layer.offset))
        return affine_output(self, inputs, scale, offset)
