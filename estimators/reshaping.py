"""Reshaping layers: Flatten, Reshape, Permute, RepeatVector, Cropping*, UpSampling*,
ZeroPadding*, Resizing, and the TimeDistributed wrapper.

Rearranging, repeating or cropping iid elements leaves each element's law unchanged;
zero padding and interpolation change the mixture over output positions exactly.
Zero padding, cropping and upsampling also map the per-position profile
(``statistics.border_profile``); Flatten and Reshape end it.
The position-shared variance (see ``estimators.base``) keeps its fraction (the default
rule), except where noted.
"""
from __future__ import annotations

from functools import lru_cache

import keras
import numpy as np

from .activations import ActivationOutput
from .base import EXACT, LayerOutputDistributionEstimator
from .core import IdentityEstimator
from .registry import estimates
from autoinit_sym.statistics.lag_correlation import radii_for, resized
from autoinit_sym.statistics.border_profile import normalized, spatial_shape


@estimates(keras.layers.Flatten, keras.layers.Reshape, keras.layers.Permute)
class RearrangingEstimator(IdentityEstimator):
    """Every output element is one input element (moved, repeated or kept): (mean, var) unchanged."""


def _pairs(value, rank: int) -> list[tuple[int, int]]:
    """A padding/cropping setting as one (before, after) pair per spatial axis."""
    if rank == 1 and len(value) == 2 and all(isinstance(v, int) for v in value):
        return [tuple(value)]
    return [tuple(pair) for pair in value]


def _channels_last_profile(estimator: LayerOutputDistributionEstimator) -> np.ndarray | None:
    """The input profile of a channels_last layer; None when uniform or channels_first."""
    if getattr(estimator.layer, "data_format", None) == "channels_first":
        return None
    return estimator.profile()


@estimates(keras.layers.Cropping1D, keras.layers.Cropping2D, keras.layers.Cropping3D)
class CroppingEstimator(RearrangingEstimator):
    """Kept positions are input positions: (mean, var) unchanged for a uniform input; with a
    per-position profile r the kept second moment is E[x^2] mean(r over the kept positions)
    (the mean taken as uniform) and the profile is r cropped."""

    def estimate(self, means_in, vars_in):
        profile = _channels_last_profile(self)
        if profile is None:
            return super().estimate(means_in, vars_in)
        kept = profile[tuple(slice(a, n - b) for (a, b), n in
                             zip(_pairs(self.layer.cropping, profile.ndim), profile.shape))]
        self.profile_out = normalized(kept)
        second = (vars_in[0] + means_in[0] ** 2) * float(kept.mean())
        return means_in[0], max(second - means_in[0] ** 2, 0.0)


@estimates(keras.layers.UpSampling1D, keras.layers.UpSampling3D)
class UpSamplingEstimator(RearrangingEstimator):
    """Nearest-neighbour repetition: (mean, var) unchanged; the profile is repeated."""

    def estimate(self, means_in, vars_in):
        self.profile_out = repeated_profile(self)
        return super().estimate(means_in, vars_in)


def repeated_profile(estimator: LayerOutputDistributionEstimator) -> np.ndarray | None:
    """The input profile with every position repeated ``layer.size`` times along its axis."""
    profile = _channels_last_profile(estimator)
    if profile is None:
        return None
    size = estimator.layer.size
    for axis, factor in enumerate((size,) * profile.ndim if isinstance(size, int) else size):
        profile = np.repeat(profile, factor, axis=axis)
    return profile


@estimates(keras.layers.RepeatVector)
class RepeatVectorEstimator(RearrangingEstimator):
    """Every output position is the same input vector: (mean, var) unchanged, all of var shared."""

    def estimate(self, means_in, vars_in):
        self.shared_out = vars_in[0]
        return super().estimate(means_in, vars_in)


@estimates(keras.layers.ZeroPadding1D, keras.layers.ZeroPadding2D, keras.layers.ZeroPadding3D)
class ZeroPaddingEstimator(LayerOutputDistributionEstimator):
    """A fraction p of the output positions is zero: mean m (1-p), E[x^2] = (v + m^2)(1-p),
    with 1 - p = (input elements) / (output elements) per sample. Two positions are both real
    with probability ~(1-p)^2: shared (1-p)^2 c (the zeros' fixed pattern is not shared).
    The output of an activation with f >= 0 keeps its origin (max pooling's rule), and the
    per-position profile gets zeros at the padded positions (:meth:`padded_profile`)."""

    method = EXACT

    def estimate(self, means_in, vars_in):
        kept = _elements(self.input_shapes[0]) / _elements(self._output_shape())
        mean, var = means_in[0], vars_in[0]
        self.profile_out = self.padded_profile()
        self.shared_out = kept ** 2 * self.shared()
        out_spatial = spatial_shape(self._output_shape())
        self.lags_out = None if out_spatial is None else resized(self.lags(), radii_for(out_spatial))
        origin = self.origin()
        self.origin_out = origin if isinstance(origin, ActivationOutput) and origin.non_negative else None
        return mean * kept, (var + mean ** 2) * kept - (mean * kept) ** 2

    def padded_profile(self) -> np.ndarray | None:
        """The input profile (1 where uniform) with zeros at the padded positions, normalized:
        zero padding is where border profiles start."""
        if self.layer.data_format == "channels_first":
            return None
        spatial = spatial_shape(self.input_shapes[0])
        if spatial is None:
            return None
        profile = self.profile()
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
def interpolation_weights(n: int, n_out: int, interpolation: str, antialias: bool = False
                          ) -> tuple[float, float, float]:
    """Along one axis resized from n to n_out: averages over output positions i of
    r_i = sum_k W_ik, r_i^2 and q_i = sum_k W_ik^2, for the weight matrix W that Keras's
    image resize applies (found exactly by resizing the one-hot inputs e_k)."""
    basis = np.eye(n, dtype="float32").reshape(n, n, 1, 1)
    out = keras.ops.image.resize(basis, (n_out, 1), interpolation=interpolation, antialias=antialias,
                                 data_format="channels_last")
    weights = np.asarray(keras.ops.convert_to_numpy(out), dtype=float)[:, :, 0, 0].T  # (out, in)
    rows = weights.sum(axis=1)
    return float(rows.mean()), float((rows ** 2).mean()), float((weights ** 2).sum(axis=1).mean())


