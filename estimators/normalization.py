"""Normalization layers: BatchNormalization, LayerNormalization, GroupNormalization,
UnitNormalization, RMSNormalization, Normalization and Rescaling.

Inputs are independent Gaussian elements with one (mean, var); training mode (batch
statistics). Per-channel parameters (gamma/beta, scale/offset, adapted mean/variance)
are averaged over their positions: the output statistics are those of the mixture over
channels, as a measurement over the whole tensor sees them.

Position-shared variance c (see ``estimators.base``): an affine map a x + b per channel
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
import mpmath
import numpy as np
from scipy import integrate, stats

from .base import CARRY, CLOSED_FORM, EXACT, QUADRATURE, LayerOutputDistributionEstimator
from .registry import estimates


def affine_moments(scale: Any, offset: Any, mean: float, var: float) -> tuple[float, float]:
    """Moments of ``scale * x + offset`` for x ~ (mean, var), mixed over the broadcast positions.

    mean = avg(scale) mean + avg(offset); var = avg(scale^2) var + Var_positions(scale mean + offset).
    """
    a, b = np.broadcast_arrays(np.asarray(scale, dtype=float), np.asarray(offset, dtype=float))
    centres = a * mean + b
    return float(centres.mean()), float((a ** 2).mean() * var + centres.var())


def affine_shared(scale: Any, offset: Any, mean: float, shared: float) -> float:
    """Position-shared variance of ``scale * x + offset`` (per-channel arrays) for x with mean
    ``mean`` and shared variance ``shared``: avg(scale^2) shared + Var_channels(scale mean + offset)."""
    a, b = np.broadcast_arrays(np.asarray(scale, dtype=float), np.asarray(offset, dtype=float))
    return float((a ** 2).mean() * shared + (a * mean + b).var())


def standardized_second_moment(n: int | None, var: float, epsilon: float) -> tuple[float, str]:
    """E[s^2 / (s^2 + eps)] for s^2 the biased sample variance of n iid N(., var) values, and how.

    This is the second moment of (x - mean_n) / sqrt(s^2 + eps). With n*s^2/var ~ chi^2(n-1) it is
    a one-dimensional integral (quadrature); with n unknown (batch statistics) it is the
    large-n limit var / (var + eps) (closed form).
    """
    if epsilon <= 0:
        return (0.0 if n == 1 else 1.0), EXACT
    if n is None:
        return var / (var + epsilon), CLOSED_FORM
    if n <= 1 or var <= 0:
        return 0.0, EXACT
    c = n * epsilon / var
    dof = n - 1
    dist = stats.chi2(dof)
    centre, spread = float(dof), math.sqrt(2.0 * dof)
    lo, hi = max(0.0, centre - 40 * spread), centre + 40 * spread
    points = [p for p in (centre - 3 * spread, centre, centre + 3 * spread) if lo < p < hi]
    value, _ = integrate.quad(lambda q: q / (q + c) * dist.pdf(q), lo, hi, points=points,
                              epsabs=0.0, epsrel=1e-10, limit=200)
    return value, QUADRATURE


def direction_moments(mean: float, var: float, d: int) -> tuple[float, float]:
    """(E[u_i], E[u_i u_j], i != j) for u = x / ||x||, x of d iid N(mean, var) elements.

    Closed form (projected normal): with delta = sqrt(d) |mean| / sd,
    E[u_i] = sign(mean) / sqrt(d) * delta / sqrt(2) * Gamma((d+1)/2) / Gamma(d/2+1) * 1F1(1/2; d/2+1; -delta^2/2),
    E[u_i u_j] = (1 - 1F1(1; d/2+1; -delta^2/2)) / d; and E[u_i^2] = 1/d exactly.
    """
    if var <= 0:
        return math.copysign(1.0, mean) / math.sqrt(d) if mean else 0.0, 1.0 / d if mean else 0.0
    delta = math.sqrt(d) * abs(mean) / math.sqrt(var)
    z = -delta * delta / 2
    with mpmath.workdps(30):
        first = (delta / mpmath.sqrt(2) * mpmath.exp(mpmath.loggamma((d + 1) / 2) - mpmath.loggamma(d / 2 + 1))
                 * mpmath.hyp1f1(0.5, d / 2 + 1, z))
        cross = (1 - mpmath.hyp1f1(1, d / 2 + 1, z)) / d
    return math.copysign(float(first), mean) / math.sqrt(d), float(cross)


def positive_axes(axis: int | Sequence[int], rank: int) -> list[int]:
    """``axis`` (an int or several, negative counting from the end) as non-negative indices."""
    return [a % rank for a in ([axis] if isinstance(axis, int) else axis)]


def elements_along(shape: Sequence[int | None], axes: Sequence[int]) -> int | None:
    """Number of elements spanned by ``axes`` of ``shape`` (None if one of them is unknown)."""
    dims = [shape[a] for a in axes]
    return None if any(d is None for d in dims) else int(np.prod(dims))


def per_position_profile(estimator: LayerOutputDistributionEstimator) -> Any:
    """``profile_out`` of a layer normalizing each sample over ``layer.axis``: uniform (None)
    when no spatial axis (1..rank-2) is among those axes (each position is scaled to the same
    second moment), else :data:`CARRY` (positions are scaled together, keeping their ratios)."""
    shape = estimator.input_shapes[0] if estimator.input_shapes else None
    if shape is None:
        return None
    axes = positive_axes(estimator.layer.axis, len(shape))
    return CARRY if any(1 <= a <= len(shape) - 2 for a in axes) else None


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


class _Standardizing(LayerOutputDistributionEstimator):
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

    def estimate(self, means_in, vars_in):
        ratio, self.method = standardized_second_moment(self.reduction_size(), vars_in[0], self.layer.epsilon)
        shape = self.parameter_shape()
        gamma = _parameter(self.layer, self.layer.scale, "gamma", "gamma_initializer", 1.0, shape)
        beta = _parameter(self.layer, self.layer.center, "beta", "beta_initializer", 0.0, shape)
        kept = self.shared() if self.keeps_shared else self.sample_shared()
        fraction = kept / vars_in[0] if vars_in[0] > 0 else 0.0
        self.shared_out = affine_shared(gamma, beta, 0.0, ratio * fraction)
        self.sample_shared_out = affine_shared(gamma, 0.0, 0.0, ratio * self.sample_shared() / vars_in[0]
                                               if vars_in[0] > 0 else 0.0)
        return affine_moments(gamma, beta, 0.0, ratio)


@estimates(keras.layers.BatchNormalization)
class BatchNormalizationEstimator(_Standardizing):
    """Training mode, batch statistics over batch (and spatial) positions of unknown count:
    mean avg(beta), var avg(gamma^2) var/(var+eps) + Var(beta); shared Var(beta) plus the scaled
    per-sample part (offsets fixed over samples are removed, per-sample gates and masks stay)."""

    method = CLOSED_FORM
    keeps_shared = False

    def reduction_size(self) -> int | None:
        return None

    def estimate(self, means_in, vars_in):
        self.lags_out = self.lags()  # a per-channel affine map keeps the correlation of positions
        return super().estimate(means_in, vars_in)


@estimates(keras.layers.LayerNormalization)
class LayerNormalizationEstimator(_Standardizing):
    """Statistics over the normalized axes (d elements): mean avg(beta),
    var avg(gamma^2) E[s^2/(s^2+eps)] + Var(beta), s^2 ~ var chi^2(d-1)/d.
    With the deprecated rms_scaling=True: x gamma / sqrt(s^2 + eps), (mean, E[x^2]) scaled by 1/sqrt(var+eps)."""

    method = QUADRATURE

    def reduction_size(self) -> int | None:
        shape = self.input_shapes[0] if self.input_shapes else None
        return None if shape is None else elements_along(shape, positive_axes(self.layer.axis, len(shape)))

    def estimate(self, means_in, vars_in):
        self.profile_out = per_position_profile(self)
        if not self.layer.rms_scaling:
            return super().estimate(means_in, vars_in)
        self.method = CLOSED_FORM
        inv = 1.0 / math.sqrt(vars_in[0] + self.layer.epsilon)
        gamma = _parameter(self.layer, True, "gamma", "gamma_initializer", 1.0, self.parameter_shape())
        self.shared_out = affine_shared(gamma * inv, 0.0, means_in[0], self.shared())
        return affine_moments(gamma * inv, 0.0, means_in[0], vars_in[0])


@estimates(keras.layers.GroupNormalization)
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


@estimates(keras.layers.UnitNormalization)
class UnitNormalizationEstimator(LayerOutputDistributionEstimator):
    """x / ||x|| over d elements (projected normal, closed form): E[y^2] = 1/d,
    mean from :func:`direction_moments`."""

    method = CLOSED_FORM

    def estimate(self, means_in, vars_in):
        self.profile_out = per_position_profile(self)
        shape = self.input_shapes[0]
        d = elements_along(shape, positive_axes(self.layer.axis, len(shape)))
        first, _ = direction_moments(means_in[0], vars_in[0], d)
        return first, 1.0 / d - first ** 2


@estimates(keras.layers.RMSNormalization)
class RMSNormalizationEstimator(LayerOutputDistributionEstimator):
    """scale * x / sqrt(mean(x^2) + eps) = scale * sqrt(d) u sqrt(r), u = x/||x||, with the
    epsilon factor r taken at mean(x^2) = E[x^2]: r = E[x^2] / (E[x^2] + eps)."""

    method = CLOSED_FORM

    def estimate(self, means_in, vars_in):
        self.profile_out = per_position_profile(self)
        mean, var = means_in[0], vars_in[0]
        shape = self.input_shapes[0]
        axes = positive_axes(self.layer.axis, len(shape))
        d = elements_along(shape, axes)
        first, _ = direction_moments(mean, var, d)
        second = var + mean ** 2
        unit_scale = math.sqrt(d * second / (second + self.layer.epsilon))
        scale = np.asarray(keras.ops.convert_to_numpy(self.layer.scale), dtype=float)
        # u has mean `first` and variance 1/d - first^2 per element.
        return affine_moments(scale * unit_scale, 0.0, first, 1.0 / d - first ** 2)


@estimates(keras.layers.Normalization)
class NormalizationEstimator(LayerOutputDistributionEstimator):
    """Exact affine map with the adapted statistics m, v per feature:
    (x - m) / max(sqrt(v), eps), or with invert=True m + x * max(sqrt(v), eps)."""

    method = EXACT

    def estimate(self, means_in, vars_in):
        layer = self.layer
        m, v = (np.asarray(keras.ops.convert_to_numpy(t), dtype=float) for t in (layer.mean, layer.variance))
        sd = np.maximum(np.sqrt(v), keras.config.epsilon())
        scale, offset = (sd, m) if layer.invert else (1.0 / sd, -m / sd)
        self.shared_out = affine_shared(scale, offset, means_in[0], self.shared())
        return affine_moments(scale, offset, means_in[0], vars_in[0])


@estimates(keras.layers.Rescaling)
class RescalingEstimator(LayerOutputDistributionEstimator):
    """Exact affine map x * scale + offset (scale/offset may be per-channel arrays)."""

    method = EXACT

    def estimate(self, means_in, vars_in):
        scale, offset = (np.asarray(keras.ops.convert_to_numpy(t), dtype=float)
                         for t in (self.layer.scale, self.layer.offset))
        self.shared_out = affine_shared(scale, offset, means_in[0], self.shared())
        return affine_moments(scale, offset, means_in[0], vars_in[0])
