"""Per-position second-moment profiles: where the borders of padded convolutions live.

Zero padding makes border positions of a convolution's output sum fewer taps; one layer
later those positions are also the weaker inputs of their neighbours, so the positions
of a tensor do not share one second moment. Averaging this away is not harmless: the
next convolution's pre-activation second moment at p is proportional to
S(p) = sum over the taps t valid at p of r(p + t), and the pooled second moment grows by
mean_p S(p) / mean_p taps(p) > 1 per layer, which a homogeneous activation such as ReLU
carries on undamped (about +0.5 in log variance over ten 3x3 'same' convolutions on 16x16).

A *profile* is r(p) = E[x_p^2] / mean_q E[x_q^2] over the spatial positions p of a
channels-last tensor (axes 1..-2; mean 1), the same for every channel; None means uniform.
Convolutions, pooling and padding act on it per spatial axis with a tap matrix
M[o, i] = the number of kernel taps joining input i to output o, so
S = (M_1 (x) M_2 (x) ...) r is a sequence of small matrix products.

Borders also make a channel's offsets vary with position: an input mean reaches an output
through the taps that land inside the input, so each channel's offset is smaller (and partly
different) at the borders. :class:`PositionOffsets` holds them as factors over the positions
(:func:`convolved_offsets`); batch normalization removes their mean and leaves the border pattern,
the same in every sample, which a pool keeps.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

UNIFORM_TOLERANCE = 1e-12
"""A profile whose values all lie within this of 1 is treated as uniform (None)."""
DISTINCT_DECIMALS = 10
"""Profile values (about 1) are rounded to this many decimals to find the distinct ones."""
OFFSETS_NEGLIGIBLE = 0.01
"""Per-position offsets whose varying part is below this fraction of the within-channel variance
are dropped (:func:`significant`): the shared variance describes them well enough."""
MAX_OFFSET_FACTORS = 16
"""Most factors kept for per-position offsets (:func:`compressed`)."""
MAX_OFFSET_POSITIONS = 4096
"""Per-position offsets are kept for tensors of at most this many spatial positions (64 x 64);
on larger maps the border rows are a small fraction of the positions."""


def spatial_shape(shape: Sequence | None) -> tuple | None:
    """The spatial part (axes 1..-2) of a channels-last tensor shape; None if unknown."""
    if shape is None or len(shape) < 3 or any(d is None for d in shape[1:-1]):
        return None
    return tuple(int(d) for d in shape[1:-1])


def tap_positions(in_len: int, out_len: int, kernel: int, stride: int, dilation: int,
                  padding: str, transpose: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(outputs, inputs, valid), each (n, kernel): the output and input index each kernel tap
    joins, for n = output positions (forward) or input positions (transpose), and whether
    both lie inside the tensors. Padding follows TensorFlow: 'same' pads the smaller half
    before, 'causal' pads only before."""
    span = (kernel - 1) * dilation + 1
    taps = np.arange(kernel)[None, :] * dilation
    if transpose:
        left = max((in_len - 1) * stride + span - out_len, 0) // 2 if padding == "same" else 0
        inputs = np.broadcast_to(np.arange(in_len)[:, None], (in_len, kernel))
        outputs = inputs * stride + taps - left
        return outputs, inputs, (outputs >= 0) & (outputs < out_len)
    if padding == "same":
        left = max((out_len - 1) * stride + span - in_len, 0) // 2
    elif padding == "causal":
        left = span - 1
    else:
        left = 0
    outputs = np.broadcast_to(np.arange(out_len)[:, None], (out_len, kernel))
    inputs = outputs * stride + taps - left
    return outputs, inputs, (inputs >= 0) & (inputs < in_len)


def tap_matrix(in_len: int, out_len: int, kernel: int, stride: int, dilation: int, padding: str,
               transpose: bool = False) -> np.ndarray:
    """M[o, i]: how many kernel taps join input position i to output position o."""
    outputs, inputs, valid = tap_positions(in_len, out_len, kernel, stride, dilation, padding, transpose)
    matrix = np.zeros((out_len, in_len))
    np.add.at(matrix, (outputs[valid], inputs[valid]), 1.0)
    return matrix


