"""Regularization layers in training mode: Dropout, SpatialDropout1D/2D/3D, GaussianDropout,
GaussianNoise, AlphaDropout, ActivityRegularization.

Exact for an input element with mean m and variance v (the noise is independent of it).
Position-shared variance c (covariance between two positions of a channel): noise drawn
per element leaves it as the kept fraction scales it; a spatial dropout mask is common to
the whole channel, so it scales the positions' common second moment (c + m^2).
"""
from __future__ import annotations

import dataclasses

import keras

from .activations import ActivationOutput
from .base import EXACT, LayerOutputDistributionEstimator
from .core import IdentityEstimator
from .registry import estimates
from autoinit_sym.statistics.lag_correlation import rescaled, scaled

_SPATIAL = (keras.layers.SpatialDropout1D, keras.layers.SpatialDropout2D, keras.layers.SpatialDropout3D)

# SELU constants that AlphaDropout uses for its dropped value alpha' = -alpha * scale.
_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def inverted_dropout_moments(mean: float, var: float, rate: float) -> tuple[float, float]:
    """x * mask / (1 - rate), mask ~ Bernoulli(1 - rate): mean m, var (v + m^2) / (1 - rate) - m^2.

    GaussianDropout (x * N(1, rate / (1 - rate))) has the same two moments."""
    return mean, (var + mean ** 2) / (1.0 - rate) - mean ** 2


@estimates(keras.layers.Dropout, keras.layers.GaussianDropout)
class DropoutEstimator(LayerOutputDistributionEstimator):
    """Dropout / SpatialDropout* (kept units scaled by 1/(1-rate); a spatial mask has the same
    per-element law) and GaussianDropout: mean m, var (v + m^2)/(1 - rate) - m^2. Shared
    variance: c with masks per element (E[d_p d_q] = 1 for p != q); (c + m^2)/(1 - rate) - m^2
    with a mask common to a channel's positions (SpatialDropout, or a noise_shape of 1 on every
    spatial axis such as drop-connect's), which keeps an activation output's origin (a
    per-channel factor of second moment 1/(1 - rate))."""

    method = EXACT

    def estimate(self, means_in, vars_in):
        mean, rate = means_in[0], float(self.layer.rate)
        spatial = self.mask_spans_positions()
        self.shared_out = inverted_dropout_moments(mean, self.shared(), rate)[1] if spatial else self.shared()
        if spatial:  # a mask per (sample, channel): all but the input's fixed offsets varies per sample
            self.sample_shared_out = self.shared_out - (self.shared() - self.sample_shared())
        origin = self.origin()
        if spatial and isinstance(origin, ActivationOutput) and rate < 1:
            self.origin_out = dataclasses.replace(origin, scale_second=origin.scale_second / (1.0 - rate))
        out_mean, out_var = inverted_dropout_moments(mean, vars_in[0], rate)
        # A mask common to a channel's positions scales all of them alike (its square varies,
        # E[d^4] / E[d^2]^2 = 1 / (1 - rate)); masks per element add independent noise.
        if spatial:
            self.lags_out = scaled(self.lags(), vars_in[0] + mean * mean, vars_in[0] - self.shared(),
                                   1.0 / (1.0 - rate), per_sample=self.mask_spans_channels())
        else:
            self.lags_out = rescaled(self.lags(), (vars_in[0] - self.shared()) / max(out_var - self.shared_out, 1e-300))
        return out_mean, out_var

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


@estimates(keras.layers.GaussianNoise)
class GaussianNoiseEstimator(LayerOutputDistributionEstimator):
    """x + N(0, stddev^2): mean m, var v + stddev^2; shared variance unchanged (noise per element)."""

    method = EXACT

    def estimate(self, means_in, vars_in):
        self.shared_out = self.shared()
        return means_in[0], vars_in[0] + float(self.layer.stddev) ** 2


@estimates(keras.layers.AlphaDropout)
class AlphaDropoutEstimator(LayerOutputDistributionEstimator):
    """a (x kept, else alpha') + b with alpha' = -alpha_selu scale_selu,
    a = ((1-r)(1 + r alpha'^2))^(-1/2), b = -a alpha' r. With x' the kept-or-alpha' mixture:
    mean a E[x'] + b, var a^2 Var[x'], E[x'] = (1-r) m + r alpha', Var[x'] = (1-r) v + r(1-r)(m - alpha')^2."""

    method = EXACT

    def estimate(self, means_in, vars_in):
        mean, var, rate = means_in[0], vars_in[0], float(self.layer.rate)
        if rate <= 0:
            return mean, var
        alpha_p = -_SELU_ALPHA * _SELU_SCALE
        a = ((1 - rate) * (1 + rate * alpha_p ** 2)) ** -0.5
        b = -a * alpha_p * rate
        self.shared_out = (a * (1 - rate)) ** 2 * self.shared()  # kept at both positions
        mixed_mean = (1 - rate) * mean + rate * alpha_p
        mixed_var = (1 - rate) * var + rate * (1 - rate) * (mean - alpha_p) ** 2
        return a * mixed_mean + b, a * a * mixed_var


@estimates(keras.layers.ActivityRegularization)
class ActivityRegularizationEstimator(IdentityEstimator):
    """Identity on the forward pass (it only adds a loss)."""
