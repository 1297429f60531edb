"""The maximum over windows of a Gaussian field whose nearby positions are correlated.

Max pooling sees one channel's positions as x_p = mean + a + d(p) + e_p where the channel's
per-position offsets d are known (``border_profile.PositionOffsets``; per channel rescaled to
a common spread after batch normalization), else as x_p = mean + sqrt(r(p)) (a + e_p) with r(p)
the relative variance per position from the border profile (offsets and the rest both follow
the taps that reach p); a ~ N(0, shared) is the channel's offset and e a zero-mean field with
correlation m(delta) between positions delta apart (the mean lag correlation over channels,
``lag_correlation.LagCorrelation.mean``). The max of k correlated positions is smaller than
that of k independent ones, and positions with a larger variance win it more often; neither has
a tractable closed form, so the pooling rule (``estimators.pooling``) samples e through Keras ops
as white noise convolved with a kernel h whose autocorrelation is m (:func:`field_kernel`, the
spectral square root) and applies the layer itself. Checked against
real layers on correlated NumPy fields (``tests/layers/test_correlated_pooling.py``: the mean of
2x2, 3x3 and global maxima within 2%, where independent positions read 5-20% high).

Assumptions and limits: e is Gaussian (the kurtosis in the lag record is not used) and
stationary in its correlation (a nearest-neighbour upsampling's blocks of equal values are
sampled as a stationary field with the same average correlation); every channel has the mean
correlation m (the per-channel spread s - m^2 is not sampled, nor the spread of the channels'
variances: in the tests each lowers the expected max by about 2%).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from autoinit_sym.statistics.lag_correlation import convolve

KERNEL_TOLERANCE = 1e-3
"""Fraction of the kernel's energy that may be cut when its support is trimmed."""


def field_kernel(correlation: np.ndarray, tolerance: float = KERNEL_TOLERANCE) -> np.ndarray:
    """h with sum_u h(u) h(u + delta) ~ m(delta) and sum h^2 = 1, for a correlation m over the
    lag box (odd lengths, lag 0 at the centre): the inverse FFT of sqrt(max(FFT(m), 0)) on a
    periodic grid of at least 4 R + 2 points per axis (so h * h does not wrap), trimmed to the
    smallest centred box keeping all but ``tolerance`` of its energy. White noise convolved
    with h is a stationary Gaussian field with unit variance and (nearly) correlation m."""
    m = np.asarray(correlation, dtype=np.float64)
    radii = [(n - 1) // 2 for n in m.shape]
    if m.size == 1:
        return np.ones_like(m)
    grid = tuple(1 << max(1, math.ceil(math.log2(4 * r + 2))) for r in radii)
    embedded = np.zeros(grid)
    embedded[tuple(slice(0, n) for n in m.shape)] = m
    embedded = np.roll(embedded, [-r for r in radii], axis=tuple(range(m.ndim)))
    spectrum = np.clip(np.real(np.fft.fftn(embedded)), 0.0, None)
    kernel = np.fft.fftshift(np.real(np.fft.ifftn(np.sqrt(spectrum))))
    kernel /= math.sqrt(float((kernel ** 2).sum()))
    centre = [n // 2 for n in grid]
    total = float((kernel ** 2).sum())
    for radius in range(max(grid) // 2):
        box = tuple(slice(max(c - radius, 0), c + radius + 1) for c in centre)
        if (kernel[box] ** 2).sum() >= (1.0 - tolerance) * total:
            trimmed = kernel[box]
            return trimmed / math.sqrt(float((trimmed ** 2).sum()))
    return kernel


def kernel_correlation(kernel: np.ndarray) -> np.ndarray:
    """The correlation sum_u h(u) h(u + delta) that white noise convolved with ``kernel`` has,
    over the lags |delta_i| < kernel length (lag 0 at the centre)."""
    return convolve(kernel, np.flip(kernel), "full")


def pooled_reach(radii: Sequence[int], pool: Sequence[int], strides: Sequence[int]) -> tuple[int, ...]:
    """Output lags at which two max-pooled windows can still be correlated: windows delta'
    outputs apart are s delta' - (k - 1) inputs apart at their closest, so up to
    floor((R + k - 1) / s) for an input correlation reaching R."""
    return tuple((int(r) + int(k) - 1) // max(int(s), 1) for r, k, s in zip(radii, pool, strides))


def correlation_reach(mean: np.ndarray, threshold: float = 1e-3) -> tuple[int, ...]:
    """Per axis, the largest |delta_i| at which |m(delta)| exceeds ``threshold`` (0: none)."""
    radii = [(n - 1) // 2 for n in mean.shape]
    significant = np.argwhere(np.abs(mean) > threshold)
    if significant.size == 0:
        return tuple(0 for _ in radii)
    return tuple(int(np.abs(significant[:, i] - r).max()) for i, r in enumerate(radii))


def sample_lags(values: np.ndarray, radii: Sequence[int], floor: float) -> tuple[np.ndarray, np.ndarray]:
    """From samples ``values`` (rows, *spatial) of a field: the correlation m(delta) and the
    excess g(delta) = Cov(x_p^2, x_q^2) / (2 w^2) - m(delta)^2 over the lags |delta_i| <= radii
    (each averaged over the pairs of positions inside the field and over the rows; w the
    variance). Values whose size is within ``floor`` standard errors of zero are set to 0."""
    centred = values - values.mean(axis=0, keepdims=True)
    w = float((centred ** 2).mean())
    squares = centred ** 2 - (centred ** 2).mean(axis=0, keepdims=True)
    shape = tuple(2 * r + 1 for r in radii)
    m, g = np.zeros(shape), np.zeros(shape)
    spatial = values.shape[1:]
    for index in np.ndindex(*shape):
        delta = [i - r for i, r in zip(index, radii)]
        first = tuple(slice(max(0, -d), n - max(0, d)) for d, n in zip(delta, spatial))
        second = tuple(slice(max(0, d), n - max(0, -d)) for d, n in zip(delta, spatial))
        a, b = centred[(slice(None),) + first], centred[(slice(None),) + second]
        if a.size == 0:
            continue
        m[index] = float((a * b).mean()) / w
        g[index] = float((squares[(slice(None),) + first] * squares[(slice(None),) + second]).mean()) / (2 * w * w)
        if abs(m[index]) < floor / math.sqrt(a.size):
            m[index] = 0.0
    g -= m * m
    centre = tuple(radii)
    m[centre] = 1.0
    return m, g


def input_variances(second_moment: Callable[[np.ndarray, np.ndarray], np.ndarray], mean: float, var: float,
                    targets: np.ndarray) -> np.ndarray | None:
    """The variances v with E[f(N(mean, v))^2] = ``targets`` (``second_moment(means, variances)``
    from the moment engine): the per-position variance of the Gaussian z behind an activation
    output's per-position second moments, by interpolation on a log grid of v from 1e-4 var to
    100 var (targets outside it are clipped). None where E[f^2] does not grow with v there."""
    grid = var * np.logspace(-4.0, 2.0, 241)
    values = np.asarray(second_moment(np.full_like(grid, mean), grid), dtype=np.float64)
    if not (np.all(np.isfinite(values)) and np.all(np.diff(values) > 0)):
        return None
    return np.exp(np.interp(np.asarray(targets, dtype=np.float64), values, np.log(grid)))
