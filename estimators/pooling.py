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

Correlated or unequal positions (``statistics.correlated_max``). Where the input's positions
are correlated (a lag correlation beyond lag 0), differ in variance (a border profile) or carry
per-position offsets, the max of k positions is not that of k iid ones: correlated positions
give a smaller max, positions with a larger variance win it more often. The max is then
sampled (:meth:`_Pooling.sampled_max`): one channel's field x_p = mean + sqrt(r(p)) (a + e_p)
+ d(p), e white noise convolved with a kernel whose autocorrelation is the tracked mean
correlation, a the shared offset (Gauss-Hermite nodes), d the per-position offsets, run through
the layer itself (seeded, chunked, vectorized through Keras ops); the output's lag correlation
is measured on the samples. An activation output is sampled as f of its Gaussian z, z's profile
recovered from the output's.

An average pool keeps the per-position offsets d of a window
(``border_profile.PositionOffsets``: the border pattern batch normalization leaves) instead of
dividing them by k like the rest (:meth:`_Pooling.with_offsets`).
"""
from __future__ import annotations

import itertools
import math
from typing import Any, Sequence

import keras
import numpy as np

from autoinit_sym.moment_engine.nodes import standard_normal_nodes
from autoinit_sym.moment_engine.order_statistics import max_of_iid_normal_moments, max_of_iid_normal_nodes
from autoinit_sym.statistics.activation import ActivationOutput
from autoinit_sym.statistics.border_profile import PositionOffsets, distinct, window_means
from autoinit_sym.statistics.correlated_max import (correlation_reach, field_kernel, input_variances, pooled_reach,
                                                    sample_lags)
from autoinit_sym.statistics.lag_correlation import LagCorrelation, activation_function, point, reduced
from autoinit_sym.statistics.state import TensorState

from .base import EXACT, MONTE_CARLO, QUADRATURE, LayerRule
from .registry import rule_for


def same_padding(n: int, pool: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of a 'same' pool along one axis, as every Keras backend cuts it:
    ceil(n/stride) windows over an input padded by max((out-1) stride + pool - n, 0) in all, the
    smaller half before."""
    total = max((-(-n // stride) - 1) * stride + pool - n, 0)
    return total // 2, total - total // 2


def window_sizes(n: int, pool: int, stride: int, padding: str) -> np.ndarray:
    """Number of real input elements in each output window along one axis (the same on every
    backend): valid: floor((n - pool)/stride) + 1 full windows; same: see :func:`same_padding`."""
    if padding == "valid":
        return np.full(max((n - pool) // stride + 1, 0), pool)
    return np.count_nonzero(averaging_matrix(n, pool, stride, padding), axis=1)


def averaging_matrix(n: int, pool: int, stride: int, padding: str, replicate: bool = False) -> np.ndarray:
    """A[o, i]: the weight of input element i in output o of an average pool along one axis.

    Without ``replicate``: 1/k for each of the k real elements of the window (TensorFlow and JAX,
    and torch where the padding is even). With ``replicate`` (torch's 'same' padding where it is
    uneven, :func:`replicates_border`): the window runs over the input padded with copies of its
    border elements, 1/pool per tap, so a border element weighs once per copy."""
    before = same_padding(n, pool, stride)[0] if padding == "same" else 0
    out = -(-n // stride) if padding == "same" else max((n - pool) // stride + 1, 0)
    taps = np.arange(out)[:, None] * stride - before + np.arange(pool)[None, :]
    rows = np.broadcast_to(np.arange(out)[:, None], taps.shape)
    matrix = np.zeros((out, n))
    if replicate:
        np.add.at(matrix, (rows, np.clip(taps, 0, n - 1)), 1.0 / pool)
        return matrix
    inside = (taps >= 0) & (taps < n)
    matrix[rows[inside], taps[inside]] = 1.0
    return matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1.0)


def replicates_border(spatial: Sequence[int], pool: Sequence[int], strides: Sequence[int], padding: str) -> bool:
    """Whether the current backend's 'same' average pool pads with copies of the border elements:
    Keras's torch backend does, on every axis, as soon as one axis needs an uneven padding (torch's
    own pooling pads evenly, with count_include_pad=False); TensorFlow and JAX pool only the real
    elements."""
    if padding != "same" or keras.backend.backend() != "torch":
        return False
    return any(len(set(same_padding(int(n), int(p), int(s)))) > 1 for n, p, s in zip(spatial, pool, strides))


def adaptive_window_sizes(n: int, out: int) -> np.ndarray:
    """Adaptive pooling windows [floor(i n/out), ceil((i+1) n/out)) along one axis."""
    i = np.arange(out)
    starts = np.minimum(np.floor(i * n / out), n - 1)
    ends = np.minimum(np.ceil((i + 1) * n / out), n)
    return (ends - starts).astype(int)


def pooled_counts(sizes_per_axis: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The distinct window sizes k over all output positions (outer product of the axes) and
    the fraction of positions that pool each. Sizes may be effective ones, 1 / sum_i w_i^2 for an
    average with unequal weights w (:meth:`_Windowed.axis_window_sizes`)."""
    total = np.ones(1, dtype=np.int64)
    for sizes in sizes_per_axis:
        total = np.multiply.outer(total, np.asarray(sizes)).ravel()
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
SAMPLED_NODES = 12
"""Gauss-Hermite nodes over the shared offset a in a sampled max (:meth:`_Pooling.sampled_max`)."""
SAMPLED_WINDOWS = 1 << 18
"""Pooled values (rows x output positions) a sampled max aims at."""
SAMPLED_ELEMENTS = 1 << 24
"""Most input elements pooled in all (rows x positions x nodes of the shared offset)."""
SAMPLED_ROWS = (16, 4096)
"""Fewest and most sampled rows (one channel's field each)."""
SAMPLED_CHUNK = 1 << 20
"""Input elements per call of the layer."""
SAMPLED_NOISE_FLOOR = 3.0
"""A sampled output correlation within this many standard errors of 0 is taken as 0."""


def max_of_activation_moments(origin: Any, ks: np.ndarray, weights: np.ndarray) -> tuple[float, float, float]:
    """(mean, var, shared) of s f(max_{i<=k} z_i), mixed over window sizes k (``weights``),
    z_i = mean + a + sd e_i with a ~ N(0, c) common to the channel, e_i iid N(0, 1),
    sd^2 = var - c, and s the per-channel scale of ``origin`` (an ``ActivationOutput``).

    Given M_k = max e_i = t the argument is N(mean + sd t, c), so E[f^n] = E_t[E[f^n | t]]
    with the moment engine's conditional moments and quadrature over M_k's density
    (:func:`max_of_iid_normal_nodes`), see :func:`activation_of_max`."""
    sd = math.sqrt(max(origin.var - origin.shared, 0.0))
    nodes, masses = [], []
    for k, w in zip(ks, weights):
        t, p = max_of_iid_normal_nodes(int(k))
        nodes.append(sd * t)
        masses.append(w * p)
    return activation_of_max(origin, np.concatenate(nodes), np.concatenate(masses))


def activation_of_max(origin: Any, nodes: np.ndarray, masses: np.ndarray) -> tuple[float, float, float]:
    """(mean, var, shared) of s f(mean + a + M) for a max M of the varying part given by
    ``nodes`` with probability ``masses``, a ~ N(0, c) common to the channel's windows, s the
    per-channel scale of ``origin``: E[f^n] = sum_t masses_t E[f^n(mean + t + a)] (the moment
    engine at (mean + t, c)); two windows share a: with G(a) = E_M f(mean + a + M),
    shared = E[s^2] Var_a(G) + (E[s^2] - 1) E[G]^2."""
    engine = origin.engine()
    c = origin.shared
    floor = VARIANCE_FLOOR * origin.var
    centres = origin.mean + nodes
    first = float(masses @ engine.mean(centres, max(c, floor)))
    second = float(masses @ engine.second_moment(centres, max(c, floor)))
    u, h = standard_normal_nodes(SHARED_NODES)
    grid = centres[None, :] + math.sqrt(c) * u[:, None]
    per_offset = np.asarray(engine.mean(grid.ravel(), floor)).reshape(grid.shape) @ masses
    scale = origin.scale_second
    spread = float(h @ (per_offset - h @ per_offset) ** 2)
    shared = scale * spread + (scale - 1.0) * first ** 2
    return first, max(scale * second - first ** 2, 0.0), shared


def _offsets(lags: Any, spatial: Sequence[int | None]) -> PositionOffsets | None:
    """The per-position offsets ``lags`` carries for a tensor of this spatial shape, else None."""
    offsets = getattr(lags, "offsets", None)
    return offsets if offsets is not None and offsets.spatial == tuple(spatial) else None


def _pre_activation_profile(origin: Any, state: TensorState) -> np.ndarray | None:
    """The profile of z behind an activation output s f(z) with profile r: per distinct r, the
    variance v with E[f(N(mean_z, v))^2] = r E[y^2] / E[s^2] (``correlated_max.input_variances``),
    as (v + mean_z^2) / E[z^2]; None without a profile or where E[f^2] is not monotone in v."""
    if state.profile is None:
        return None
    values, inverse, _ = distinct(state.profile)
    targets = values * state.second_moment / origin.scale_second
    variances = input_variances(origin.engine().second_moment, origin.mean, origin.var, targets)
    if variances is None:
        return None
    squared = origin.mean * origin.mean
    return ((variances + squared) / (origin.var + squared))[inverse].reshape(state.profile.shape)


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

    def window_reach(self) -> tuple[tuple[int, int], ...] | None:
        """Per spatial axis, (window length, stride) bounds for the output lags at which max-pooled
        windows can still be correlated (None: no output positions, a global pool)."""
        return None

    def propagate(self, inputs: Sequence[TensorState]) -> TensorState:
        state = inputs[0]
        known: dict[str, Any] = {"profile": self.output_profile(state.profile)}
        if self.mode == "max" and self.correlated(state):
            self.method = MONTE_CARLO
            mean, var, known["shared"], lags = self.sampled_max(state)
            if lags is not None:
                known["lags"] = lags
        else:
            ks, weights = pooled_counts(self.axis_window_sizes(self.spatial_shape()))
            if self.mode == "max" and isinstance(state.origin, ActivationOutput):
                mean, var, known["shared"] = max_of_activation_moments(state.origin, ks, weights)
            else:
                known["shared"] = min(state.shared, state.var)
                mean, var = pooled_moments(state.mean, state.var, ks, weights, self.mode, known["shared"],
                                           self.correlation(state.lags))
            if self.mode == "average":
                var, known["lags"] = self.with_offsets(state, var)
        if self.global_pool:
            # No positions are left: what the output shares is the per-channel offsets fixed by
            # the draw; the per-sample part varies with the sample like everything else.
            fixed = 1.0 - min(state.sample_shared / state.shared, 1.0) if state.shared > 0 else 1.0
            known["shared"], known["sample_shared"] = known["shared"] * fixed, 0.0
        return self.output(inputs, mean, var, **known)

    def correlated(self, state: TensorState) -> bool:
        """Whether a max over this input needs sampling: its positions are correlated (a lag
        correlation beyond lag 0 or per-position offsets) or differ in variance (a profile),
        and its spatial shape is known; otherwise the exact order statistics of iid positions."""
        spatial = self.spatial_shape()
        if any(n is None for n in spatial):
            return False
        lags = state.lags if state.lags is not None and len(state.lags.radii) == len(spatial) else None
        return state.profile is not None or (lags is not None and (not lags.is_point or
                                                                   _offsets(lags, spatial) is not None))

    def sampled_max(self, state: TensorState) -> tuple[float, float, float, Any]:
        """(mean, var, shared, lags) of the max pool of a correlated input by sampling
        (``statistics.correlated_max``) one channel's field: with per-position offsets d (the
        channel's offsets fixed by the draw, ``border_profile.PositionOffsets``; for an activation
        output those of z) x_p = mean + a + d(p) + e_p, else x_p = mean + sqrt(r(p)) (a + e_p), r the
        relative variance per position from the profile (offsets shrink at the borders with the
        rest: both follow the taps reaching p); a ~ N(0, c) the channel's offset not in d
        (Gauss-Hermite nodes), e the correlated field with the rest of the variance. An
        activation output s f(z) is pooled as s f(max z): z's profile recovered from the output's,
        f applied to the samples. Over the nodes of a: mean sum_k h_k G_k, G_k the mean at a_k,
        E[y^2] likewise; shared E[s^2] (Var_a(G) + the covariance of two windows through d) +
        (E[s^2] - 1) mean^2."""
        spatial = tuple(self.known(self.spatial_shape(), "max pooling of correlated positions"))
        lags = state.lags if state.lags is not None and len(state.lags.radii) == len(spatial) else None
        origin = state.origin if isinstance(state.origin, ActivationOutput) else None
        offsets = _offsets(lags, spatial)
        if origin is not None:
            mean, var, shared = origin.mean, origin.var, origin.shared
            profile, offsets = _pre_activation_profile(origin, state), None if offsets is None else offsets.source
        else:
            mean, var, shared = state.mean, state.var, min(state.shared, state.var)
            profile = state.profile
        profile = profile if profile is not None and profile.shape == spatial else None
        factors = offsets.factors if offsets is not None and offsets.factors.shape[0] > 0 else None
        total = np.full(spatial, var) if profile is None else profile * (var + mean * mean) - mean * mean
        kernel = np.ones((1,) * len(spatial)) if lags is None or lags.is_point else field_kernel(lags.mean)
        if factors is None:
            # The offsets shrink at the borders with the rest (both follow the taps reaching p).
            total = np.maximum(total, 0.0)
            relative = np.sqrt(total / max(float(total.mean()), VARIANCE_FLOOR * var))
            noise, spread = relative * math.sqrt(max(var - shared, 0.0)), relative
        else:
            # The offsets themselves; the shared variance they do not explain is common to the channel.
            shared = max(shared - float((factors.mean(axis=tuple(range(1, factors.ndim))) ** 2).sum()), 0.0)
            noise = np.sqrt(np.maximum(total - (factors ** 2).sum(axis=0) - shared, VARIANCE_FLOOR * var))
            spread = np.ones(spatial)
        nodes, masses = standard_normal_nodes(SAMPLED_NODES) if shared > 0 else (np.zeros(1), np.ones(1))
        pooled = self.sample_canonical(kernel, noise, spread, math.sqrt(shared) * nodes, factors,
                                       factors is not None and offsets.normalized)
        values = mean + pooled if origin is None else activation_function(origin.activation)(mean + pooled)
        axes = tuple(range(1, values.ndim))
        per_node = values.mean(axis=axes)
        first = float(masses @ per_node)
        second = float(masses @ (values ** 2).mean(axis=axes))
        between = masses @ (per_node - first) ** 2
        windows = int(np.prod(values.shape[2:]))
        if factors is not None and windows > 1:
            rows = values.reshape(values.shape[0], values.shape[1], windows)
            common = (windows * rows.mean(axis=2).var(axis=1) - rows.var(axis=(1, 2))) / (windows - 1)
            between += float(masses @ np.maximum(common, 0.0))
        scale = 1.0 if origin is None else origin.scale_second
        out_shared = scale * float(between) + (scale - 1.0) * first ** 2
        middle = int(np.argmin(np.abs(nodes)))
        return first, max(scale * second - first ** 2, 0.0), out_shared, self.sampled_lags(values[middle], lags)

    def sample_canonical(self, kernel: np.ndarray, noise: np.ndarray, spread: np.ndarray, shifts: np.ndarray,
                         factors: np.ndarray | None, normalized: bool) -> np.ndarray:
        """:meth:`sample_pooled` with the interchangeable spatial axes (same length and window,
        :meth:`axis_geometry`) in a canonical order, the one whose arrays' bytes sort first, and
        the output's axes put back: a transposed input gets the same samples, transposed."""
        rank = noise.ndim
        geometry = self.axis_geometry(noise.shape)
        best: bytes | None = None
        order, chosen = tuple(range(rank)), [kernel, noise, spread, factors]
        for perm in itertools.permutations(range(rank)):
            if any(geometry[p] != geometry[i] for i, p in enumerate(perm)):
                continue
            arrays = [np.transpose(a, perm) for a in (kernel, noise, spread)]
            arrays.append(None if factors is None else np.transpose(factors, (0, *(1 + p for p in perm))))
            key = b"".join(np.ascontiguousarray(a).tobytes() for a in arrays if a is not None)
            if best is None or key < best:
                best, order, chosen = key, perm, arrays
        pooled = self.sample_pooled(*chosen[:3], shifts, chosen[3], normalized)
        if pooled.ndim != rank + 2:
            return pooled
        return np.transpose(pooled, (0, 1, *(2 + int(a) for a in np.argsort(order))))

    def axis_geometry(self, spatial: Sequence[int]) -> list[tuple]:
        """Per spatial axis, what the pooling does along it (axes alike may be interchanged)."""
        return [(int(n),) for n in spatial]

    def sample_pooled(self, kernel: np.ndarray, noise: np.ndarray, spread: np.ndarray, shifts: np.ndarray,
                      offsets: np.ndarray | None, normalized: bool = False) -> np.ndarray:
        """This layer applied to samples of one channel's field, noise e + spread shift + d for each
        of ``shifts``: e white noise convolved with ``kernel`` times ``noise`` per position, d =
        sum_j offsets[j] b_j with b_j ~ N(0, 1) per sample (``normalized``: e + d rescaled per sample
        to the mean square over positions that an average channel has, as batch normalization
        divides each channel by its own spread); rows chunked to :data:`SAMPLED_CHUNK` elements,
        seeded by the configured seed alone (not a layer name, nor the call's position, which a
        transparent layer would shift); rows enough for
        :data:`SAMPLED_WINDOWS` pooled values within :data:`SAMPLED_ELEMENTS`. Returns
        (shifts, rows, *output spatial), float64."""
        spatial = noise.shape
        reach = [(n - 1) // 2 for n in kernel.shape]
        padded = [n + 2 * r for n, r in zip(spatial, reach)]
        size = int(np.prod(padded))
        rows = min(SAMPLED_ROWS[1], SAMPLED_WINDOWS // self.output_positions(),
                   SAMPLED_ELEMENTS // (size * len(shifts)))
        rows = int(max(SAMPLED_ROWS[0], rows))
        chunk = max(1, SAMPLED_CHUNK // size)
        generator = keras.random.SeedGenerator(self.context.seed_for("max pooling"))
        filters = keras.ops.convert_to_tensor(kernel[..., None, None], "float32")
        scale = keras.ops.convert_to_tensor(noise[..., None], "float32")
        shift_scale = keras.ops.convert_to_tensor(spread[..., None], "float32")
        factors = None if offsets is None else keras.ops.convert_to_tensor(offsets[..., None], "float32")
        rest = float((noise ** 2).mean())
        target = rest + (0.0 if offsets is None else float((offsets ** 2).sum(axis=0).mean()))
        pooled: list[list[np.ndarray]] = [[] for _ in shifts]
        for start in range(0, rows, chunk):
            count = min(chunk, rows - start)
            field = keras.random.normal((count, *padded, 1), seed=generator)
            if kernel.size > 1:
                field = keras.ops.conv(field, filters, padding="valid")
            field = field * scale
            if factors is not None:
                mix = keras.random.normal((count, int(offsets.shape[0])), seed=generator)
                fixed = keras.ops.tensordot(mix, factors, axes=1)
                field = field + fixed
                if normalized:
                    square = keras.ops.mean(keras.ops.square(fixed), axis=tuple(range(1, len(spatial) + 2)),
                                            keepdims=True)
                    field = field * keras.ops.sqrt(target / (square + rest))
            for index, shift in enumerate(shifts):
                values = field + shift_scale * float(shift)
                if self.layer.data_format == "channels_first":
                    values = keras.ops.moveaxis(values, -1, 1)
                out = np.asarray(keras.ops.convert_to_numpy(self.layer(values)), dtype=np.float64)
                pooled[index].append(out[:, 0] if self.layer.data_format == "channels_first" else out[..., 0])
        return np.stack([np.concatenate(parts) for parts in pooled])

    def output_positions(self) -> int:
        """Output values per channel (1 for a global pool)."""
        shape_in, shape_out = self.input_shapes[0], self.output_shapes[0] if self.output_shapes else None
        if shape_out is None or any(d is None for d in shape_out[1:]):
            return 1
        channels = shape_in[-1] if self.layer.data_format == "channels_last" else shape_in[1]
        return max(1, int(np.prod(shape_out[1:])) // int(channels))

    def sampled_lags(self, values: np.ndarray, lags: Any) -> Any:
        """The output's lag correlation from the pooled samples (rows, *output spatial):
        m and g measured over the lags where the input's correlation can still reach
        (:meth:`window_reach`), s = m^2 (the per-channel spread is not sampled), the input's
        floors kept; None for a global pool."""
        reach = self.window_reach()
        if reach is None or values.ndim < 2:
            return None
        inside = (0,) * len(reach) if lags is None or lags.is_point else correlation_reach(lags.mean)
        radii = tuple(min(r, n - 1) for r, n in zip(pooled_reach(inside, *zip(*reach)), values.shape[1:]))
        m, g = sample_lags(values, radii, SAMPLED_NOISE_FLOOR)
        floors = (0.0, 0.0) if lags is None else (lags.sample_floor, lags.channel_floor)
        return reduced(LagCorrelation(m, m * m, g, *floors))

    def with_offsets(self, state: TensorState, var: float) -> tuple[float, Any]:
        """An average pool's variance with the input's per-position offsets d (module docstring):
        the offsets of a window are averaged, not divided by k like the rest:
        var + mean_o sum_j ((avg_(p in o) L_j)^2 - (mean_p L_j)^2) - mean_p |L_c(p)|^2 mean_o corr / k_o,
        and the output keeps the window averages of the offsets; (var, None) without offsets."""
        spatial = self.spatial_shape()
        offsets = _offsets(state.lags, spatial) if state.lags is not None else None
        matrices = self.window_matrices(spatial)
        if offsets is None or matrices is None:
            return var, None
        ks, weights = pooled_counts(self.axis_window_sizes(spatial))
        kept = float(weights @ (np.minimum(self.correlation(state.lags), ks) / ks))
        pooled = offsets.pooled(matrices)
        varying = float((pooled.centred ** 2).sum(axis=0).mean()) - offsets.varying * kept
        var = max(var + varying, 0.0)
        return var, (None if self.global_pool else point(len(spatial), offsets=pooled))

    def window_matrices(self, spatial: Sequence[int | None]) -> list[np.ndarray] | None:
        """Per spatial axis, the (output, input) matrix averaging each window's real elements
        (None where unknown or channels_first)."""
        return None


class _Windowed(_Pooling):
    def axis_matrices(self, spatial: Sequence[int]) -> list[np.ndarray]:
        """Per spatial axis, the (output, input) weights of this backend's average over each window
        (:func:`averaging_matrix`); a max pools the elements with a nonzero weight."""
        layer = self.layer
        replicate = self.mode == "average" and replicates_border(spatial, layer.pool_size, layer.strides,
                                                                 layer.padding)
        return [averaging_matrix(int(n), int(p), int(s), layer.padding, replicate)
                for n, p, s in zip(spatial, layer.pool_size, layer.strides)]

    def output_profile(self, profile):
        """The input profile r over each window, weighted as the pooled variance weighs it:
        sum_i w_i^2 r_i / sum_i w_i^2 (the plain window mean for equal weights; channels_last)."""
        if profile is None or self.layer.data_format != "channels_last" or len(self.layer.pool_size) != profile.ndim:
            return None
        return window_means([m ** 2 for m in self.axis_matrices(profile.shape)], profile)

    def pooled_window(self):
        return tuple(int(p) for p in self.layer.pool_size)

    def window_reach(self):
        return tuple((int(p), int(s)) for p, s in zip(self.layer.pool_size, self.layer.strides))

    def axis_geometry(self, spatial):
        return [(int(n), int(p), int(s)) for n, p, s in zip(spatial, self.layer.pool_size, self.layer.strides)]

    def window_matrices(self, spatial):
        if self.layer.data_format != "channels_last" or len(spatial) != len(self.layer.pool_size):
            return None
        return self.axis_matrices(self.known(spatial, "pooling per-position offsets"))

    def axis_window_sizes(self, spatial):
        """Per axis, the window sizes: real elements for a max, 1 / sum_i w_i^2 for an average with
        weights w (k for k equal weights); full windows without padding."""
        layer = self.layer
        if layer.padding == "valid":
            return [np.array([p]) for p in layer.pool_size]
        matrices = self.axis_matrices(self.known(spatial, 'padding="same"'))
        if self.mode == "max":
            return [np.count_nonzero(m, axis=1) for m in matrices]
        return [np.round(1.0 / (m ** 2).sum(axis=1), 12) for m in matrices]


class _Global(_Pooling):
    global_pool = True

    def pooled_window(self):
        return tuple(self.known(self.spatial_shape(), "global pooling"))

    def window_matrices(self, spatial):
        return [np.full((1, int(n)), 1.0 / int(n)) for n in self.known(spatial, "global pooling")]

    def axis_window_sizes(self, spatial):
        return [np.array([n]) for n in self.known(spatial, "global pooling")]


class _Adaptive(_Pooling):
    def axis_window_sizes(self, spatial):
        sizes = self.known(spatial, "adaptive pooling")
        return [adaptive_window_sizes(n, o) for n, o in zip(sizes, self.output_sizes(len(sizes)))]

    def output_sizes(self, rank: int) -> tuple[int, ...]:
        out = self.layer.output_size
        return (out,) * rank if isinstance(out, int) else tuple(out)

    def axis_geometry(self, spatial):
        return [(int(n), int(o)) for n, o in zip(spatial, self.output_sizes(len(spatial)))]

    def window_reach(self):
        sizes = self.known(self.spatial_shape(), "adaptive pooling")
        return tuple((-(-n // o) + 1, max(n // o, 1)) for n, o in zip(sizes, self.output_sizes(len(sizes))))


class _Average:
    mode, method = "average", EXACT


class _Max:
    mode, method = "max", QUADRATURE
    method_label = "quadrature; monte_carlo where positions are correlated or differ"


@rule_for(keras.layers.AveragePooling1D, keras.layers.AveragePooling2D, keras.layers.AveragePooling3D)
class AveragePoolingEstimator(_Average, _Windowed):
    """(mean, c + (var - c)/k) per window of k real elements (smaller windows at 'same' borders),
    c the position-shared variance, mixed over positions. Per-position offsets (borders, after
    batch normalization) are averaged over the window, not divided by k."""


@rule_for(keras.layers.MaxPooling1D, keras.layers.MaxPooling2D, keras.layers.MaxPooling3D)
class MaxPoolingEstimator(_Max, _Windowed):
    """(mean + sd E[M_k], c + sd^2 Var[M_k]) per window of k real elements, M_k = max of k iid N(0, 1),
    c the position-shared variance, sd^2 = var - c. An activation's output s f(z) is pooled as
    s f(max z) (:func:`max_of_activation_moments`). Sampled where positions are correlated or differ
    (:meth:`_Pooling.sampled_max`)."""


@rule_for(keras.layers.GlobalAveragePooling1D, keras.layers.GlobalAveragePooling2D,
           keras.layers.GlobalAveragePooling3D)
class GlobalAveragePoolingEstimator(_Average, _Global):
    """(mean, c + (var - c)/k) for k = all spatial positions, c the position-shared variance."""


@rule_for(keras.layers.GlobalMaxPooling1D, keras.layers.GlobalMaxPooling2D, keras.layers.GlobalMaxPooling3D)
class GlobalMaxPoolingEstimator(_Max, _Global):
    """(mean + sd E[M_k], c + sd^2 Var[M_k]) for k = all spatial positions, as MaxPooling. Sampled where
    positions are correlated or differ."""


@rule_for(keras.layers.AdaptiveAveragePooling1D, keras.layers.AdaptiveAveragePooling2D,
           keras.layers.AdaptiveAveragePooling3D)
class AdaptiveAveragePoolingEstimator(_Average, _Adaptive):
    """(mean, c + (var - c)/k) per adaptive window [floor(i n/out), ceil((i+1) n/out)), mixed over
    positions, c the position-shared variance."""


@rule_for(keras.layers.AdaptiveMaxPooling1D, keras.layers.AdaptiveMaxPooling2D,
           keras.layers.AdaptiveMaxPooling3D)
class AdaptiveMaxPoolingEstimator(_Max, _Adaptive):
    """(mean + sd E[M_k], c + sd^2 Var[M_k]) per adaptive window, mixed over positions, as MaxPooling.
    Sampled where positions are correlated or differ."""
