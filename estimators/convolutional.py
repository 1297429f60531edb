"""Convolutions: Conv1D/2D/3D, their transposes, DepthwiseConv1D/2D, SeparableConv1D/2D.

Fan-in is the *average* number of (input element, kernel tap) products summed into
one output element, counted exactly from the shapes: zero padding at the borders
("same", "causal") removes taps, and a strided transposed convolution reaches each
output with only about kernel/stride taps. The count factorizes over spatial
dimensions, so the average over output positions is the product of per-dimension
averages. With the weights' variance set from this count the output variance,
pooled over positions, is exactly signal_variance (inputs independent, zero-mean
weights). Unknown spatial sizes fall back to kernel (kernel/stride for transposes).
Offsets common to all positions of an input channel reach two output positions only
through taps valid at both, so the position-shared variance of the output is scaled by
:meth:`ConvolutionEstimator.shared_tap_ratio` (< 1 where borders cut taps).
"""
from __future__ import annotations

import math
from typing import Sequence

import keras
import numpy as np

from .registry import estimates
from .weighted import WeightedLayerEstimator, kernel_stddev


def _per_dim(value, rank: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (int(value),) * rank


def forward_tap_fractions(in_len: int | None, out_len: int | None, kernel: int, stride: int,
                          dilation: int, padding: str) -> np.ndarray:
    """Per kernel tap, the fraction of output positions at which it lands inside the input."""
    if in_len is None or out_len is None:
        return np.ones(kernel)
    span = (kernel - 1) * dilation + 1
    if padding == "same":
        left = max((out_len - 1) * stride + span - in_len, 0) // 2
    elif padding == "causal":
        left = span - 1
    else:
        left = 0
    positions = np.arange(out_len)[:, None] * stride + np.arange(kernel)[None, :] * dilation - left
    return ((positions >= 0) & (positions < in_len)).mean(axis=0)


def transpose_tap_fractions(in_len: int | None, out_len: int | None, kernel: int, stride: int,
                            dilation: int, padding: str) -> np.ndarray:
    """Per kernel tap of a transposed convolution (the adjoint of the forward convolution
    out -> in), the number of input positions it carries into the output, per output position."""
    if in_len is None or out_len is None:
        return np.full(kernel, 1.0 / stride)
    span = (kernel - 1) * dilation + 1
    left = max((in_len - 1) * stride + span - out_len, 0) // 2 if padding == "same" else 0
    targets = np.arange(in_len)[:, None] * stride + np.arange(kernel)[None, :] * dilation - left
    return ((targets >= 0) & (targets < out_len)).sum(axis=0) / out_len


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

    def spatial(self, shape: Sequence) -> tuple:
        if getattr(self.layer, "data_format", "channels_last") == "channels_first":
            return tuple(shape[2:])
        return tuple(shape[1:-1])

    def tap_fractions(self) -> list[np.ndarray]:
        """Per spatial dimension, the per-tap fractions (see :func:`forward_tap_fractions`)."""
        layer = self.layer
        rank = len(layer.kernel_size)
        ins = self.spatial(self.input_shapes[0]) if self.input_shapes else (None,) * rank
        outs = self.spatial(self.output_shapes[0]) if self.output_shapes else (None,) * rank
        count = transpose_tap_fractions if self.transpose else forward_tap_fractions
        strides = _per_dim(layer.strides, rank)
        dilations = _per_dim(layer.dilation_rate, rank)
        return [count(i, o, k, s, d, layer.padding) for i, o, k, s, d in
                zip(ins, outs, layer.kernel_size, strides, dilations)]

    def average_taps(self) -> float:
        return math.prod(float(f.sum()) for f in self.tap_fractions())

    def shared_tap_ratio(self) -> float:
        """Two output positions of a channel share the input offsets only through taps valid
        at both: prod_dims sum_t f_t^2 / sum_t f_t (f_t: a tap's fraction of positions)."""
        return math.prod(float((f ** 2).sum() / f.sum()) if f.sum() > 0 else 1.0
                         for f in self.tap_fractions())


@estimates(keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
class ConvEstimator(ConvolutionEstimator):
    """ConvND: fan_in = average taps x input channels / groups (the kernel's second-to-last axis)."""

    def fan_in(self) -> float:
        return self.average_taps() * int(self.layer.kernel.shape[-2])


@estimates(keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)
class ConvTransposeEstimator(ConvolutionEstimator):
    """ConvNDTranspose: fan_in = average (input position, tap) pairs per output x input
    channels (the kernel's last axis)."""

    transpose = True

    def fan_in(self) -> float:
        return self.average_taps() * int(self.layer.kernel.shape[-1])


@estimates(keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
class DepthwiseConvEstimator(ConvolutionEstimator):
    """DepthwiseConvND: each output channel sums one input channel: fan_in = average taps."""

    kernel_initializer_attr = "depthwise_initializer"

    def fan_in(self) -> float:
        return self.average_taps()


@estimates(keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
class SeparableConvEstimator(ConvolutionEstimator):
    """SeparableConvND: the depthwise kernel brings the intermediate to variance 1
    (fan_in = average taps), the pointwise kernel to signal_variance
    (fan_in = input channels x depth_multiplier)."""

    def fan_in(self) -> float:
        return self.average_taps()

    def schedule_weights(self, second_moment: float) -> None:
        layer = self.layer
        taps = self.fan_in()
        self.set_initializer(layer.depthwise_kernel, kernel_stddev(1.0, taps, second_moment),
                             "depthwise_initializer", taps)
        pointwise_fan_in = float(layer.pointwise_kernel.shape[-2])  # input channels x depth_multiplier
        self.set_initializer(layer.pointwise_kernel, kernel_stddev(self.signal_variance, pointwise_fan_in),
                             "pointwise_initializer", pointwise_fan_in)
