"""What every weighted layer shares: kernel scale from the input's second moment,
the bias, and the fused activation.

A layer computing z = sum_{i<fan_in} w_i x_i + b with zero-mean weights of variance
s^2 independent of the inputs has E[z] = E[b] and Var(z) = fan_in s^2 E[x^2] + Var(b).
AutoInit sets s^2 = signal_variance / (fan_in E[x^2]) with E[x^2] = var + mean^2,
then passes N(E[b], signal_variance + Var(b)) through the layer's activation.

Position-shared variance (``statistics.state``): for an input x = m + a + e with
Cov(x_p, x_q) = c between distinct positions, one output channel's sum at positions p, q
shares the same weights, so Cov(z_p, z_q) = fan_in s^2 (m^2 + c) + Var(b)
= signal_variance (m^2 + c) / E[x^2] + Var(b) (times ``shared_tap_ratio`` for
convolutions): an input mean becomes a per-channel offset common to all positions. That pre-activation sharing goes through the
activation by ``statistics.activation.activation_shared``.

The per-sample part of the input's shared variance passes the same
way, without the mean: pre-activation sample part signal_variance b / E[x^2]; the
activation keeps its fraction of the shared variance.

A layer called at several sites is scaled from its combined input statistics
(E[x^2] averaged over the calls), which the walk supplies through
``context.shared_input_stats`` (id(layer) -> (means, vars)); each call's own
pre-activation then has variance signal_variance * E[x^2]_call / E[x^2]_combined.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import keras
import numpy as np

from autoinit_sym.statistics.activation import classify
from autoinit_sym.statistics.border_profile import normalized
from autoinit_sym.statistics.elementwise import activated
from autoinit_sym.statistics.state import TensorState
from autoinit_sym.walk.weights import TRUNCATED_STD

from .base import EXACT, LayerRule, moments_of


def initializer_statistics(initializer: Any, variable: Any = None) -> tuple[float, float]:
    """Mean and variance of the values ``initializer`` draws (read from its parameters);
    for an initializer whose distribution is not read here, those of ``variable``'s
    current values."""
    inits = keras.initializers
    if initializer is None or isinstance(initializer, inits.Zeros):
        return 0.0, 0.0
    if isinstance(initializer, inits.Ones):
        return 1.0, 0.0
    if isinstance(initializer, inits.Constant):
        return float(np.mean(initializer.value)), 0.0
    if isinstance(initializer, inits.TruncatedNormal):
        return float(initializer.mean), (TRUNCATED_STD * float(initializer.stddev)) ** 2
    if isinstance(initializer, inits.RandomNormal):
        return float(initializer.mean), float(initializer.stddev) ** 2
    if isinstance(initializer, inits.RandomUniform):
        low, high = float(initializer.minval), float(initializer.maxval)
        return (low + high) / 2.0, (high - low) ** 2 / 12.0
    if variable is None:
        raise ValueError(f"cannot read the distribution of initializer {type(initializer).__name__} "
                         "without its variable")
    values = np.asarray(keras.ops.convert_to_numpy(variable), dtype=np.float64)
    return float(values.mean()), float(values.var())


def kernel_stddev(target_variance: float, fan_in: float, second_moment: float = 1.0) -> float:
    """AutoInit's weight standard deviation sqrt(target / (fan_in E[x^2])): zero-mean weights
    of that spread bring a sum of fan_in products w_i x_i to variance ``target_variance``."""
    return math.sqrt(target_variance / (fan_in * second_moment))


def second_moments(means: list[float], variances: list[float]) -> list[float]:
    """E[x^2] = var + mean^2 per input."""
    return [float(v) + float(m) ** 2 for m, v in zip(means, variances)]


class WeightedLayerEstimator(LayerRule):
    """Base of every weighted layer: subclasses say which kernels to draw
    (:meth:`schedule_weights`) and may override the bias and activation lookup."""

    method = EXACT
    kernel_initializer_attr = "kernel_initializer"
    """The layer's initializer attribute for ``kernel`` (e.g. ``"depthwise_initializer"``)."""

    def propagate(self, inputs: Sequence[TensorState]) -> TensorState:
        state = inputs[0]
        scale_means, scale_vars = self.scale_statistics(inputs)
        scale_second = second_moments(scale_means, scale_vars)[0]
        if not (scale_second > 0 and math.isfinite(scale_second)):
            raise ValueError(f"layer {self.layer.name!r} receives inputs with second moment "
                             f"{scale_second!r}; AutoInit needs a finite, positive one")
        sums = self.tap_sums(state.profile)
        self.schedule_weights(scale_second, sums)
        bias_mean, bias_var = self.bias_statistics()
        pre_var = self.signal_variance * state.second_moment / scale_second + bias_var
        reach = self.shared_tap_ratio() * self.signal_variance / scale_second
        pre_shared = min(reach * (state.mean ** 2 + state.shared) + bias_var, pre_var)
        pre_sample = min(reach * state.sample_shared, pre_shared)
        pre = TensorState(bias_mean, pre_var, pre_shared, pre_sample, None,
                          self.pre_activation_profile(sums, bias_mean, bias_var, pre_var),
                          self.pre_activation_lags(state.lags, sums))
        axis_size = self.output_shapes[0][-1] if self.output_shapes else None  # softmax: last axis
        out, self.method = activated(pre, classify(getattr(self.layer, "activation", None)), axis_size)
        return out

    @staticmethod
    def pre_activation_profile(sums: np.ndarray | None, bias_mean: float, bias_var: float,
                               pre_var: float) -> np.ndarray | None:
        """The pre-activation's per-position profile: the weighted sum's variance follows
        S / mean S (``sums``, :meth:`tap_sums`), the bias is the same everywhere:
        r(p) = (bias_mean^2 + Var(b) + (pre_var - Var(b)) S(p) / mean S) / (bias_mean^2 + pre_var)."""
        relative = normalized(sums)
        if relative is None:
            return None
        weighted = pre_var - bias_var
        return normalized(bias_mean ** 2 + bias_var + weighted * relative)

    def pre_activation_lags(self, lags: Any, sums: np.ndarray | None) -> Any:
        """The pre-activation's short-range spatial correlation from the input's ``lags``
        (``statistics.lag_correlation``); None by default (a layer mixing only the last axis,
        whose rule is not written)."""
        return None

    def tap_sums(self, profile: np.ndarray | None) -> np.ndarray | None:
        """Per output position, the input's relative second moment ``profile`` summed over what
        reaches it (convolutions: over their taps); by default the input's own profile, which
        a layer mixing only the last axis (Dense, EinsumDense) keeps position by position."""
        if profile is None or self.output_spatial() != profile.shape:
            return None
        return profile

    def scale_statistics(self, inputs: Sequence[TensorState]) -> tuple[list, list]:
        """The input statistics the weights are scaled for: the combined ones of a shared layer."""
        shared = getattr(self.context, "shared_input_stats", {}).get(id(self.layer))
        return shared if shared is not None else moments_of(inputs)

    def schedule_weights(self, second_moment: float, sums: np.ndarray | None) -> None:
        """Schedule the kernel(s) so the pre-activation has variance signal_variance (``sums``:
        the input profile summed over what reaches each output, :meth:`tap_sums`)."""
        fan_in = self.fan_in(sums)
        self.set_initializer(self.layer.kernel, kernel_stddev(self.signal_variance, fan_in, second_moment),
                             self.kernel_initializer_attr, fan_in)

    def fan_in(self, sums: np.ndarray | None) -> float:
        """Average number of input elements summed into one output element."""
        raise NotImplementedError

    def shared_tap_ratio(self) -> float:
        """Fraction of the input's offsets that two output positions share (1 without borders)."""
        return 1.0

    def bias_statistics(self) -> tuple[float, float]:
        """Mean and variance of the bias (0, 0 without one)."""
        bias = getattr(self.layer, "bias", None)
        if bias is None:
            return 0.0, 0.0
        return initializer_statistics(getattr(self.layer, "bias_initializer", None), bias)