def resized_moments(mean: float, var: float, sizes: list[tuple[int, int]], interpolation: str,
                    antialias: bool = False) -> tuple[float, float]:
    """Each output is sum_k W_k x_k over independent inputs, W separable over the axes resized
    (n_in -> n_out each): mean m R1, var v Q + m^2 (R2 - R1^2), with R1, R2, Q the products
    over the axes of the averages of sum W, (sum W)^2 and sum W^2 (:func:`interpolation_weights`)."""
    r1, r2, q = 1.0, 1.0, 1.0
    for n, n_out in sizes:
        a1, a2, aq = interpolation_weights(int(n), int(n_out), interpolation, antialias)
        r1, r2, q = r1 * a1, r2 * a2, q * aq
    return mean * r1, var * q + mean ** 2 * (r2 - r1 ** 2)


def _spatial(estimator: LayerOutputDistributionEstimator) -> list[int]:
    layer, shape = estimator.layer, estimator.input_shapes[0]
    spatial = shape[1:3] if layer.data_format == "channels_last" else shape[2:4]
    if any(n is None for n in spatial):
        raise ValueError(f"{type(layer).__name__} {layer.name!r} with interpolation={layer.interpolation!r} "
                         f"needs the spatial input size, got input shape {tuple(shape)}")
    return [int(n) for n in spatial]


@estimates(keras.layers.UpSampling2D)
class UpSampling2DEstimator(LayerOutputDistributionEstimator):
    """nearest: unchanged; otherwise the exact moments of the interpolated outputs
    (:func:`resized_moments` for n -> n * factor along height and width)."""

    method = EXACT

    def estimate(self, means_in, vars_in):
        layer = self.layer
        self.profile_out = repeated_profile(self)  # exact for nearest, the nearest pattern otherwise
        if layer.interpolation == "nearest":
            return means_in[0], vars_in[0]
        sizes = [(n, n * f) for n, f in zip(_spatial(self), layer.size)]
        return resized_moments(means_in[0], vars_in[0], sizes, layer.interpolation)


@estimates(keras.layers.Resizing)
class ResizingEstimator(LayerOutputDistributionEstimator):
    """Exact moments of the interpolated outputs (:func:`resized_moments`, antialias included);
    with crop_to_aspect_ratio or pad_to_aspect_ratio the layer is probed instead."""

    method = EXACT

    def estimate(self, means_in, vars_in):
        layer = self.layer
        if layer.crop_to_aspect_ratio or layer.pad_to_aspect_ratio:
            from .ops import no_rule_warning, probe_instead

            why = "with crop_to_aspect_ratio/pad_to_aspect_ratio"
            return probe_instead(self, means_in, vars_in, no_rule_warning(layer, why))
        sizes = list(zip(_spatial(self), (layer.height, layer.width)))
        return resized_moments(means_in[0], vars_in[0], sizes, layer.interpolation, layer.antialias)


@estimates(keras.layers.TimeDistributed)
class TimeDistributedEstimator(LayerOutputDistributionEstimator):
    """The wrapped layer's estimate on one time step (shapes without the time axis); its
    weight writes and method are those of the wrapped layer's estimator."""

    method_label = "the wrapped layer's"

    def estimate(self, means_in, vars_in):
        def step(shape):
            return None if shape is None else (shape[0], *shape[2:])

        inner = self.context.estimator_for(self.layer.layer, [step(s) for s in self.input_shapes],
                                           [step(s) for s in self.output_shapes], None)
        if inner is None:
            from autoinit_sym.walk.probe import missing_estimator_warning

            from .ops import probe_instead

            warning = missing_estimator_warning(self.layer.layer.name, True)
            return probe_instead(self, means_in, vars_in, warning)
        inner.shared_in = self.shared_in
        result = inner.estimate(means_in, vars_in)
        self.method, self.shared_out = inner.method, inner.shared_out
        return result
