"""Merge layers: Add, Subtract, Average, Multiply, Maximum, Minimum, Concatenate, Dot.

Inputs are independent Gaussians with one (mean, var) each, except that the *same*
tensor passed twice (``Add()([x, x])``) is recognized from the node and treated as
perfectly correlated (2x, not the sum of two independent copies).

Position-shared variance c_i of each input (see ``estimators.base``): linear merges
combine it like the variance (independent branches); a product of independent inputs
shares prod (c_i + m_i^2) - prod m_i^2; concatenating channels makes each input's mean
a per-channel offset. An input broadcast over the positions (a squeeze-and-excitation
gate) is shared entirely. Maximum/Minimum keep the variance-weighted shared fraction.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import keras
import numpy as np
from scipy import stats

from autoinit_sym.moment_engine.order_statistics import clark_max, clark_min

from .activations import ActivationOutput
from .base import CLOSED_FORM, EXACT, LayerOutputDistributionEstimator
from .normalization import direction_moments
from .registry import estimates
from autoinit_sym.statistics.residual_sums import ShiftedActivation
from autoinit_sym.statistics.lag_correlation import scaled, summed


def identical_inputs(node: Any, count: int) -> list[list[int]]:
    """Indices of the inputs grouped by identity of their tensor (one group per distinct tensor)."""
    tensors = list(node.arguments.keras_tensors) if node is not None else []
    if len(tensors) != count:
        return [[i] for i in range(count)]
    groups: dict[int, list[int]] = {}
    for index, tensor in enumerate(tensors):
        groups.setdefault(id(tensor), []).append(index)
    return list(groups.values())


def linear_moments(coefficients: Sequence[float], means: Sequence[float], variances: Sequence[float],
                   groups: list[list[int]]) -> tuple[float, float]:
    """sum_i c_i x_i: mean sum c_i m_i; var sum over distinct tensors g of (sum_{i in g} c_i)^2 v_g."""
    mean = sum(c * m for c, m in zip(coefficients, means))
    var = sum(sum(coefficients[i] for i in g) ** 2 * variances[g[0]] for g in groups)
    return float(mean), float(var)


def product_moments(means: Sequence[float], variances: Sequence[float],
                    groups: list[list[int]]) -> tuple[float, float]:
    """prod_i x_i over independent distinct tensors, a tensor used p times entering as x^p:
    mean prod E[x_g^p], var prod E[x_g^2p] - mean^2 (Gaussian raw moments)."""
    first, second = 1.0, 1.0
    for g in groups:
        m, sd, p = means[g[0]], math.sqrt(variances[g[0]]), len(g)
        first *= stats.norm.moment(p, loc=m, scale=sd) if sd > 0 else m ** p
        second *= stats.norm.moment(2 * p, loc=m, scale=sd) if sd > 0 else m ** (2 * p)
    return float(first), float(max(second - first ** 2, 0.0))


def contracted_product_moments(n: int, means: Sequence[float], variances: Sequence[float],
                               same_tensor: bool) -> tuple[float, float]:
    """sum over n independent terms x_k y_k (a dot product / matrix product over length n):
    n times the moments of one product (:func:`product_moments`; x_k^2 when x is y)."""
    mean, var = product_moments(means, variances, [[0, 1]] if same_tensor else [[0], [1]])
    return n * mean, n * var


def mixture_moments(weights: Sequence[float], means: Sequence[float], variances: Sequence[float]
                    ) -> tuple[float, float]:
    """A size-weighted mixture: mean sum w_i m_i, var sum w_i v_i + sum w_i (m_i - mean)^2."""
    w = np.asarray(weights, dtype=float) / np.sum(weights)
    m, v = np.asarray(means, dtype=float), np.asarray(variances, dtype=float)
    mean = float(w @ m)
    return mean, float(w @ v + w @ (m - mean) ** 2)


class _Merge(LayerOutputDistributionEstimator):
    def groups(self, count: int) -> list[list[int]]:
        return identical_inputs(self.node, count)

    def input_shared(self, vars_in: Sequence[float]) -> list[float]:
        """Each input's shared variance; all of its variance for an input broadcast over the
        positions (size 1 on every position axis where the output has more, e.g. a
        squeeze-and-excitation gate), since every position then sees the same value."""
        return [v if _broadcast(self.input_shapes[i] if i < len(self.input_shapes) else None,
                                self.output_shapes[0] if self.output_shapes else None)
                else self.shared(i) for i, v in enumerate(vars_in)]


def _broadcast(shape: Sequence[int | None] | None, out: Sequence[int | None] | None) -> bool:
    if shape is None or out is None or len(shape) != len(out) or len(shape) < 3:
        return False
    positions = list(zip(shape[1:-1], out[1:-1]))
    return all(s == 1 for s, _ in positions) and any(o is None or o > 1 for _, o in positions)


@estimates(keras.layers.Add, keras.layers.Subtract, keras.layers.Average)
class LinearMergeEstimator(_Merge):
    """Add: sum of means, sum of variances; Subtract: m1 - m2, v1 + v2; Average: the same divided
    by n (mean) and n^2 (var). A tensor repeated among the inputs adds coherently. An activation's
    output plus Gaussian branches (a residual connection) is recorded as a
    :class:`ShiftedActivation`, so the activation after it integrates the non-Gaussian sum."""

    method = EXACT

    def estimate(self, means_in, vars_in):
        n = len(means_in)
        if isinstance(self.layer, keras.layers.Subtract):
            coefficients = [1.0, -1.0]
        elif isinstance(self.layer, keras.layers.Average):
            coefficients = [1.0 / n] * n
        else:
            coefficients = [1.0] * n
        groups = self.groups(n)
        shared = self.input_shared(vars_in)
        self.shared_out = linear_moments(coefficients, means_in, shared, groups)[1]
        if all(len(g) == 1 for g in groups):
            self.origin_out = shifted_origin(coefficients, means_in, vars_in, shared, list(self.origin_in))
            self.lags_out = summed([(self.lags(i), c * c * max(v - s, 0.0))
                                    for i, (c, v, s) in enumerate(zip(coefficients, vars_in, shared))])
        return linear_moments(coefficients, means_in, vars_in, groups)


def gate_fourth_ratio(mean: float, var: float, fixed: float) -> float:
    """E[a^4] / E[a^2]^2 over samples for a factor a = mean + c + e, c ~ N(0, fixed) fixed per
    channel and e ~ N(0, var - fixed) per sample (Gaussian moments, averaged over channels):
    1 + (4 (mean^2 + fixed) v + 2 v^2) / (mean^2 + var)^2 with v = var - fixed."""
    per_sample = max(var - fixed, 0.0)
    second = mean * mean + var
    if not second > 0:
        return 1.0
    return 1.0 + (4.0 * (mean * mean + max(fixed, 0.0)) * per_sample + 2.0 * per_sample ** 2) / second ** 2


def shifted_origin(coefficients: Sequence[float], means: Sequence[float], variances: Sequence[float],
                   shared: Sequence[float], origins: Sequence[Any]) -> ShiftedActivation | None:
    """sum_i c_i x_i of independent inputs, exactly one of them an unscaled activation output
    f(z) and the rest Gaussian: a ``residual_sums.ShiftedActivation`` (c f(z) + N(sum_j c_j m_j,
    sum_j c_j^2 v_j), shared part sum_j c_j^2 s_j), which the next activation integrates
    exactly; None otherwise."""
    found = [i for i, o in enumerate(origins) if isinstance(o, ActivationOutput)]
    if len(found) != 1 or origins[found[0]].scale_second != 1.0 or len(origins) != len(means):
        return None
    i = found[0]
    others = [j for j in range(len(means)) if j != i]
    noise_var = sum(coefficients[j] ** 2 * variances[j] for j in others)
    if not noise_var > 0:
        return None
    return ShiftedActivation(origins[i], coefficients[i], sum(coefficients[j] * means[j] for j in others),
                             noise_var, sum(coefficients[j] ** 2 * shared[j] for j in others))


@estimates(keras.layers.Multiply)
class MultiplyEstimator(_Merge):
    """Product of independent inputs: mean m1 m2, var (v1 + m1^2)(v2 + m2^2) - m1^2 m2^2 (iterated);
    shared (c1 + m1^2)(c2 + m2^2) - m1^2 m2^2 (the default rule when a tensor repeats), of which
    the offsets fixed over samples are (a1 + m1^2)(a2 + m2^2) - m1^2 m2^2 (a_i = c_i minus its
    per-sample part) and the rest is per sample (a gate broadcast over the positions)."""

    method = EXACT

    def estimate(self, means_in, vars_in):
        groups = self.groups(len(means_in))
        if all(len(g) == 1 for g in groups):
            shared = self.input_shared(vars_in)
            offsets = [max(self.shared(i) - self.sample_shared(i), 0.0) for i in range(len(means_in))]
            base = np.prod([m * m for m in means_in])
            self.shared_out = float(np.prod([c + m * m for c, m in zip(shared, means_in)]) - base)
            self.sample_shared_out = self.shared_out - float(
                np.prod([a + m * m for a, m in zip(offsets, means_in)]) - base)
            spread = [i for i, (c, v) in enumerate(zip(shared, vars_in)) if c < v]
            if len(spread) == 1:
                # Gates constant over the positions scale each channel's values alike; their
                # per-sample variation makes the squares covary (spatial_correlation.scaled).
                i = spread[0]
                lags = self.lags(i)
                for j in range(len(means_in)):
                    if j != i:
                        lags = scaled(lags, vars_in[i] + means_in[i] ** 2, vars_in[i] - shared[i],
                                      gate_fourth_ratio(means_in[j], vars_in[j], self.shared(j)), per_sample=False)
                self.lags_out = lags
        return product_moments(means_in, vars_in, groups)


@estimates(keras.layers.Maximum, keras.layers.Minimum)
class ExtremumEstimator(_Merge):
    """Clark's closed form for the max (min) of two independent Gaussians; for more inputs it is
    applied pairwise, treating each partial max as Gaussian (exact for two distinct inputs)."""

    method = CLOSED_FORM

    def estimate(self, means_in, vars_in):
        pair = clark_min if isinstance(self.layer, keras.layers.Minimum) else clark_max
        distinct = [g[0] for g in self.groups(len(means_in))]
        mean, var = means_in[distinct[0]], vars_in[distinct[0]]
        for i in distinct[1:]:
            mean, var = pair(mean, var, means_in[i], vars_in[i])
        return float(mean), float(var)


@estimates(keras.layers.Concatenate)
class ConcatenateEstimator(LayerOutputDistributionEstimator):
    """Mixture weighted by each input's size along the concat axis:
    mean sum w_i m_i, E[x^2] = sum w_i (v_i + m_i^2). Along the channel (last) axis each
    input's mean becomes a per-channel offset: shared sum w_i (c_i + m_i^2) - mean^2; along
    another axis the positions of one input share c_i: shared sum w_i c_i."""

    method = EXACT

    def estimate(self, means_in, vars_in):
        weights = concat_weights(self.input_shapes, self.layer.axis, len(means_in))
        shared = [self.shared(i) for i in range(len(means_in))]
        rank = len(self.input_shapes[0]) if self.input_shapes and self.input_shapes[0] is not None else None
        if rank is None or self.layer.axis % rank == rank - 1:
            self.shared_out = mixture_moments(weights, means_in, shared)[1]
        else:
            self.shared_out = float(np.average(shared, weights=weights))
        return mixture_moments(weights, means_in, vars_in)


def concat_weights(shapes: Sequence[Sequence[int | None]], axis: int, count: int) -> list[float]:
    """Each input's size along ``axis`` (equal weights where a size is unknown)."""
    sizes = [shape[axis] if shape is not None and len(shape) > 0 else None for shape in shapes]
    if len(sizes) != count or any(s is None for s in sizes):
        return [1.0] * count
    return [float(s) for s in sizes]