def tap_selections(in_len: int, out_len: int, kernel: int, stride: int, dilation: int, padding: str,
                   transpose: bool = False) -> np.ndarray:
    """S[t, o, i] = 1 where kernel tap t joins input position i to output position o (both inside):
    the tap matrix (:func:`tap_matrix`) split by tap."""
    outputs, inputs, valid = tap_positions(in_len, out_len, kernel, stride, dilation, padding, transpose)
    selections = np.zeros((kernel, out_len, in_len))
    rows, taps = np.nonzero(valid)
    selections[taps, outputs[rows, taps], inputs[rows, taps]] = 1.0
    return selections


def along_axes(matrices: Sequence[np.ndarray], profile: np.ndarray | None) -> np.ndarray:
    """(M_1 (x) M_2 (x) ...) r: each matrix applied along its spatial axis (r = 1 for None)."""
    values = np.ones(tuple(m.shape[1] for m in matrices)) if profile is None else np.asarray(profile)
    for axis, matrix in enumerate(matrices):
        values = np.moveaxis(np.tensordot(matrix, values, axes=([1], [axis])), 0, axis)
    return values


def normalized(values: np.ndarray | None) -> np.ndarray | None:
    """``values`` scaled to mean 1; None when uniform, empty or without a positive mean."""
    if values is None or values.size == 0:
        return None
    total = float(values.mean())
    if not (total > 0 and np.isfinite(total)):
        return None
    profile = values / total
    return None if np.all(np.abs(profile - 1.0) <= UNIFORM_TOLERANCE) else profile


def window_means(matrices: Sequence[np.ndarray], profile: np.ndarray | None) -> np.ndarray | None:
    """The profile averaged over each output's window (pooling): (M r) / (M 1), normalized."""
    if profile is None:
        return None
    counts = along_axes(matrices, None)
    return normalized(np.divide(along_axes(matrices, profile), counts, out=np.zeros_like(counts),
                                where=counts > 0))


def mixed(profiles: Sequence[np.ndarray | None], weights: Sequence[float],
          shape: tuple | None) -> np.ndarray | None:
    """Profile of a sum (or merge) of tensors with second moments ``weights``: the
    second-moment-weighted average of their profiles (None counts as uniform)."""
    if shape is None or all(p is None for p in profiles):
        return None
    if any(p is not None and p.shape != shape for p in profiles):
        return None
    total = float(sum(weights))
    if not total > 0:
        return None
    values = sum(w * (np.ones(shape) if p is None else p) for p, w in zip(profiles, weights))
    return normalized(values / total)


