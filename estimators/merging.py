"""Merge layers: Add, Subtract, Average, Multiply, Maximum, Minimum, Concatenate, Dot.

Inputs are independent Gaussians with one (mean, var) each, except that the *same*
tensor passed twice (``Add()([x, x])``) is recognized from the node and treated as
perfectly correlated (2x, not the sum of two independent copies).

Position-shared variance c_i of each input (``statistics.state``): linear merges
combine it like the variance (independent branches); a product of independent inputs
shares prod (c_i + m_i^2) - prod m_i^2; concatenating channels makes each input's mean
a per-channel offset. An input broadcast over the positions (a squeeze-and-excitation
gate) is shared entirely. Maximum/Minimum keep the variance-weighted shared fraction.
"""
from __future__ import annotations

from typing import Sequence

import keras
import numpy as np

from autoinit_sym.moment_engine.order_statistics import clark_max, clark_min
from autoinit_sym.statistics.lag_correlation import scaled, summed
from autoinit_sym.statistics.linear import (contracted_product_moments, direction_moments, gate_fourth_ratio,
                                            linear_moments, mixture_moments, product_moments, shifted_origin)
from autoinit_sym.statistics.state import TensorState

from .base import CLOSED_FORM, EXACT, LayerRule, moments_of
from .registry import rule_for
from .shapes import concat_weights, identical_inputs


class _Merge(LayerRule):
    def groups(self, count: int) -> list[list[int]]:
        return identical_inputs(self.node, count)

    def input_shared(self, inputs: Sequence[TensorState]) -> list[float]:
        """Each input's shared variance; all of its variance for an input broadcast over the
        positions (size 1 on every position axis where the output has more, e.g. a
        squeeze-and-excitation gate), since every position then sees the same value."""
        return [s.var if _broadcast(self.input_shapes[i] if i < len(self.input_shapes) else None,
                                    self.output_shapes[0] if self.output_shapes else None)
                else s.shared for i, s in enumerate(inputs)]


def _broadcast(shape: Sequence[int | None] | None, out: Sequence[int | None] | None) -> bool:
    if shape is None or out is None or len(shape) != len(out) or len(shape) < 3:
        return False
    positions = list(zip(shape[1:-1], out[1:-1]))
    return all(s == 1 for s, _ in positions) and any(o is None or o > 1 for _, o in positions)


@rule_for(keras.layers.Add, keras.layers.Subtract, keras.layers.Average)
class LinearMergeEstimator(_Merge):
    """Add: sum of means, sum of variances; Subtract: m1 - m2, v1 + v2; Average: the same divided
    by n (mean) and n^2 (var). A tensor repeated among the inputs adds coherently. An activation's
    output plus Gaussian branches (a residual connection) is recorded as a
    :class:`ShiftedActivation`, so the activation after it integrates the non-Gaussian sum."""

    method = EXACT

    def propagate(self, inputs: Sequence[TensorState]) -> TensorState:
        means_in, vars_in = moments_of(inputs)
        n = len(inputs)
        if isinstance(self.layer, keras.layers.Subtract):
            coefficients = [1.0, -1.0]
        elif isinstance(self.layer, keras.layers.Average):
            coefficients = [1.0 / n] * n
        else:
            coefficients = [1.0] * n
        groups = self.groups(n)
        shared = self.input_shared(inputs)
        known = {"shared": linear_moments(coefficients, means_in, shared, groups)[1]}
        if all(len(g) == 1 for g in groups):
            known["origin"] = shifted_origin(coefficients, means_in, vars_in, shared, [s.origin for s in inputs])
            known["lags"] = summed([(s.lags, c * c * max(s.var - c_s, 0.0))
                                    for s, c, c_s in zip(inputs, coefficients, shared)])
        return self.output(inputs, *linear_moments(coefficients, means_in, vars_in, groups), **known)


