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

All of them keep the lag correlation of a channel's positions (``statistics.lag_correlation``).
Where borders made the channels' offsets vary with position
(``border_profile.PositionOffsets``), batch normalization removes only their mean over
positions: the border pattern stays, the same in every sample, and becomes part of the output's
per-position profile (:meth:`BatchNormalizationEstimator.left_offsets`).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import keras
import numpy as np

from autoinit_sym.statistics.border_profile import PositionOffsets, normalized, significant, spatial_shape
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


def standardized_lags(rule: LayerRule, state: TensorState, each_position: bool) -> Any:
    """The lag correlation after a per-sample standardization (Layer/Group normalization): each
    sample is shifted and scaled by statistics over many elements, which keeps the correlation of
    a channel's positions; the per-position offsets of the channels are scaled by
    sqrt(avg gamma^2 / (v + eps)), v the variance the layer divides by (per position where it
    normalizes each position over the channels alone, ``each_position``: v(p) = r(p) E[x^2] - mean^2)."""
    lags = state.lags
    offsets = None if lags is None else lags.offsets
    if offsets is None:
        return lags
    gamma = float(np.mean(_parameter(rule.layer, rule.layer.scale, "gamma", "gamma_initializer", 1.0,
                                     rule.parameter_shape()) ** 2))
    variance = np.full(offsets.spatial, state.var)
    if each_position and state.profile is not None and state.profile.shape == offsets.spatial:
        variance = np.maximum(state.profile * state.second_moment - state.mean ** 2, 0.0)
    scale = np.sqrt(gamma / (variance + rule.layer.epsilon))
    return dataclasses.replace(lags, offsets=significant(offsets.scaled(scale).factors, gamma))


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
        state = inputs[0]
        offsets = state.lags.offsets if state.lags is not None else None
        spatial = spatial_shape(self.input_shapes[0]) if self.input_shapes else None
        if offsets is None or offsets.spatial != spatial:
            return self.standardized(inputs, lags=state.lags)
        return self.standardized(inputs, **self.left_offsets(state, offsets))

    def left_offsets(self, state: TensorState, offsets: PositionOffsets) -> dict[str, Any]:
        """The per-position offsets that the batch statistics leave (``border_profile.PositionOffsets``):
        subtracting each channel's mean over batch and positions removes their mean over positions
        and keeps d(p) - mean_q d(q), the same in every sample, scaled like the values by
        sqrt(avg gamma^2 / (w + eps)), w = var - (shared - sample_shared) the channel's variance
        (each channel by its own: ``normalized``). The
        output's profile is then that of e(p) + d(p) - mean d + the per-sample offsets:
        r(p) ~ E[x_p^2] - mean^2 - Var(d(p)) + Var(d(p) - mean d), E[x_p^2] from the input's profile."""
        shape = self.parameter_shape()
        gamma = _parameter(self.layer, self.layer.scale, "gamma", "gamma_initializer", 1.0, shape)
        within = max(state.var - (state.shared - state.sample_shared), 0.0)
        left = PositionOffsets(offsets.centred)
        second = state.second_moment * (1.0 if state.profile is None else state.profile)
        rest = np.maximum(second - state.mean ** 2 - offsets.total, 0.0)
        scale = math.sqrt(float(np.mean(gamma ** 2)) / (within + self.layer.epsilon))
        kept = significant(left.scaled(scale).factors, float(np.mean(gamma ** 2)))
        kept = None if kept is None else dataclasses.replace(kept, normalized=True)
        lags = dataclasses.replace(state.lags, offsets=kept)
        return {"lags": lags, "profile": normalized(rest + left.total)}


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
        position = per_position(self)  # {"profile": None} where each position is normalized alone
        known = {**position, "lags": standardized_lags(self, inputs[0], bool(position))}
        if not self.layer.rms_scaling:
            return self.standardized(inputs, **known)
        self.method = CLOSED_FORM
        state = inputs[0]
        inv = 1.0 / math.sqrt(state.var + self.layer.epsilon)
        gamma = _parameter(self.layer, True, "gamma", "gamma_initializer", 1.0, self.parameter_shape())
        return self.output(inputs, *affine_moments(gamma * inv, 0.0, state.mean, state.var),
                           shared=affine_shared(gamma * inv, 0.0, state.mean, state.shared), **known)


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

    def propagate(self, inputs: Sequence[TensorState]) -> TensorState:
        return self.standardized(inputs, lags=standardized_lags(self, inputs[0], False))


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


class RMSScaling(LayerRule):
    """Root-mean-square normalization g * x / sqrt(mean(x^2) + eps) over d elements
    = g sqrt(d) u sqrt(r), u = x/||x|| (projected normal, closed form: E[u^2] = 1/d, mean from
    :func:`direction_moments`), with the epsilon factor r taken at mean(x^2) = E[x^2]:
    r = E[x^2] / (E[x^2] + eps); g the per-channel multiplier (:meth:`multiplier`), averaged over
    channels as a measurement over the whole tensor sees it. Subclasses say where g, eps and the
    normalized axes are; by default ``layer.scale``, ``layer.epsilon``, the last axis."""

    method = CLOSED_FORM

    def multiplier(self) -> np.ndarray:
        """The per-channel factor g applied after the normalization."""
        return np.asarray(keras.ops.convert_to_numpy(self.layer.scale), dtype=float)

    def epsilon(self) -> float:
        return float(self.layer.epsilon)

    def axes(self) -> list[int]:
        return positive_axes(-1, len(self.input_shapes[0]))

    def propagate(self, inputs: Sequence[TensorState]) -> TensorState:
        mean, var = inputs[0].mean, inputs[0].var
        d = elements_along(self.input_shapes[0], self.axes())
        if d is None:
            raise ValueError(f"{type(self.layer).__name__} {self.layer.name!r} normalizes axes of unknown size "
                             f"(input shape {tuple(self.input_shapes[0])})")
        first, _ = direction_moments(mean, var, d)
        second = var + mean ** 2
        unit_scale = math.sqrt(d * second / (second + self.epsilon()))
        # u has mean `first` and variance 1/d - first^2 per element.
        return self.output(inputs, *affine_moments(self.multiplier() * unit_scale, 0.0, first, 1.0 / d - first ** 2),
                           **self.position_fields())

    def position_fields(self) -> dict[str, Any]:
        """The profile left (:func:`per_position`): uniform, each position is normalized alone."""
        return {"profile": None}


@rule_for(keras.layers.RMSNormalization)
class RMSNormalizationEstimator(RMSScaling):
    """keras.layers.RMSNormalization: g = ``scale`` over ``layer.axis``."""

    def axes(self) -> list[int]:
        return positive_axes(self.layer.axis, len(self.input_shapes[0]))

    def position_fields(self) -> dict[str, Any]:
        return per_position(self)


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
