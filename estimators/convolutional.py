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
:meth:`ConvolutionEstimator.shared_tap_ratio` (< 1 where borders cut taps).
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import keras
import numpy as np

from .registry import rule_for
from autoinit_sym.statistics.lag_correlation import LagCorrelation, convolved
from autoinit_sym.statistics.border_profile import along_axes, tap_matrix, tap_positions
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

    def pre_activation_lags(self, lags: LagCorrelation | None, sums: np.ndarray | None) -> LagCorrelation | None:
        """The output's short-range spatial correlation from the input's
        (``lag_correlation.convolved`` with :meth:`lag_channels` input channels per output
        and the average number of taps inside the input per axis);
        None for transposed convolutions, channels_first or unknown spatial lengths."""
        axes = self._axes()
        if self.transpose or not self.channels_last() or any(i is None or o is None for i, o, *_ in axes):
            return None
        ins, outs, _, strides, dilation = (tuple(int(v) for v in values) for values in zip(*axes))
        inside = tuple(float(f.sum()) for f in self.tap_fractions())
        return convolved(lags, ins, outs, inside, strides, dilation, self.lag_channels())

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

    def pre_activation_lags(self, lags: LagCorrelation | None, sums: np.ndarray | None) -> LagCorrelation | None:
        """The depthwise stage's correlation (one channel per output), then the pointwise
        kernel's (a 1x1 convolution over input channels x depth_multiplier)."""
        depthwise = super().pre_activation_lags(lags, sums)
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