@estimates(keras.layers.Dot)
class DotEstimator(_Merge):
    """sum over the contracted length n of products of independent elements:
    mean n m1 m2, var n [(v1 + m1^2)(v2 + m2^2) - m1^2 m2^2]. With normalize=True, the cosine of
    two independent projected-normal directions: mean n u1 u2, E[cos^2] = 1/n + n(n-1) c1 c2
    (u, c from :func:`direction_moments`). Dot of a tensor with itself: sum of squares (or 1)."""

    method = EXACT
    method_label = "exact; closed_form with normalize=True"

    def contracted_length(self) -> int:
        axes = self.layer.axes
        axis = axes if isinstance(axes, int) else axes[0]
        shape = self.input_shapes[0]
        n = shape[axis % len(shape)]
        if n is None:
            raise ValueError(f"Dot layer {self.layer.name!r}: the contracted axis has unknown size "
                             f"(input shape {tuple(shape)}); give the model fixed feature sizes")
        return int(n)

    def estimate(self, means_in, vars_in):
        n = self.contracted_length()
        self_dot = len(self.groups(2)) == 1
        (m1, m2), (v1, v2) = means_in, vars_in
        if self.layer.normalize:
            self.method = EXACT if self_dot else CLOSED_FORM
            if self_dot:
                return 1.0, 0.0
            u1, c1 = direction_moments(m1, v1, n)
            u2, c2 = direction_moments(m2, v2, n)
            mean = n * u1 * u2
            return mean, max(1.0 / n + n * (n - 1) * c1 * c2 - mean ** 2, 0.0)
        self.method = EXACT
        return contracted_product_moments(n, means_in, vars_in, self_dot)