@rule_for(keras.layers.Multiply)
class MultiplyEstimator(_Merge):
    """Product of independent inputs: mean m1 m2, var (v1 + m1^2)(v2 + m2^2) - m1^2 m2^2 (iterated);
    shared (c1 + m1^2)(c2 + m2^2) - m1^2 m2^2 (the default rule when a tensor repeats), of which
    the offsets fixed over samples are (a1 + m1^2)(a2 + m2^2) - m1^2 m2^2 (a_i = c_i minus its
    per-sample part) and the rest is per sample (a gate broadcast over the positions)."""

    method = EXACT

    def propagate(self, inputs: Sequence[TensorState]) -> TensorState:
        means_in, vars_in = moments_of(inputs)
        groups = self.groups(len(means_in))
        known = {}
        if all(len(g) == 1 for g in groups):
            shared = self.input_shared(inputs)
            offsets = [max(s.shared - s.sample_shared, 0.0) for s in inputs]
            base = np.prod([m * m for m in means_in])
            known["shared"] = float(np.prod([c + m * m for c, m in zip(shared, means_in)]) - base)
            known["sample_shared"] = known["shared"] - float(
                np.prod([a + m * m for a, m in zip(offsets, means_in)]) - base)
            spread = [i for i, (c, v) in enumerate(zip(shared, vars_in)) if c < v]
            if len(spread) == 1:
                # Gates constant over the positions scale each channel's values alike; their
                # per-sample variation makes the squares covary (lag_correlation.scaled).
                i = spread[0]
                lags = inputs[i].lags
                for j, gate in enumerate(inputs):
                    if j != i:
                        lags = scaled(lags, inputs[i].second_moment, vars_in[i] - shared[i],
                                      gate_fourth_ratio(gate.mean, gate.var, gate.shared), per_sample=False)
                known["lags"] = lags
        return self.output(inputs, *product_moments(means_in, vars_in, groups), **known)


@rule_for(keras.layers.Maximum, keras.layers.Minimum)
class ExtremumEstimator(_Merge):
    """Clark's closed form for the max (min) of two independent Gaussians; for more inputs it is
    applied pairwise, treating each partial max as Gaussian (exact for two distinct inputs)."""

    method = CLOSED_FORM

    def propagate(self, inputs: Sequence[TensorState]) -> TensorState:
        means_in, vars_in = moments_of(inputs)
        pair = clark_min if isinstance(self.layer, keras.layers.Minimum) else clark_max
        distinct = [g[0] for g in self.groups(len(means_in))]
        mean, var = means_in[distinct[0]], vars_in[distinct[0]]
        for i in distinct[1:]:
            mean, var = pair(mean, var, means_in[i], vars_in[i])
        return self.output(inputs, float(mean), float(var))


@rule_for(keras.layers.Concatenate)
class ConcatenateEstimator(LayerRule):
    """Mixture weighted by each input's size along the concat axis:
    mean sum w_i m_i, E[x^2] = sum w_i (v_i + m_i^2). Along the channel (last) axis each
    input's mean becomes a per-channel offset: shared sum w_i (c_i + m_i^2) - mean^2; along
    another axis the positions of one input share c_i: shared sum w_i c_i."""

    method = EXACT

    def propagate(self, inputs: Sequence[TensorState]) -> TensorState:
        means_in, vars_in = moments_of(inputs)
        weights = concat_weights(self.input_shapes, self.layer.axis, len(inputs))
        shared = [s.shared for s in inputs]
        rank = len(self.input_shapes[0]) if self.input_shapes and self.input_shapes[0] is not None else None
        if rank is None or self.layer.axis % rank == rank - 1:
            out_shared = mixture_moments(weights, means_in, shared)[1]
        else:
            out_shared = float(np.average(shared, weights=weights))
        return self.output(inputs, *mixture_moments(weights, means_in, vars_in), shared=out_shared)


@rule_for(keras.layers.Dot)
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

    def propagate(self, inputs: Sequence[TensorState]) -> TensorState:
        return self.output(inputs, *self.dot_moments(*moments_of(inputs)))

    def dot_moments(self, means_in: list[float], vars_in: list[float]) -> tuple[float, float]:
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
