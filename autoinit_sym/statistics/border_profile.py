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
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

UNIFORM_TOLERANCE = 1e-12
"""A profile whose values all lie within this of 1 is treated as uniform (None)."""
DISTINCT_DECIMALS = 10
"""Profile values (about 1) are rounded to this many decimals to find the distinct ones."""


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
