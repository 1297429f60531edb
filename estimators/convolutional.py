"""Convolutions: Conv1D/2D/3D, their transposes, DepthwiseConv1D/2D, SeparableConv1D/2D.

Fan-in is the *average* number of (input element, kernel tap) products summed into
one output element, counted exactly from the shapes and weighted by the input's
per-position second-moment profile r (``statistics.border_profile``): the output at o
has E[z_o^2] proportional to S(o) = sum over the (input position i, tap) pairs reaching o
of r(i). Zero padding at the borders ("same", "causal") removes taps, and a strided
transposed convolution reaches each output with only about kernel/stride taps. With
fan_in = (input channels / groups) mean_o S(o) the output variance, pooled over positions,
is exactly signal_variance (inputs independent, zero-mean weights), and the output's
profile is S / mean S. Unknown spatial sizes (or channels_first) fall back to the plain
tap count, kernel (kernel/stride for transposes) where even that is unknown.
Offsets common to all positions of an input channel reach two output positions only
through taps valid at both, so the position-shared variance of the output is scaled by
:meth:`ConvolutionEstimator.shared_tap_ratio` (< 1 where borders cut taps), and where that
makes the offsets vary enough the output carries them per position
(:meth:`ConvolutionEstimator.pre_activation_offsets`). The short-range correlation of the
output's positions follows ``statistics.lag_correlation`` (``convolved``; ``transposed`` for
the transposes).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Sequence

import keras
import numpy as np

from autoinit_sym.statistics.border_profile import (MAX_OFFSET_POSITIONS, PositionOffsets, along_axes,
                                                   convolved_offsets, tap_matrix, tap_positions, tap_selections)
from autoinit_sym.statistics.lag_correlation import LagCorrelation, convolved, point, transposed
from autoinit_sym.statistics.state import TensorState

from .registry import rule_for
from .weighted import WeightedLayerEstimator, kernel_stddev


def _per_dim(value, rank: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (int(value),) * rank


def forward_tap_fractions(in_len: int | None, out_len: int | None, kernel: int, stride: int,
                          dilation: int, padding: str) -> np.ndarray:
    """Per kernel tap, the fraction of output positions at which it lands inside the input."""
    if in_len is None or out_len is None:
        return np.ones(kernel)
    return tap_positions(in_len, out_len, kernel, stride, dilation, padding)[2].mean(axis=0)


def transpose_tap_fractions(in_len: int | None, out_len: int | None, kernel: int, stride: int,
                            dilation: int, padding: str) -> np.ndarray:
    """Per kernel tap of a transposed convolution (the adjoint of the forward convolution
    out -> in), the number of input positions it carries into the output, per output position."""
    if in_len is None or out_len is None:
        return np.full(kernel, 1.0 / stride)
    return tap_positions(in_len, out_len, kernel, stride, dilation, padding, transpose=True)[2].sum(axis=0) / out_len


def forward_taps(in_len: int | None, out_len: int | None, kernel: int, stride: int,
                 dilation: int, padding: str) -> float:
    """Average number of kernel taps landing inside the input, per output position."""
    return float(forward_tap_fractions(in_len, out_len, kernel, stride, dilation, padding).sum())


def transpose_taps(in_len: int | None, out_len: int | None, kernel: int, stride: int,
                   dilation: int, padding: str) -> float:
    """Average number of (input position, tap) pairs reaching one output position of a
    transposed convolution (the adjoint of the forward convolution out -> in)."""
    return float(transpose_tap_fractions(in_len, out_len, kernel, stride, dilation, padding).sum())


class ConvolutionEstimator(WeightedLayerEstimator):
    """Base of the convolutions: spatial shapes from the call, taps counted exactly."""

    transpose = False

    def channels_last(self) -> bool:
        return getattr(self.layer, "data_format", "channels_last") != "channels_first"

    def spatial(self, shape: Sequence) -> tuple:
        return tuple(shape[1:-1]) if self.channels_last() else tuple(shape[2:])

    def _axes(self) -> list[tuple]:
        """Per spatial axis: (input length, output length, kernel, stride, dilation)."""
        layer = self.layer
        rank = len(layer.kernel_size)
        ins = self.spatial(self.input_shapes[0]) if self.input_shapes else (None,) * rank
        outs = self.spatial(self.output_shapes[0]) if self.output_shapes else (None,) * rank
        return list(zip(ins, outs, layer.kernel_size, _per_dim(layer.strides, rank),
                        _per_dim(layer.dilation_rate, rank)))

    def tap_fractions(self) -> list[np.ndarray]:
        """Per spatial dimension, the per-tap fractions (see :func:`forward_tap_fractions`)."""
        return self._tap_fractions

    @functools.cached_property
    def _tap_fractions(self) -> list[np.ndarray]:
        count = transpose_tap_fractions if self.transpose else forward_tap_fractions
        return [count(*axis, self.layer.padding) for axis in self._axes()]

    def tap_sums(self, profile: np.ndarray | None) -> np.ndarray | None:
        """S(o) = sum over the (input position, tap) pairs reaching output o of the input's
        profile r (r = 1 without one): (M_1 (x) M_2 (x) ...) r with the per-axis tap matrices;
        None when a spatial length is unknown or the layout is channels_first."""
        axes = self._axes()
        if not self.channels_last() or any(i is None or o is None for i, o, *_ in axes):
            return None
        matrices = [tap_matrix(int(i), int(o), k, s, d, self.layer.padding, self.transpose)
                    for i, o, k, s, d in axes]
        return along_axes(matrices, profile)

    def propagate(self, inputs: Sequence[TensorState]) -> TensorState:
        # The pre-activation offsets (:meth:`pre_activation_offsets`) need the input's mean,
        # shared variance and offsets, which the base class does not hand to its hooks.
        self.input_states = list(inputs)
        return super().propagate(inputs)

    def pre_activation_lags(self, lags: LagCorrelation | None, sums: np.ndarray | None) -> LagCorrelation | None:
        """The output's short-range spatial correlation (:meth:`correlated_lags`) with the
        per-position offsets of its channels (:meth:`pre_activation_offsets`)."""
        correlation = self.correlated_lags(lags, sums)
        offsets = self.pre_activation_offsets(sums)
        if offsets is None:
            return correlation
        if correlation is None:
            correlation = point(len(offsets.spatial))
        return dataclasses.replace(correlation, offsets=offsets)

    def correlated_lags(self, lags: LagCorrelation | None, sums: np.ndarray | None) -> LagCorrelation | None:
        """The output's short-range spatial correlation from the input's: ``lag_correlation.convolved``
        with :meth:`lag_channels` input channels per output and the average number of taps inside
        the input per axis; a transposed convolution by ``lag_correlation.transposed``; None for
        channels_first or unknown spatial lengths."""
        axes = self._axes()
        if not self.channels_last() or any(i is None or o is None for i, o, *_ in axes):
            return None
        ins, outs, kernel, strides, dilation = (tuple(int(v) for v in values) for values in zip(*axes))
        if self.transpose:
            return transposed(lags, ins, outs, kernel, strides, self.layer.padding, self.lag_channels())
        inside = tuple(float(f.sum()) for f in self.tap_fractions())
        return convolved(lags, ins, outs, inside, strides, dilation, self.lag_channels())

    def pre_activation_offsets(self, sums: np.ndarray | None) -> PositionOffsets | None:
        """The per-position offsets of the output channels (``border_profile.convolved_offsets``):
        the input's mean and fixed shared offsets reach a position through the taps that land
        inside the input, so zero padding makes them differ at the borders; the weights have
        variance signal_variance / (mean_o S(o) E[x^2]) per input channel reaching an output.
        None for channels_first, unknown spatial lengths, maps of more than MAX_OFFSET_POSITIONS
        positions or offsets that do not vary."""
        axes = self._axes()
        state = self.input_states[0] if getattr(self, "input_states", None) else None
        if state is None or not self.channels_last() or any(i is None or o is None for i, o, *_ in axes):
            return None
        if math.prod(int(o) for _, o, *_ in axes) > MAX_OFFSET_POSITIONS:
            return None
        spatial_in = tuple(int(i) for i, *_ in axes)
        source = state.lags.offsets if state.lags is not None else None
        source = source if source is not None and source.spatial == spatial_in else None
        uniform = state.mean ** 2 + max(state.shared - state.sample_shared, 0.0)
        if source is not None:
            uniform = state.mean ** 2 + max(state.shared - state.sample_shared - float(
                (source.factors.mean(axis=tuple(range(1, source.factors.ndim))) ** 2).sum()), 0.0)
        if uniform <= 0 and source is None:
            return None
        means, variances = self.scale_statistics(self.input_states)
        scale_second = float(variances[0]) + float(means[0]) ** 2
        weight = self.signal_variance / (self.average_taps(sums) * scale_second)
        selections = [tap_selections(int(i), int(o), k, s, d, self.layer.padding, self.transpose)
                      for i, o, k, s, d in axes]
        within = self.signal_variance * max(state.var - state.shared, 0.0) / scale_second
        return convolved_offsets(selections, weight, uniform, source, within)

    def lag_channels(self) -> float:
        """Input channels whose independent kernels reach one output (the kernel's second-to-last axis)."""
        return float(self.layer.kernel.shape[-2])

    def average_taps(self, sums: np.ndarray | None) -> float:
        """mean_o S(o) (``sums``, :meth:`tap_sums`): the input elements summed into one output,
        weighted by their relative second moment; the plain average tap count where S is unknown."""
        if sums is None:
            return math.prod(float(f.sum()) for f in self.tap_fractions())
        return float(sums.mean())

    def shared_tap_ratio(self) -> float:
        """Two output positions of a channel share the input offsets only through taps valid
        at both: prod_dims sum_t f_t^2 / sum_t f_t (f_t: a tap's fraction of positions)."""
        return math.prod(float((f ** 2).sum() / f.sum()) if f.sum() > 0 else 1.0
                         for f in self.tap_fractions())


@rule_for(keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
class ConvEstimator(ConvolutionEstimator):
    """ConvND: fan_in = average taps x input channels / groups (the kernel's second-to-last axis)."""

    def fan_in(self, sums: np.ndarray | None) -> float:
        return self.average_taps(sums) * int(self.layer.kernel.shape[-2])


@rule_for(keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)
class ConvTransposeEstimator(ConvolutionEstimator):
    """ConvNDTranspose: fan_in = average (input position, tap) pairs per output x input
    channels (the kernel's last axis)."""

    transpose = True

    def fan_in(self, sums: np.ndarray | None) -> float:
        return self.average_taps(sums) * int(self.layer.kernel.shape[-1])

    def lag_channels(self) -> float:
        """Input channels reaching each output: the transposed kernel's last axis."""
        return float(self.layer.kernel.shape[-1])


@rule_for(keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
class DepthwiseConvEstimator(ConvolutionEstimator):
    """DepthwiseConvND: each output channel sums one input channel: fan_in = average taps."""

    kernel_initializer_attr = "depthwise_initializer"

    def fan_in(self, sums: np.ndarray | None) -> float:
        return self.average_taps(sums)

    def lag_channels(self) -> float:
        return 1.0


@rule_for(keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
class SeparableConvEstimator(ConvolutionEstimator):
    """SeparableConvND: the depthwise kernel brings the intermediate to variance 1
    (fan_in = average taps), the pointwise kernel to signal_variance
    (fan_in = input channels x depth_multiplier)."""

    def fan_in(self, sums: np.ndarray | None) -> float:
        return self.average_taps(sums)

    def lag_channels(self) -> float:
        return 1.0

    def correlated_lags(self, lags: LagCorrelation | None, sums: np.ndarray | None) -> LagCorrelation | None:
        """The depthwise stage's correlation (one channel per output), then the pointwise
        kernel's (a 1x1 convolution over input channels x depth_multiplier)."""
        depthwise = super().correlated_lags(lags, sums)
        if depthwise is None:
            return None
        spatial = tuple(int(o) for _, o, *_ in self._axes())
        ones = (1,) * len(spatial)
        return convolved(depthwise, spatial, spatial, ones, ones, ones,
                         float(self.layer.pointwise_kernel.shape[-2]))

    def schedule_weights(self, second_moment: float, sums: np.ndarray | None) -> None:
        layer = self.layer
        taps = self.fan_in(sums)
        self.set_initializer(layer.depthwise_kernel, kernel_stddev(1.0, taps, second_moment),
                             "depthwise_initializer", taps)
        pointwise_fan_in = float(layer.pointwise_kernel.shape[-2])  # input channels x depth_multiplier
        self.set_initializer(layer.pointwise_kernel, kernel_stddev(self.signal_variance, pointwise_fan_in),
                             "pointwise_initializer", pointwise_fan_in)
