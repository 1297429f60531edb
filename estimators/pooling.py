"""Pooling layers, exactly: average/max pooling 1D/2D/3D, their global and adaptive forms.

Every output position pools k independent N(mean, var) inputs, k depending on the
position where windows are cut by the border (padding="same" pools only the real
elements; adaptive windows differ in size). The part c of the variance shared by all
positions of a channel (``shared_in``, see ``estimators.base``) is common to the whole
window and cannot be pooled away: with x_i = mean + a + e_i, a ~ N(0, c),
e_i iid N(0, var - c), per position average -> (mean, c + (var - c)/k);
max -> (mean + sd E[M_k], c + sd^2 Var[M_k]), sd^2 = var - c, M_k the max of k iid N(0, 1)
(:func:`autoinit_sym.moment_engine.order_statistics.max_of_iid_normal_moments`). The output statistics
are the mixture over output positions, computed from the actual input shape; every
output keeps the shared offset a, so its shared variance is c. A global pool leaves no
positions: its shared variance is the part of c fixed by the weight draw (per-channel
offsets); the per-sample part of c (``estimators.base``) varies over samples like the rest.
A windowed pool's per-position profile (``statistics.border_profile``) is its input's
averaged over each window; the moments themselves are pooled over positions.

Max pooling of an activation's output (``origin_in``: s f(z), f non-decreasing, z Gaussian,
s a per-channel factor) is s f(max z): its moments are E[f(mean + a + sd M_k)] with a and
M_k independent (:func:`max_of_activation_moments`), not those of a max of Gaussians.
Zero padding before it keeps this form when f >= 0 (a zero never wins the max); its
windows are then counted on the padded input (a border window has fewer real elements).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import keras
import numpy as np

from autoinit_sym.moment_engine.order_statistics import max_of_iid_normal_moments, max_of_iid_normal_nodes

from autoinit_sym.moment_engine.nodes import standard_normal_nodes
from autoinit_sym.statistics.activation import ActivationOutput
from autoinit_sym.statistics.border_profile import spatial_shape, tap_matrix, window_means
from autoinit_sym.statistics.state import TensorState

from .base import EXACT, QUADRATURE, LayerRule
from .registry import rule_for


def window_sizes(n: int, pool: int, stride: int, padding: str) -> np.ndarray:
    """Number of real input elements in each output window along one axis.

    valid: floor((n - pool)/stride) + 1 full windows; same: ceil(n/stride) windows over an input
    padded by max((out-1) stride + pool - n, 0), the smaller half before (TensorFlow's rule)."""
    if padding == "valid":
        return np.full(max((n - pool) // stride + 1, 0), pool)
    out = -(-n // stride)
    before = max((out - 1) * stride + pool - n, 0) // 2
    starts = np.arange(out) * stride - before
    return np.minimum(starts + pool, n) - np.maximum(starts, 0)


def adaptive_window_sizes(n: int, out: int) -> np.ndarray:
    """Adaptive pooling windows [floor(i n/out), ceil((i+1) n/out)) along one axis."""
    i = np.arange(out)
    starts = np.minimum(np.floor(i * n / out), n - 1)
    ends = np.minimum(np.ceil((i + 1) * n / out), n)
    return (ends - starts).astype(int)


def pooled_counts(sizes_per_axis: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The distinct window sizes k over all output positions (outer product of the axes) and
    the fraction of positions that pool each."""
    total = np.ones(1, dtype=np.int64)
    for sizes in sizes_per_axis:
        total = np.multiply.outer(total, np.asarray(sizes, dtype=np.int64)).ravel()
    ks, counts = np.unique(total, return_counts=True)
    return ks, counts / counts.sum()


def pooled_moments(mean: float, var: float, ks: np.ndarray, weights: np.ndarray, mode: str,
                   shared: float = 0.0, correlation: float = 1.0) -> tuple[float, float]:
    """Mixture over output positions of the per-window moments (see the module docstring).

    ``shared`` is the part of ``var`` common to every position of a channel (a per-channel
    offset b ~ N(0, shared), the rest independent across positions); pooling cannot average
    it: average -> var shared + (var - shared)/k, max -> b + max of k of the rest. Where the
    rest is correlated between nearby positions an average keeps ``correlation`` times more
    of it (``LagCorrelation.pooled_factor``; at most k)."""
    varying = var - shared
    if mode == "average":
        return mean, float(shared + varying * (weights @ (np.minimum(correlation, ks) / ks)))
    stats = np.array([max_of_iid_normal_moments(int(k)) for k in ks])
    sd = math.sqrt(varying)
    centre = weights @ stats[:, 0]
    spread = weights @ (stats[:, 0] - centre) ** 2
    return float(mean + sd * centre), float(shared + varying * (weights @ stats[:, 1] + spread))


VARIANCE_FLOOR = 1e-10
"""Relative variance given to the moment engine where the conditional variance is 0."""
SHARED_NODES = 32
"""Gauss-Hermite nodes over the shared offset a in :func:`max_of_activation_moments`."""


def max_of_activation_moments(origin: Any, ks: np.ndarray, weights: np.ndarray) -> tuple[float, float, float]:
    """(mean, var, shared) of s f(max_{i<=k} z_i), mixed over window sizes k (``weights``),
    z_i = mean + a + sd e_i with a ~ N(0, c) common to the channel, e_i iid N(0, 1),
    sd^2 = var - c, and s the per-channel scale of ``origin`` (an ``ActivationOutput``).

    Given M_k = max e_i = t the argument is N(mean + sd t, c), so E[f^n] = E_t[E[f^n | t]]
    with the moment engine's conditional moments and quadrature over M_k's density
    (:func:`max_of_iid_normal_nodes`). Two windows share a: with G(a) = sum_k w_k E_t f(mean + a + sd t),
    shared = E[s^2] Var_a(G) + (E[s^2] - 1) E[G]^2."""
    engine = origin.engine()
    c = origin.shared
    floor = VARIANCE_FLOOR * origin.var
    sd = math.sqrt(max(origin.var - c, 0.0))
    u, h = standard_normal_nodes(SHARED_NODES)
    first = second = 0.0
    per_offset = np.zeros_like(u)
    for k, w in zip(ks, weights):
        t, p = max_of_iid_normal_nodes(int(k))
        centres = origin.mean + sd * t
        first += w * float(p @ engine.mean(centres, max(c, floor)))
        second += w * float(p @ engine.second_moment(centres, max(c, floor)))
        grid = centres[None, :] + math.sqrt(c) * u[:, None]
        per_offset += w * (np.asarray(engine.mean(grid.ravel(), floor)).reshape(grid.shape) @ p)
    scale = origin.scale_second
    spread = float(h @ (per_offset - h @ per_offset) ** 2)
    shared = scale * spread + (scale - 1.0) * first ** 2
    return first, max(scale * second - first ** 2, 0.0), shared


class _Pooling(LayerRule):
    """Shared rule; subclasses set ``mode`` and say how big the windows are along each axis."""

    mode = "average"
    global_pool = False

    def axis_window_sizes(self, spatial: Sequence[int | None]) -> list[np.ndarray]:
        raise NotImplementedError

    def spatial_shape(self) -> list[int | None]:
        shape = self.input_shapes[0] if self.input_shapes else None
        if shape is None:
            raise ValueError(f"pooling layer {self.layer.name!r}: its input shape is unknown")
        return list(shape[1:-1] if self.layer.data_format == "channels_last" else shape[2:])

    def known(self, spatial: Sequence[int | None], why: str) -> list[int]:
        if any(n is None for n in spatial):
            raise ValueError(
                f"{type(self.layer).__name__} {self.layer.name!r}: {why} needs the spatial input size, "
                f"but the input shape is {tuple(self.input_shapes[0])}; build the model with fixed sizes")
        return [int(n) for n in spatial]

    def output_profile(self, profile: np.ndarray | None) -> np.ndarray | None:
        """The output's per-position profile from the input's; None here (a global or adaptive pool)."""
        return None

    def pooled_window(self) -> Sequence[int] | None:
        """The window whose positions an average pools, per spatial axis (None: not known)."""
        return None

    def correlation(self, lags: Any) -> float:
        """How much more than independent positions an average over the window keeps of the
        varying part (``lag_correlation.LagCorrelation.pooled_factor`` of the input's ``lags``;
        1 without one)."""
        window = self.pooled_window()
        if lags is None or window is None or len(window) != len(lags.radii):
            return 1.0
        return lags.pooled_factor(window)

    def propagate(self, inputs: Sequence[TensorState]) -> TensorState:
        state = inputs[0]
        ks, weights = pooled_counts(self.axis_window_sizes(self.spatial_shape()))
        known: dict[str, Any] = {"profile": self.output_profile(state.profile)}
        if self.mode == "max" and isinstance(state.origin, ActivationOutput):
            mean, var, known["shared"] = max_of_activation_moments(state.origin, ks, weights)
        else:
            known["shared"] = min(state.shared, state.var)
            mean, var = pooled_moments(state.mean, state.var, ks, weights, self.mode, known["shared"],
                                       self.correlation(state.lags))
        if self.global_pool:
            # No positions are left: what the output shares is the per-channel offsets fixed by
            # the draw; the per-sample part varies with the sample like everything else.
            fixed = 1.0 - min(state.sample_shared / state.shared, 1.0) if state.shared > 0 else 1.0
            known["shared"], known["sample_shared"] = known["shared"] * fixed, 0.0
        return self.output(inputs, mean, var, **known)


class _Windowed(_Pooling):
    def output_profile(self, profile):
        """The input profile averaged over each window's real elements (channels_last)."""
        if profile is None or self.layer.data_format != "channels_last":
            return None
        matrices = [tap_matrix(n, o, p, s, 1, self.layer.padding) for n, o, p, s in
                    zip(profile.shape, spatial_shape(self.output_shapes[0]) or (), self.layer.pool_size,
                        self.layer.strides)]
        return window_means(matrices, profile) if len(matrices) == profile.ndim else None

    def pooled_window(self):
        return tuple(int(p) for p in self.layer.pool_size)

    def axis_window_sizes(self, spatial):
        layer = self.layer
        if layer.padding == "valid":
            return [np.array([p]) for p in layer.pool_size]
        sizes = self.known(spatial, 'padding="same"')
        return [window_sizes(n, p, s, "same") for n, p, s in zip(sizes, layer.pool_size, layer.strides)]


class _Global(_Pooling):
    global_pool = True

    def pooled_window(self):
        return tuple(self.known(self.spatial_shape(), "global pooling"))

    def axis_window_sizes(self, spatial):
        return [np.array([n]) for n in self.known(spatial, "global pooling")]


class _Adaptive(_Pooling):
    def axis_window_sizes(self, spatial):
        sizes = self.known(spatial, "adaptive pooling")
        out = self.layer.output_size
        out = (out,) * len(sizes) if isinstance(out, int) else tuple(out)
        return [adaptive_window_sizes(n, o) for n, o in zip(sizes, out)]


class _Average:
    mode, method = "average", EXACT


class _Max:
    mode, method = "max", QUADRATURE


@rule_for(keras.layers.AveragePooling1D, keras.layers.AveragePooling2D, keras.layers.AveragePooling3D)
class AveragePoolingEstimator(_Average, _Windowed):
    """(mean, c + (var - c)/k) per window of k real elements (smaller windows at 'same' borders),
    c the position-shared variance, mixed over positions."""


@rule_for(keras.layers.MaxPooling1D, keras.layers.MaxPooling2D, keras.layers.MaxPooling3D)
class MaxPoolingEstimator(_Max, _Windowed):
    """(mean + sd E[M_k], c + sd^2 Var[M_k]) per window of k real elements, M_k = max of k iid N(0, 1),
    c the position-shared variance, sd^2 = var - c. An activation's output s f(z) is pooled as
    s f(max z) (:func:`max_of_activation_moments`)."""


@rule_for(keras.layers.GlobalAveragePooling1D, keras.layers.GlobalAveragePooling2D,
           keras.layers.GlobalAveragePooling3D)
class GlobalAveragePoolingEstimator(_Average, _Global):
    """(mean, c + (var - c)/k) for k = all spatial positions, c the position-shared variance."""


@rule_for(keras.layers.GlobalMaxPooling1D, keras.layers.GlobalMaxPooling2D, keras.layers.GlobalMaxPooling3D)
class GlobalMaxPoolingEstimator(_Max, _Global):
    """(mean + sd E[M_k], c + sd^2 Var[M_k]) for k = all spatial positions, as MaxPooling."""


@rule_for(keras.layers.AdaptiveAveragePooling1D, keras.layers.AdaptiveAveragePooling2D,
           keras.layers.AdaptiveAveragePooling3D)
class AdaptiveAveragePoolingEstimator(_Average, _Adaptive):
    """(mean, c + (var - c)/k) per adaptive window [floor(i n/out), ceil((i+1) n/out)), mixed over
    positions, c the position-shared variance."""


@rule_for(keras.layers.AdaptiveMaxPooling1D, keras.layers.AdaptiveMaxPooling2D,
           keras.layers.AdaptiveMaxPooling3D)
class AdaptiveMaxPoolingEstimator(_Max, _Adaptive):
    """(mean + sd E[M_k], c + sd^2 Var[M_k]) per adaptive window, mixed over positions, as MaxPooling."""