def distinct(profile: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values, inverse, fractions): the distinct profile values (rounded), the index of each
    position's value, and the fraction of positions having it. Functions of the profile are
    evaluated once per distinct value; borders make only a few."""
    rounded = np.round(np.asarray(profile, dtype=np.float64).ravel(), DISTINCT_DECIMALS)
    values, inverse, counts = np.unique(rounded, return_inverse=True, return_counts=True)
    return values, inverse, counts / counts.sum()


@dataclass(frozen=True)
class PositionOffsets:
    """A channel's offsets fixed by the weight draw, position by position:
    d_c(p) = sum_j factors[j, p] b_(c, j) with b iid N(0, 1) over channels, so
    Cov_c(d(p), d(q)) = sum_j factors[j, p] factors[j, q] (absolute units).

    A convolution of an input with mean m gives output channel c the offset
    m sum_(taps t valid at p) W_ct: the same at interior positions (the position-shared
    variance), different where zero padding cuts taps. Batch normalization removes each
    channel's mean over positions, and what it leaves is this varying part, the same in every
    sample, which an average pool keeps. ``factors`` hold the whole offset (their mean over
    positions is the uniform part, also counted in the record's ``shared``); for an activation
    output f(z), ``source`` holds z's offsets (max pooling pools z). ``normalized``: each channel
    was divided by its own spread over positions (batch normalization), so a channel with large
    offsets has its rest scaled down with them (what a max sees; second moments do not)."""

    factors: np.ndarray
    source: "PositionOffsets | None" = None
    normalized: bool = False

    @property
    def spatial(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self.factors.shape[1:])

    @property
    def centred(self) -> np.ndarray:
        """The factors less their mean over positions: the varying part d(p) - mean_q d(q)."""
        axes = tuple(range(1, self.factors.ndim))
        return self.factors - self.factors.mean(axis=axes, keepdims=True)

    @property
    def varying(self) -> float:
        """mean_p Var_c(d(p) - mean_q d(q)): the variance the varying part adds."""
        return float((self.centred ** 2).sum(axis=0).mean())

    @property
    def total(self) -> np.ndarray:
        """Var_c(d(p)) per position: sum_j factors[j, p]^2."""
        return (self.factors ** 2).sum(axis=0)

    def pooled(self, matrices: Sequence[np.ndarray]) -> "PositionOffsets":
        """The offsets of a linear map acting per axis (``matrices``, e.g. window averages)."""
        shape = (0,) + tuple(m.shape[0] for m in matrices)
        return PositionOffsets(np.stack([along_axes(matrices, f) for f in self.factors]) if len(self.factors)
                               else np.zeros(shape))

    def permuted(self, order: Sequence[int]) -> "PositionOffsets":
        """The offsets with their spatial axes in ``order`` (axis i is axis order[i] of these)."""
        source = None if self.source is None else self.source.permuted(order)
        return PositionOffsets(np.transpose(self.factors, [0, *(1 + axis for axis in order)]), source,
                               self.normalized)

    def repeated(self, sizes: Sequence[int]) -> "PositionOffsets":
        """The offsets with every position repeated ``sizes[i]`` times along axis i (upsampling)."""
        factors = self.factors
        for axis, size in enumerate(sizes):
            factors = np.repeat(factors, size, axis=axis + 1)
        return PositionOffsets(factors, None if self.source is None else self.source.repeated(sizes),
                               self.normalized)

    def scaled(self, scale: float | np.ndarray) -> "PositionOffsets":
        """The offsets times ``scale`` (a number or one value per position)."""
        return PositionOffsets(self.factors * scale)


def significant(factors: np.ndarray, within: float) -> PositionOffsets | None:
    """The offsets with these ``factors`` (compressed to MAX_OFFSET_FACTORS), or None where
    their varying part is below OFFSETS_NEGLIGIBLE of ``within`` (the within-channel variance)
    or the map has more than MAX_OFFSET_POSITIONS positions."""
    if factors.size == 0 or factors[0].size > MAX_OFFSET_POSITIONS or not np.all(np.isfinite(factors)):
        return None
    offsets = PositionOffsets(compressed(factors, MAX_OFFSET_FACTORS))
    return offsets if offsets.varying >= OFFSETS_NEGLIGIBLE * within else None


def compressed(factors: np.ndarray, limit: int) -> np.ndarray:
    """At most ``limit`` factors with (nearly) the same Gram matrix sum_j f_j f_j^T: the factors
    projected on the leading eigenvectors of their small (J, J) Gram matrix F F^T (the leading
    singular directions of the (J, P) factor matrix, scaled by their singular values)."""
    if factors.shape[0] <= limit:
        return factors
    flat = factors.reshape(factors.shape[0], -1)
    _, vectors = np.linalg.eigh(flat @ flat.T)
    return (vectors[:, ::-1][:, :limit].T @ flat).reshape((limit,) + factors.shape[1:])


def convolved_offsets(selections: Sequence[np.ndarray], weight: float, uniform: float,
                      source: PositionOffsets | None, within: float) -> PositionOffsets | None:
    """The per-position offsets of a convolution's output channel, sum over input channels c' and
    taps t of W_(c c' t) times the input's offset at the input position tap t joins to p, with
    zero-mean independent weights of variance ``weight`` / (input channels): per tap t, the
    input offset common to all positions (variance ``uniform``: the input mean squared and its
    fixed shared variance) gives the factor sqrt(weight uniform) v_t(p), v_t(p) = 1 where tap t
    lands inside the input; each factor L_j of the input's own offsets gives sqrt(weight) S_t L_j.
    ``selections``: per spatial axis, :func:`tap_selections` (taps of a multi-axis kernel are
    products over the axes); None where the varying part is negligible (:func:`significant`)."""
    fresh = np.ones((1,))
    for selection in selections:
        fresh = np.einsum("t...,ko->tk...o", fresh, selection.sum(axis=2))
        fresh = fresh.reshape((-1,) + fresh.shape[2:])
    parts = [math.sqrt(weight * max(uniform, 0.0)) * fresh]
    if source is not None:
        factors = source.factors
        for axis, selection in enumerate(selections):
            moved = np.tensordot(selection, factors, axes=([2], [axis + 1]))  # (k, out, F, ...)
            moved = np.moveaxis(moved, 1, axis + 2)
            factors = compressed(moved.reshape((-1,) + moved.shape[2:]), 4 * MAX_OFFSET_FACTORS)
        parts.append(math.sqrt(weight) * factors)
    return significant(np.concatenate(parts), within)
