"""Reshaping layers: Flatten, Reshape, Permute, RepeatVector, Cropping*, UpSampling*,
ZeroPadding*, Resizing, and the TimeDistributed wrapper.

Rearranging, repeating or cropping iid elements leaves each element's law unchanged;
zero padding and interpolation change the mixture over output positions exactly.
Zero padding, cropping and upsampling also map the per-position profile
(``statistics.border_profile``); Flatten and Reshape end it. Nearest-neighbour upsampling maps
the lag correlation (repeated neighbours are fully correlated).
A layer that only moves elements keeps every element's value, so its output keeps the
input's record (its origin included) except what depends on where the positions are.
The position-shared variance (``statistics.state``) keeps its fraction, except where noted.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Sequence

import keras
import numpy as np

from autoinit_sym.statistics.activation import ActivationOutput
from autoinit_sym.statistics.border_profile import normalized, spatial_shape
from autoinit_sym.statistics.lag_correlation import permuted, radii_for, resized, upsampled
from autoinit_sym.statistics.state import TensorState
from autoinit_sym.walk.probe import missing_estimator_warning, no_rule_warning, probed

from .base import EXACT, LayerRule
from .registry import rule_for


@rule_for(keras.layers.Flatten, keras.layers.Reshape, keras.layers.Permute)
class RearrangingEstimator(LayerRule):
    """Every output element is one input element (moved, repeated or kept): the input record,
    unchanged where the per-sample shape is; a Permute of the spatial axes (channels staying
    last) permutes the profile and lag correlation, any other rearrangement ends them."""

    keeps_values = True

    def propagate(self, inputs: Sequence[TensorState]) -> TensorState:
        state = inputs[0]
        shape_in = tuple(self.input_shapes[0][1:]) if self.input_shapes else None
        shape_out = tuple(self.output_shapes[0][1:]) if self.output_shapes else None
        if isinstance(self.layer, keras.layers.Permute):
            order = [d - 1 for d in self.layer.dims]
            if order == sorted(order):
                return state
            if order[-1] == len(order) - 1 and shape_in is not None and None not in shape_in:
                spatial = order[:-1]
                profile = None if state.profile is None else np.transpose(state.profile, spatial)
                return state.replace(profile=profile, lags=permuted(state.lags, spatial))
        elif shape_in is not None and shape_in == shape_out and None not in shape_in:
            return state
        return state.replace(profile=None, lags=None)


def _pairs(value, rank: int) -> list[tuple[int, int]]:
    """A padding/cropping setting as one (before, after) pair per spatial axis."""
    if rank == 1 and len(value) == 2 and all(isinstance(v, int) for v in value):
        return [tuple(value)]
    return [tuple(pair) for pair in value]


def _channels_last_profile(rule: LayerRule, profile: np.ndarray | None) -> np.ndarray | None:
    """The input ``profile`` of a channels_last layer; None when uniform or channels_first."""
    if getattr(rule.layer, "data_format", None) == "channels_first":
        return None
    return profile


def _resized_lags(rule: LayerRule, lags: Any) -> Any:
    """The input's lag correlation with its radii fitted to the output's spatial shape."""
    spatial = rule.output_spatial()
    return None if spatial is None else resized(lags, radii_for(spatial))


@rule_for(keras.layers.Cropping1D, keras.layers.Cropping2D, keras.layers.Cropping3D)
class CroppingEstimator(LayerRule):
    """Kept positions are input positions: the input record for a uniform input (its lag
    correlation fitted to the smaller map); with a per-position profile r the kept second
    moment is E[x^2] mean(r over the kept positions) (the mean taken as uniform) and the
    profile is r cropped."""

    def propagate(self, inputs: Sequence[TensorState]) -> TensorState:
        state = inputs[0]
        lags = _resized_lags(self, state.lags)
        profile = _channels_last_profile(self, state.profile)
        if profile is None:
            return state.replace(profile=None, lags=lags)
        kept = profile[tuple(slice(a, n - b) for (a, b), n in
                             zip(_pairs(self.layer.cropping, profile.ndim), profile.shape))]
        second = state.second_moment * float(kept.mean())
        return self.output(inputs, state.mean, max(second - state.mean ** 2, 0.0), profile=normalized(kept),
                           lags=lags)


@rule_for(keras.layers.UpSampling1D, keras.layers.UpSampling3D)
class UpSamplingEstimator(LayerRule):
    """Nearest-neighbour repetition: the input record with the profile repeated and the lag
    correlation mapped (repeated neighbours are fully correlated, ``lag_correlation.upsampled``)."""

    def propagate(self, inputs: Sequence[TensorState]) -> TensorState:
        return inputs[0].replace(profile=repeated_profile(self, inputs[0].profile),
                                 lags=repeated_lags(self, inputs[0].lags))


def repeated_profile(rule: LayerRule, profile: np.ndarray | None) -> np.ndarray | None:
    """The input ``profile`` with every position repeated ``layer.size`` times along its axis."""
    profile = _channels_last_profile(rule, profile)
    if profile is None:
        return None
    size = rule.layer.size
    for axis, factor in enumerate((size,) * profile.ndim if isinstance(size, int) else size):
        profile = np.repeat(profile, factor, axis=axis)
    return profile


def repeated_lags(rule: LayerRule, lags: Any) -> Any:
    """The input's lag correlation after nearest-neighbour repetition by ``layer.size`` per axis
    (``lag_correlation.upsampled``); None for channels_first or an unknown output shape."""
    spatial = rule.output_spatial()
    if lags is None or spatial is None or getattr(rule.layer, "data_format", None) == "channels_first":
        return None
    size = rule.layer.size
    return upsampled(lags, (size,) * len(lags.radii) if isinstance(size, int) else tuple(size), spatial)


@rule_for(keras.layers.RepeatVector)
class RepeatVectorEstimator(LayerRule):
    """Every output position is the same input vector: (mean, var) and origin unchanged, all
    of var shared."""

    keeps_values = True

    def propagate(self, inputs: Sequence[TensorState]) -> TensorState:
        state = inputs[0]
        return self.output(inputs, state.mean, state.var, shared=state.var, origin=state.origin)


@rule_for(keras.layers.ZeroPadding1D, keras.layers.ZeroPadding2D, keras.layers.ZeroPadding3D)
class ZeroPaddingEstimator(LayerRule):
    """A fraction p of the output positions is zero: mean m (1-p), E[x^2] = (v + m^2)(1-p),
    with 1 - p = (input elements) / (output elements) per sample. Two positions are both real
    with probability ~(1-p)^2: shared (1-p)^2 c (the zeros' fixed pattern is not shared).
    The output of an activation with f >= 0 keeps its origin (max pooling's rule), and the
    per-position profile gets zeros at the padded positions (:meth:`padded_profile`)."""

    method = EXACT

    def propagate(self, inputs: Sequence[TensorState]) -> TensorState:
        state = inputs[0]
        kept = _elements(self.input_shapes[0]) / _elements(self._output_shape())
        mean, var = state.mean, state.var
        out_spatial = spatial_shape(self._output_shape())
        origin = state.origin if isinstance(state.origin, ActivationOutput) and state.origin.non_negative else None
        return self.output(inputs, mean * kept, (var + mean ** 2) * kept - (mean * kept) ** 2,
                           profile=self.padded_profile(state.profile), shared=kept ** 2 * state.shared,
                           lags=None if out_spatial is None else resized(state.lags, radii_for(out_spatial)),
                           origin=origin)

    def padded_profile(self, profile: np.ndarray | None) -> np.ndarray | None:
        """The input ``profile`` (1 where uniform) with zeros at the padded positions, normalized:
        zero padding is where border profiles start."""
        if self.layer.data_format == "channels_first":
            return None
        spatial = spatial_shape(self.input_shapes[0])
        if spatial is None:
            return None
        values = np.ones(spatial) if profile is None else profile
        return normalized(np.pad(values, _pairs(self.layer.padding, len(spatial))))

    def _output_shape(self) -> tuple:
        if self.output_shapes and self.output_shapes[0] is not None:
            return tuple(self.output_shapes[0])
        return tuple(self.layer.compute_output_shape(tuple(self.input_shapes[0])))


def _elements(shape) -> float:
    dims = list(shape[1:])
    if any(d is None for d in dims):
        raise ValueError(f"zero padding needs the full per-sample shape, got {tuple(shape)}; "
                         "build the model with fixed sizes")
    return float(np.prod(dims))


@lru_cache(maxsize=256)
def interpolation_weights(sizes: tuple[tuple[int, int], ...], axis: int, interpolation: str, antialias: bool = False
                          ) -> tuple[float, float, float]:
    """Along ``axis`` (0: height, 1: width) of an image resized from ``sizes`` [(n_in, n_out) per
    axis]: averages over output positions i of r_i = sum_k W_ik, r_i^2 and q_i = sum_k W_ik^2,
    for the weight matrix W that Keras's image resize applies along that axis (found exactly by
    resizing one-hot rows e_k, constant along the other axis, to the real output size: a backend's
    kernel may depend on the other axis' resize, as torch's antialiased bicubic does)."""
    (n, n_out), (m, m_out) = sizes[axis], sizes[1 - axis]
    basis = np.broadcast_to(np.eye(n, dtype="float32")[:, :, None], (n, n, m))
    basis = (basis if axis == 0 else basis.transpose(0, 2, 1))[..., None]
    target = (n_out, m_out) if axis == 0 else (m_out, n_out)
    out = keras.ops.convert_to_numpy(keras.ops.image.resize(np.ascontiguousarray(basis), target,
                                                            interpolation=interpolation, antialias=antialias,
                                                            data_format="channels_last"))
    weights = np.asarray(out[:, :, 0, 0] if axis == 0 else out[:, 0, :, 0], dtype=float).T  # (out, in)
    rows = weights.sum(axis=1)
    return float(rows.mean()), float((rows ** 2).mean()), float((weights ** 2).sum(axis=1).mean())


def resized_moments(mean: float, var: float, sizes: list[tuple[int, int]], interpolation: str,
                    antialias: bool = False) -> tuple[float, float]:
    """Each output is sum_k W_k x_k over independent inputs, W separable over the height and width
    resized (sizes: [(n_in, n_out)] for each): mean m R1, var v Q + m^2 (R2 - R1^2), with R1, R2, Q
    the products over the axes of the averages of sum W, (sum W)^2 and sum W^2
    (:func:`interpolation_weights`)."""
    r1, r2, q = 1.0, 1.0, 1.0
    sizes = tuple((int(n), int(n_out)) for n, n_out in sizes)
    for axis in range(2):
        a1, a2, aq = interpolation_weights(sizes, axis, interpolation, antialias)
        r1, r2, q = r1 * a1, r2 * a2, q * aq
    return mean * r1, var * q + mean ** 2 * (r2 - r1 ** 2)


def _spatial(rule: LayerRule) -> list[int]:
    layer, shape = rule.layer, rule.input_shapes[0]
    spatial = shape[1:3] if layer.data_format == "channels_last" else shape[2:4]
    if any(n is None for n in spatial):
        raise ValueError(f"{type(layer).__name__} {layer.name!r} with interpolation={layer.interpolation!r} "
                         f"needs the spatial input size, got input shape {tuple(shape)}")
    return [int(n) for n in spatial]


@rule_for(keras.layers.UpSampling2D)
class UpSampling2DEstimator(LayerRule):
    """nearest: repetition (the lag correlation mapped); otherwise the exact moments of the
    interpolated outputs (:func:`resized_moments` for n -> n * factor along height and width). An
    interpolation ends the lag correlation."""

    method = EXACT

    def propagate(self, inputs: Sequence[TensorState]) -> TensorState:
        layer, state = self.layer, inputs[0]
        profile = repeated_profile(self, state.profile)  # exact for nearest, the nearest pattern otherwise
        if layer.interpolation == "nearest":
            return state.replace(profile=profile, lags=repeated_lags(self, state.lags))
        sizes = [(n, n * f) for n, f in zip(_spatial(self), layer.size)]
        return self.output(inputs, *resized_moments(state.mean, state.var, sizes, layer.interpolation),
                           profile=profile)


@rule_for(keras.layers.Resizing)
class ResizingEstimator(LayerRule):
    """Exact moments of the interpolated outputs (:func:`resized_moments`, antialias included);
    with crop_to_aspect_ratio or pad_to_aspect_ratio the layer is probed instead."""

    method = EXACT

    def propagate(self, inputs: Sequence[TensorState]) -> TensorState | list[TensorState]:
        layer = self.layer
        if layer.crop_to_aspect_ratio or layer.pad_to_aspect_ratio:
            why = "with crop_to_aspect_ratio/pad_to_aspect_ratio"
            return probed(self, inputs, no_rule_warning(layer, why))
        sizes = list(zip(_spatial(self), (layer.height, layer.width)))
        return self.output(inputs, *resized_moments(inputs[0].mean, inputs[0].var, sizes, layer.interpolation,
                                                    layer.antialias))


@rule_for(keras.layers.TimeDistributed)
class TimeDistributedEstimator(LayerRule):
    """The wrapped layer's rule on one time step (shapes without the time axis); its weight
    writes, output records and method are those of the wrapped layer's rule."""

    method_label = "the wrapped layer's"

    def propagate(self, inputs: Sequence[TensorState]) -> TensorState | list[TensorState]:
        def step(shape):
            return None if shape is None else (shape[0], *shape[2:])

        inner = self.context.rule_for(self.layer.layer, [step(s) for s in self.input_shapes],
                                      [step(s) for s in self.output_shapes], None)
        if inner is None:
            return probed(self, inputs, missing_estimator_warning(self.layer.layer.name, True))
        result = inner.propagate(inputs)
        self.method = inner.method
        return result
