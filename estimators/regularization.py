"""Regularization layers in training mode: Dropout, SpatialDropout1D/2D/3D, GaussianDropout,
GaussianNoise, AlphaDropout, ActivityRegularization.

Exact for an input element with mean m and variance v (the noise is independent of it).
Position-shared variance c (covariance between two positions of a channel): noise drawn
per element leaves it as the kept fraction scales it; a spatial dropout mask is common to
the whole channel, so it scales the positions' common second moment (c + m^2).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import keras

from autoinit_sym.statistics.activation import ActivationOutput
from autoinit_sym.statistics.lag_correlation import rescaled, scaled
from autoinit_sym.statistics.linear import inverted_dropout_moments
from autoinit_sym.statistics.state import TensorState

from .base import EXACT, IdentityRule, LayerRule
from .registry import rule_for

_SPATIAL = (keras.layers.SpatialDropout1D, keras.layers.SpatialDropout2D, keras.layers.SpatialDropout3D)

# SELU constants that AlphaDropout uses for its dropped value alpha' = -alpha * scale.
_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


@rule_for(keras.layers.Dropout, keras.layers.GaussianDropout)
class DropoutEstimator(LayerRule):
    """Dropout / SpatialDropout* (kept units scaled by 1/(1-rate); a spatial mask has the same
    per-element law) and GaussianDropout: mean m, var (v + m^2)/(1 - rate) - m^2. Shared
    variance: c with masks per element (E[d_p d_q] = 1 for p != q); (c + m^2)/(1 - rate) - m^2
    with a mask common to a channel's positions (SpatialDropout, or a noise_shape of 1 on every
    spatial axis such as drop-connect's), which keeps an activation output's origin (a
    per-channel factor of second moment 1/(1 - rate))."""

    method = EXACT

    def propagate(self, inputs: Sequence[TensorState]) -> TensorState:
        state, rate = inputs[0], float(self.layer.rate)
        mean, var = state.mean, state.var
        spatial = self.mask_spans_positions()
        known = {"shared": inverted_dropout_moments(mean, state.shared, rate)[1] if spatial else state.shared}
        if spatial:  # a mask per (sample, channel): all but the input's fixed offsets varies per sample
            known["sample_shared"] = known["shared"] - (state.shared - state.sample_shared)
        if spatial and isinstance(state.origin, ActivationOutput) and rate < 1:
            known["origin"] = dataclasses.replace(state.origin, scale_second=state.origin.scale_second / (1.0 - rate))
        out_mean, out_var = inverted_dropout_moments(mean, var, rate)
        # A mask common to a channel's positions scales all of them alike (its square varies,
        # E[d^4] / E[d^2]^2 = 1 / (1 - rate)); masks per element add independent noise.
        if spatial:
            known["lags"] = scaled(state.lags, state.second_moment, var - state.shared,
                                   1.0 / (1.0 - rate), per_sample=self.mask_spans_channels())
        else:
            known["lags"] = rescaled(state.lags, (var - state.shared) / max(out_var - known["shared"], 1e-300))
        return self.output(inputs, out_mean, out_var, **known)

    def mask_spans_channels(self) -> bool:
        """True when one mask value covers all channels too (a ``noise_shape`` of 1 on the last axis)."""
        shape = getattr(self.layer, "noise_shape", None)
        return not isinstance(self.layer, _SPATIAL) and shape is not None and tuple(shape)[-1] == 1

    def mask_spans_positions(self) -> bool:
        """True when one mask value covers all spatial positions of a (sample, channel):
        SpatialDropout*, or a ``noise_shape`` of 1 on every spatial axis (drop-connect's
        (None, 1, 1, 1))."""
        if isinstance(self.layer, _SPATIAL):
            return True
        shape = getattr(self.layer, "noise_shape", None)
        return shape is not None and len(shape) >= 3 and all(n == 1 for n in tuple(shape)[1:-1])


@rule_for(keras.layers.GaussianNoise)
class GaussianNoiseEstimator(LayerRule):
    """x + N(0, stddev^2): mean m, var v + stddev^2; shared variance unchanged (noise per element)."""

    method = EXACT

    def propagate(self, inputs: Sequence[TensorState]) -> TensorState:
        state = inputs[0]
        return self.output(inputs, state.mean, state.var + float(self.layer.stddev) ** 2, shared=state.shared)


@rule_for(keras.layers.AlphaDropout)
class AlphaDropoutEstimator(LayerRule):
    """a (x kept, else alpha') + b with alpha' = -alpha_selu scale_selu,
    a = ((1-r)(1 + r alpha'^2))^(-1/2), b = -a alpha' r. With x' the kept-or-alpha' mixture:
    mean a E[x'] + b, var a^2 Var[x'], E[x'] = (1-r) m + r alpha', Var[x'] = (1-r) v + r(1-r)(m - alpha')^2."""

    method = EXACT

    def propagate(self, inputs: Sequence[TensorState]) -> TensorState:
        mean, var, rate = inputs[0].mean, inputs[0].var, float(self.layer.rate)
        if rate <= 0:
            return inputs[0]
        alpha_p = -_SELU_ALPHA * _SELU_SCALE
        a = ((1 - rate) * (1 + rate * alpha_p ** 2)) ** -0.5
        b = -a * alpha_p * rate
        mixed_mean = (1 - rate) * mean + rate * alpha_p
        mixed_var = (1 - rate) * var + rate * (1 - rate) * (mean - alpha_p) ** 2
        return self.output(inputs, a * mixed_mean + b, a * a * mixed_var,
                           shared=(a * (1 - rate)) ** 2 * inputs[0].shared)  # kept at both positions


@rule_for(keras.layers.ActivityRegularization)
class ActivityRegularizationEstimator(IdentityRule):
    """Identity on the forward pass (it only adds a loss)."""
