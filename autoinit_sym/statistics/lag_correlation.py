"""Short-range spatial correlation of a channel's values, beyond its position-shared offset.

AutoInit's assumption is that distinct positions of a channel are independent apart from
the offset they all share (``shared``, see ``estimators.base``). A convolution with few taps
per output (a depthwise one above all) makes neighbouring outputs of one channel correlated
with a sign that depends on the kernel: zero on average over channels, but its square is
not, and an activation with curvature turns the square into a positive correlation of its
outputs (and of their per-sample averages, which is what a global pool sees). Through a
stack of depthwise blocks that correlation accumulates. The walk keeps, per tensor with
spatial axes, a :class:`LagCorrelation` over the lags delta with |delta_i| <= RADIUS
(None: independent positions). With w = var - shared the within-channel variance, and
rho_c(delta) = Cov(x_p, x_{p+delta}) / w for channel c (positions p over the sample):

- ``mean``   m(delta) = E_c[rho_c(delta)];
- ``square`` s(delta) = E_c[rho_c(delta)^2];
- ``excess`` g(delta) = E_c[Cov(x_p^2, x_{p+delta}^2)] / (2 w^2) - s(delta), the non-Gaussian
  part of the covariance of squares (zero for a Gaussian field); g(0) is half the excess
  kurtosis;
- two floors of g common to all pairs of positions of a (sample, channel): a scale factor per
  sample shared by the channels (``sample_floor``: a drop-connect mask) and one per (sample,
  channel) (``channel_floor``: a squeeze-and-excitation gate, per-sample offsets through a
  curved activation). An activation turns a scale that varies per sample into a mean that
  does: it adds A_2^2 w^2 floor / 2 to the per-sample shared variance, which is what the
  squeeze pools of EfficientNet see.

Rules (weights independent, zero-mean and Gaussian):

- a convolution with C input channels per output and T taps, N(u) the number of tap pairs
  t - t' = u: the same-tap terms give each channel's correlation weighted by its sum of
  squared weights (a weighted average of C of them, which keeps m and spreads s - m^2 by
  D = (1 + 2/T) / (C + 2/T)), the cross-tap terms add fresh correlation:
  s'(d) = m^2 + (s - m^2) D + sum_{u != 0} N(u) (s(d+u) + m(d+u) m(d-u)) / (C T^2 + 2T),
  g'(d) = (3 T g(d) + sum_{u != 0} N(u) g(d+u)) / (C T^2 + 2T) (moments of Gaussian weights;
  the kurtosis of a weighted sum shrinks by E[sum k^4] / E[(sum k^2)^2] = 3 / (C T + 2));
  the sample floor stays, the channel floor is spread by D; a stride s maps output lag d
  to input lag s d; at borders the kernel length per axis is the average number of its taps
  inside the input (a 5x5 'same' kernel on a 2x2 map has 2 x 2);
- an activation f (Hermite expansion of Cov(f(x_p), f(x_q)) to second order, with
  A_n = E[f^(n)(x)] and B_n the same for (f - E f)^2, both from the moment engine by Price's
  theorem, A_n = d^n E[f] / d mu^n):
  m' = (A_1^2 w m + A_2^2 w^2 (s + g) / 2) / w',
  s' = (A_1^2 w / w')^2 s, g' = (B_1^2 w m + B_2^2 w^2 (s + g) / 2) / (2 w'^2) - s',
  floors times B_2^2 w^2 / (4 w'^2), plus (B_1^2 b + B_2^2 b^2 / 2) / (2 w'^2) on the
  channel floor from the per-sample offsets b;
- a sum of independent tensors mixes them by within variance;
- per-channel affine maps (batch normalization) keep it; a factor constant over a (sample,
  channel)'s positions (a mask, a gate) keeps m and s and raises g and the floors
  (:func:`scaled`); a mask per element dilutes it (:func:`rescaled`);
- a transposed convolution by the same Gaussian-weight moments counted over its actual tap
  pairs (:func:`transposed`: alternate outputs are reached by different numbers of taps);
- nearest-neighbour upsampling maps every per-lag average linearly (:func:`upsampled`);
- an average over k positions has variance shared + w sum_d m(d) prod_i (1 - |d_i| / k_i) / k.

The record also carries the channels' per-position offsets fixed by the draw where borders make
them vary (``offsets``, ``border_profile.PositionOffsets``), which convolutions make from an
input mean, batch normalization exposes, activations map (:func:`activated_offsets`) and
pools average; rules that do not know them drop them.

Layers without a rule drop it (independent positions, the AutoInit assumption). Where the
correlations are negligible only the kurtosis and floors are kept (:func:`point`), so wide
networks without depthwise convolutions cost what they did.
"""
from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import numpy as np

from autoinit_sym.moment_engine.expressions import numpy_function
from autoinit_sym.moment_engine.nodes import standard_normal_nodes
from autoinit_sym.statistics.activation import ENGINE, Activation
from autoinit_sym.statistics.border_profile import PositionOffsets, distinct, significant, tap_positions

RADIUS = 7
"""Largest lag kept per spatial axis; correlations further apart are taken as zero."""
HERMITE_POINTS = 64
"""Gauss-Hermite nodes for an activation output's kurtosis."""
STEP = 0.02
"""Finite-difference step, in input standard deviations, for the coefficients A_n, B_n."""
NEGLIGIBLE = 0.02
"""Below this (:func:`reduced`) correlations are dropped, the kurtosis and floors kept."""


@dataclass(frozen=True)
class LagCorrelation:
    """m, s and g over the lags of a tensor (arrays of shape 2 R_i + 1 per spatial axis,
    lag 0 at the centre), and the floor of g common to all pairs of positions of a
    (sample, channel): a per-sample scale shared by all channels (``sample_floor``, which mixing
    channels keeps) and one per (sample, channel) (``channel_floor``, which it averages away);
    see the module docstring. ``excess`` holds g above the floor. ``offsets``: the channels'
    per-position offsets fixed by the draw where borders make them vary
    (``border_profile.PositionOffsets``), or None."""

    mean: np.ndarray
    square: np.ndarray
    excess: np.ndarray
    sample_floor: float = 0.0
    channel_floor: float = 0.0
    offsets: PositionOffsets | None = None

    @property
    def floor(self) -> float:
        return self.sample_floor + self.channel_floor

    @property
    def is_point(self) -> bool:
        """No lag but 0 is kept: positions independent (see :func:`point`)."""
        return all(r == 0 for r in self.radii)

    @property
    def radii(self) -> tuple[int, ...]:
        return tuple((n - 1) // 2 for n in self.mean.shape)

    @property
    def kurtosis(self) -> float:
        """The excess kurtosis of the values, 2 g(0)."""
        return 2.0 * float(self.excess[self.radii])

    def pooled_factor(self, window: Sequence[int]) -> float:
        """sum_d m(d) prod_i (1 - |d_i| / k_i) over |d_i| < k_i: k Var(average) / w for an
        average over a window of k = prod k_i positions (1 for independent positions)."""
        weights = _outer([np.clip(1.0 - np.abs(np.arange(-r, r + 1)) / k, 0.0, None)
                          for r, k in zip(self.radii, window)])
        return max(float((self.mean * weights).sum()), 0.0)


def reduced(lags: LagCorrelation) -> LagCorrelation:
    """``lags``, or only its kurtosis and floors (a point: radius 0) where its correlations are
    too weak to matter: off lag 0, sum |m| + s + |g| below NEGLIGIBLE (a global pool's variance
    moves by about 1% or less). Wide networks without depthwise convolutions (ResNets) so keep
    the cost they had."""
    off = np.abs(lags.mean) + lags.square + np.abs(lags.excess)
    if lags.is_point or float(off.sum() - off[lags.radii]) >= NEGLIGIBLE:
        return lags
    return point(len(lags.radii), lags.kurtosis, lags.sample_floor, lags.channel_floor, lags.offsets)


def point(rank: int, kurtosis: float = 0.0, sample_floor: float = 0.0, channel_floor: float = 0.0,
          offsets: PositionOffsets | None = None) -> LagCorrelation:
    """No correlation between positions; the values' excess kurtosis, the floors and the
    per-position offsets only."""
    ones = np.ones((1,) * rank)
    return LagCorrelation(ones, ones, ones * (kurtosis / 2.0), sample_floor, channel_floor, offsets)


def expanded(lags: LagCorrelation | None, radii: Sequence[int]) -> LagCorrelation:
    """``lags`` over ``radii``: a point or None becomes independent positions (with its
    kurtosis and floors), a correlation kept over other radii counts as independent."""
    if lags is not None and lags.radii == tuple(radii):
        return lags
    if lags is None or not lags.is_point:
        return uncorrelated(radii)
    full = uncorrelated(radii, lags.kurtosis)
    return LagCorrelation(full.mean, full.square, full.excess, lags.sample_floor, lags.channel_floor, lags.offsets)


def radii_for(spatial: Sequence[int]) -> tuple[int, ...]:
    """The kept lags per axis for a tensor with these spatial lengths."""
    return tuple(min(int(n) - 1, RADIUS) for n in spatial)


def uncorrelated(radii: Sequence[int], kurtosis: float = 0.0) -> LagCorrelation:
    """Independent positions: m = s = 1 at lag 0 only, g(0) = kurtosis / 2."""
    delta = np.zeros(tuple(2 * r + 1 for r in radii))
    delta[tuple(radii)] = 1.0
    return LagCorrelation(delta, delta.copy(), delta * (kurtosis / 2.0))


def _outer(vectors: Sequence[np.ndarray]) -> np.ndarray:
    out = np.ones(())
    for vector in vectors:
        out = np.multiply.outer(out, vector)
    return out


def _centred(lags: LagCorrelation, mean: np.ndarray, square: np.ndarray, excess: np.ndarray,
             kurtosis: float, sample_floor: float, channel_floor: float,
             offsets: PositionOffsets | None = None) -> LagCorrelation:
    centre = lags.radii
    mean, square, excess = mean.copy(), square.copy(), excess.copy()
    mean[centre], square[centre], excess[centre] = 1.0, 1.0, kurtosis / 2.0
    return LagCorrelation(mean, square, excess, max(sample_floor, 0.0), max(channel_floor, 0.0), offsets)


def convolve(values: np.ndarray, kernel: np.ndarray, mode: str = "same") -> np.ndarray:
    """The N-d convolution out[p] = sum_t kernel[t] values[p - t], summed directly over the
    kernel's nonzero taps: ``full`` over every overlap, ``same`` its centred part of ``values``'
    shape (starting at (k - 1) // 2 per axis). What ``scipy.signal.convolve`` gives, exactly (no FFT
    rounding), without importing ``scipy.signal`` (about a second at a process's first call)."""
    out = np.zeros([n + k - 1 for n, k in zip(values.shape, kernel.shape)], np.result_type(values, kernel))
    for tap in zip(*np.nonzero(kernel)):
        out[tuple(slice(t, t + n) for t, n in zip(tap, values.shape))] += kernel[tap] * values
    if mode == "full":
        return out
    return out[tuple(slice((k - 1) // 2, (k - 1) // 2 + n) for k, n in zip(kernel.shape, values.shape))]


def _shifted(values: np.ndarray, offset: Sequence[int]) -> np.ndarray:
    """out[d] = values[d + offset] (zero where d + offset leaves the array)."""
    out = np.zeros_like(values)
    if any(abs(o) >= n for n, o in zip(values.shape, offset)):
        return out
    target, source = [], []
    for n, o in zip(values.shape, offset):
        target.append(slice(max(0, -o), n - max(0, o)))
        source.append(slice(max(0, o), n - max(0, -o)))
    out[tuple(target)] = values[tuple(source)]
    return out


def pair_counts(kernel: Sequence[float], dilation: Sequence[int]) -> np.ndarray:
    """N(u): the number of tap pairs (t, t') of a box kernel with t - t' = u, over the
    difference box (centre u = 0); a product of the per-axis counts max(k - |u| / d, 0). A
    kernel length may be fractional: the average number of taps that fall inside the input
    (a 'same' convolution of a short axis sees fewer than its kernel)."""
    axes = []
    for k, d in zip(kernel, dilation):
        reach = max(math.ceil(k) - 1, 0)
        counts = np.zeros(2 * reach * d + 1)
        counts[::d] = np.maximum(k - np.abs(np.arange(-reach, reach + 1)), 0.0)
        axes.append(counts)
    return _outer(axes)


def convolved(lags: LagCorrelation | None, spatial_in: Sequence[int], spatial_out: Sequence[int],
              kernel: Sequence[float], strides: Sequence[int], dilation: Sequence[int],
              channels: float) -> LagCorrelation:
    """The lag correlation of a convolution's output (module docstring) from its input's
    (None: independent Gaussian positions); ``channels`` input channels reach each output and
    ``kernel`` holds, per axis, the average number of taps inside the input (borders)."""
    counts = pair_counts(kernel, dilation)
    centre = tuple(n // 2 for n in counts.shape)
    cross = counts.copy()
    cross[centre] = 0.0                              # tap pairs t != t'
    taps = float(math.prod(kernel))
    norm = channels * taps * taps + 2.0 * taps       # E[(sum of squared weights)^2] / sigma^4
    dilution = (1.0 + 2.0 / taps) / (channels + 2.0 / taps)
    if (lags is None or lags.is_point) and cross.sum() / norm < NEGLIGIBLE:
        # Many channels: no correlation worth keeping, only the kurtosis of the weighted sum.
        kurtosis = 0.0 if lags is None else 3.0 * taps * lags.kurtosis / norm
        sample_floor, channel_floor = (0.0, 0.0) if lags is None else (lags.sample_floor, lags.channel_floor * dilution)
        return point(len(spatial_out), kurtosis, sample_floor, channel_floor)
    source = expanded(lags, radii_for(spatial_in))
    m, s, g = source.mean, source.square, source.excess
    spread = convolve(s, cross, mode="same")
    offcentre = m.copy()
    offcentre[source.radii] = 0.0
    if np.any(offcentre):
        for index in zip(*np.nonzero(cross)):
            u = tuple(int(i) - c for i, c in zip(index, centre))
            spread = spread + cross[index] * _shifted(m, u) * _shifted(m, tuple(-v for v in u))
    square = m * m + (s - m * m) * dilution + spread / norm
    excess = (3.0 * taps * g + convolve(g, cross, mode="same")) / norm
    kurtosis = 2.0 * float(excess[source.radii])
    full = _centred(source, m, square, excess, kurtosis, source.sample_floor, source.channel_floor * dilution)
    return reduced(_strided(full, radii_for(spatial_out), strides))


class _AxisPairs(NamedTuple):
    """Tap-pair counts of a (transposed) convolution along one axis, each averaged over the
    output positions o with o + delta inside, for output lags delta (first index) and input
    lags Delta (the rest, |Delta| <= the input's radius): ``taps`` the mean taps per output,
    ``same`` n and ``same_square`` n^2 for the n taps reaching both o and o + delta (whose inputs
    are Delta apart), ``pairs`` all pairs of a tap at o and one at o + delta Delta apart,
    ``swapped`` the tap pairs (t, t') with t at o and t' at o + delta Delta_1 apart and t' at o
    and t at o + delta Delta_2 apart."""

    taps: float
    same: np.ndarray
    same_square: np.ndarray
    pairs: np.ndarray
    swapped: np.ndarray


def _axis_pairs(in_len: int, out_len: int, kernel: int, stride: int, padding: str, r_out: int,
                r_in: int) -> _AxisPairs:
    outputs, inputs, valid = tap_positions(in_len, out_len, kernel, stride, 1, padding, transpose=True)
    source = np.full((out_len, kernel), -1)
    rows, taps = np.nonzero(valid)
    source[outputs[rows, taps], taps] = inputs[rows, taps]
    size = 2 * r_in + 1
    same, same_square = np.zeros((2 * r_out + 1, size)), np.zeros((2 * r_out + 1, size))
    pairs, swapped = np.zeros((2 * r_out + 1, size)), np.zeros((2 * r_out + 1, size, size))
    for index, delta in enumerate(range(-r_out, r_out + 1)):
        first, second = source[max(0, -delta):out_len - max(0, delta)], source[max(0, delta):out_len - max(0, -delta)]
        if first.shape[0] == 0:
            continue
        norm = 1.0 / first.shape[0]
        inside = (first >= 0) & (second >= 0)
        count = inside.sum(axis=1)
        lag = np.take_along_axis(second - first, np.argmax(inside, axis=1)[:, None], axis=1)[:, 0]
        keep = (count > 0) & (np.abs(lag) <= r_in)
        np.add.at(same[index], lag[keep] + r_in, norm * count[keep])
        np.add.at(same_square[index], lag[keep] + r_in, norm * count[keep] ** 2)
        for t in range(kernel):
            for u in range(kernel):
                one = (first[:, t] >= 0) & (second[:, u] >= 0)
                lag_one = second[:, u] - first[:, t]
                ok = one & (np.abs(lag_one) <= r_in)
                np.add.at(pairs[index], lag_one[ok] + r_in, norm)
                both = ok & (first[:, u] >= 0) & (second[:, t] >= 0)
                lag_two = second[:, t] - first[:, u]
                both &= np.abs(lag_two) <= r_in
                np.add.at(swapped[index], (lag_one[both] + r_in, lag_two[both] + r_in), norm)
    return _AxisPairs(float((source >= 0).sum(axis=1).mean()), same, same_square, pairs, swapped)


def _contract(per_axis: Sequence[np.ndarray], values: np.ndarray) -> np.ndarray:
    """out[delta] = sum_Delta prod_i A_i[delta_i, Delta_i] values[Delta] for per-axis A_i."""
    letters = "abcdefgh"
    rank = len(per_axis)
    terms = [f"{letters[i]}{letters[rank + i]}" for i in range(rank)]
    spec = ",".join(terms + [letters[rank:2 * rank]]) + "->" + letters[:rank]
    return np.einsum(spec, *per_axis, values, optimize=True)


def _contract_swapped(per_axis: Sequence[np.ndarray], first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """out[delta] = sum prod_i B_i[delta_i, Delta_i, Delta'_i] first[Delta] second[Delta']."""
    letters = "abcdefghijklmnop"
    rank = len(per_axis)
    terms = [f"{letters[i]}{letters[rank + i]}{letters[2 * rank + i]}" for i in range(rank)]
    spec = ",".join(terms + [letters[rank:2 * rank], letters[2 * rank:3 * rank]]) + "->" + letters[:rank]
    return np.einsum(spec, *per_axis, first, second, optimize=True)


def transposed(lags: LagCorrelation | None, spatial_in: Sequence[int], spatial_out: Sequence[int],
               kernel: Sequence[int], strides: Sequence[int], padding: str, channels: float) -> LagCorrelation:
    """The lag correlation of a transposed convolution's output, where tap t carries input i to
    output s i + t - pad, so neighbouring outputs are reached by different taps (a stride-2
    kernel of 3 reaches alternate outputs with 1 and 2 taps per axis). The same moments of
    Gaussian weights as :func:`convolved`, counted over the actual tap pairs
    (:class:`_AxisPairs`, averaged over output positions; products over the axes), with
    E_c[rho(D) rho(D')] = m(D) m(D') + [D = D'] (s - m^2)(D):
    m' = sum_same m / T, s' = (C sum_same n^2 m^2 + sum_same n^2 (s - m^2) + sum_pairs s
    + sum_swapped (m m + [D = D'] (s - m^2))) / (C T^2 + 2T), g' = (sum_pairs g + 2 sum_same g) / (C T^2 + 2T),
    T the mean taps per output; for a stride-1 convolution these are :func:`convolved`'s.
    ``lags`` None: independent input positions."""
    source = expanded(lags, radii_for(spatial_in))
    out_radii = radii_for(spatial_out)
    axes = [_axis_pairs(int(i), int(o), int(k), int(s), padding, r, r_in) for i, o, k, s, r, r_in in
            zip(spatial_in, spatial_out, kernel, strides, out_radii, source.radii)]
    m, s, g = source.mean, source.square, source.excess
    spread = np.maximum(s - m * m, 0.0)
    taps = float(np.prod([a.taps for a in axes]))
    norm = channels * taps * taps + 2.0 * taps
    same, same_square = [a.same for a in axes], [a.same_square for a in axes]
    pairs, swapped = [a.pairs for a in axes], [a.swapped for a in axes]
    diagonal = [np.einsum("aii->ai", a.swapped) for a in axes]
    mean = _contract(same, m) / taps
    square = (channels * _contract(same_square, m * m) + _contract(same_square, spread) + _contract(pairs, s)
              + _contract_swapped(swapped, m, m) + _contract(diagonal, spread)) / norm
    excess = (_contract(pairs, g) + 2.0 * _contract(same, g)) / norm
    dilution = (1.0 + 2.0 / taps) / (channels + 2.0 / taps)
    out = LagCorrelation(mean, square, excess)
    return reduced(_centred(out, mean, square, excess, 2.0 * float(excess[out_radii]), source.sample_floor,
                            source.channel_floor * dilution))


def _strided(lags: LagCorrelation, radii: Sequence[int], strides: Sequence[int]) -> LagCorrelation:
    """Output lag d is input lag stride * d; lags beyond the input's kept ones are zero."""
    index = []
    for r_out, r_in, stride in zip(radii, lags.radii, strides):
        steps = np.arange(-r_out, r_out + 1) * stride
        index.append((steps, np.abs(steps) <= r_in))

    def take(values: np.ndarray) -> np.ndarray:
        out = values
        for axis, (steps, inside) in enumerate(index):
            picked = np.take(out, np.clip(steps + lags.radii[axis], 0, out.shape[axis] - 1), axis=axis)
            shape = [1] * out.ndim
            shape[axis] = len(steps)
            out = picked * inside.reshape(shape)
        return out

    return LagCorrelation(take(lags.mean), take(lags.square), take(lags.excess), lags.sample_floor, lags.channel_floor)


@functools.lru_cache(maxsize=None)
def activation_function(activation: Activation) -> Callable[[np.ndarray], np.ndarray]:
    """f itself, as a NumPy function of a float64 array (an ``engine`` activation)."""
    return numpy_function(activation.engine().expr)


def _derivatives(values: np.ndarray, step: float) -> tuple[float, float]:
    """First and second central differences of values at mu - 2h, ..., mu + 2h (fourth order)."""
    a, b, c, d, e = values
    return (a - 8 * b + 8 * d - e) / (12 * step), (-a + 16 * b - 30 * c + 16 * d - e) / (12 * step * step)


class ActivatedLags(NamedTuple):
    """What an activation makes of a lag correlation: the output's, and the per-sample
    offset variance it adds (a per-sample scale turned into a per-sample mean)."""

    lags: LagCorrelation | None
    offsets: float = 0.0


def activated_lags(lags: LagCorrelation | None, activation: Activation, mean: float,
                   var: float, shared: float, sample_shared: float, out_var: float,
                   out_shared: float) -> ActivatedLags:
    """The lag correlation of f(x) (module docstring) and the per-sample offset variance
    A_2^2 w^2 floor / 2 the floor adds to the output's shared variance; the per-sample
    offsets (``sample_shared``) make the squares of the output covary:
    floor' = (B_1^2 b + B_2^2 (b^2 + w^2 floor) / 2) / (2 w'^2) (b: sample_shared; the sample
    floor stays a sample floor). Nothing without an input correlation, for an activation the moment engine
    does not know, or where a within variance is 0."""
    within, out_within = var - shared, out_var - out_shared
    if lags is None or within <= 0 or out_within <= 0 or activation.kind != ENGINE:
        return ActivatedLags(None)
    engine, f = activation.engine(), activation_function(activation)
    # The kurtosis by Gauss-Hermite through f; A_n = d^n/dmu^n E[f] and B_n = d^n/dmu^n
    # E[(f - c)^2] at fixed c = E[f] (Price's theorem) from the moment engine at five means.
    nodes, weights = standard_normal_nodes(HERMITE_POINTS)
    with np.errstate(over="ignore", invalid="ignore"):
        values = np.asarray(f(mean + math.sqrt(var) * nodes), dtype=np.float64)
    centre = float(weights @ values)
    deviations = (values - centre) ** 2
    spread = float(weights @ deviations)
    if not (spread > 0 and np.all(np.isfinite(deviations))):
        return ActivatedLags(None)
    kurtosis = float(weights @ deviations ** 2) / spread ** 2 - 3.0
    position = activated_offsets(lags.offsets, activation, mean, var, out_within)
    if lags.is_point and lags.floor == 0.0 and sample_shared <= 0.0:
        return ActivatedLags(point(len(lags.radii), kurtosis, offsets=position))
    step = STEP * math.sqrt(var)
    shifted = mean + step * np.arange(-2.0, 3.0)
    firsts = np.asarray(engine.mean(shifted, var), dtype=np.float64)
    seconds = np.asarray(engine.second_moment(shifted, var), dtype=np.float64)
    centre = float(firsts[2])
    a1, a2 = _derivatives(firsts, step)
    b1, b2 = _derivatives(seconds - 2.0 * centre * firsts, step)
    if not all(map(math.isfinite, (a1, a2, b1, b2))):
        return ActivatedLags(None)
    m, s, g = lags.mean, lags.square, lags.excess
    energy = s + g
    out_mean = (a1 * a1 * within * m + 0.5 * a2 * a2 * within * within * energy) / out_within
    out_square = (a1 * a1 * within / out_within) ** 2 * s
    out_energy = (b1 * b1 * within * m + 0.5 * b2 * b2 * within * within * energy) / (2.0 * out_within ** 2)
    per_square = b2 * b2 * within * within / (4.0 * out_within ** 2)
    offsets = max(sample_shared, 0.0)
    from_offsets = (b1 * b1 * offsets + 0.5 * b2 * b2 * offsets * offsets) / (2.0 * out_within ** 2)
    out = _centred(lags, out_mean, out_square, out_energy - out_square, kurtosis, per_square * lags.sample_floor,
                   per_square * lags.channel_floor + from_offsets, position)
    return ActivatedLags(reduced(out), 0.5 * a2 * a2 * within * within * lags.floor)


def activated_offsets(offsets: PositionOffsets | None, activation: Activation, mean: float, var: float,
                      out_within: float) -> PositionOffsets | None:
    """The per-position offsets of f(x) for x_p = mean + d(p) + r_p, d(p) = sum_j L_j(p) b_j
    (``offsets``) and the rest r_p Gaussian with variance var - mean_q D(q), D = sum_j L_j^2.
    A channel's mean at p over samples is g_p(d(p)) = E_r f(mean + d(p) + r); over channels
    Cov(g_p, g_q) = A_1(p) A_1(q) K + A_2(p) A_2(q) K^2 / 2 (Hermite, second order) with
    K = sum_j L_j(p) L_j(q) and A_n(p) = E[f^(n)(x_p)], x_p ~ N(mean, var - mean D + D(p)) (Price's
    theorem: derivatives of the engine's mean in mu): factors A_1 L_j, A_2 L_j^2 / sqrt(2) and
    A_2 L_j L_k (j < k). The pattern E f(x_p) - mean_q E f(x_q), the same for every channel, is one
    more factor (for second moments a fixed pattern counts like a random one); none where they
    are negligible next to the output's within variance. The input's factors are kept as the
    ``source`` (max pooling pools z). None without offsets."""
    if offsets is None:
        return None
    engine = activation.engine()
    total = offsets.total
    variances = np.maximum(var - float(total.mean()) + total, NEGLIGIBLE * var)
    values, inverse, _ = distinct(variances / var)
    spread = values * var
    step = STEP * np.sqrt(spread)
    shifted = mean + step[:, None] * np.arange(-2.0, 3.0)[None, :]
    firsts = np.asarray(engine.mean(shifted.ravel(), np.repeat(spread, 5)), dtype=np.float64).reshape(shifted.shape)
    a1, a2 = (a[inverse].reshape(total.shape) for a in _derivatives(firsts.T, step))
    pattern = firsts[:, 2][inverse].reshape(total.shape)
    factors = offsets.factors
    j, k = np.triu_indices(factors.shape[0])
    pairs = factors[j] * factors[k] * np.where(j == k, math.sqrt(0.5), 1.0).reshape((-1,) + (1,) * total.ndim)
    stacked = np.concatenate([a1 * factors, a2 * pairs, (pattern - pattern.mean())[None]])
    kept = significant(stacked, out_within)
    source = offsets if offsets.source is None else PositionOffsets(offsets.factors, None, offsets.normalized)
    return PositionOffsets(np.zeros((0,) + total.shape) if kept is None else kept.factors, source)


def resized(lags: LagCorrelation | None, radii: Sequence[int]) -> LagCorrelation | None:
    """The same correlations kept over other radii (a padded or cropped tensor): lags beyond
    the old radii are zero, lags beyond the new ones are dropped."""
    if lags is None or len(radii) != len(lags.radii):
        return None
    if lags.is_point:
        return lags

    def fit(values: np.ndarray) -> np.ndarray:
        out = np.zeros(tuple(2 * r + 1 for r in radii))
        keep = [min(r, old) for r, old in zip(radii, lags.radii)]
        out[tuple(slice(r - k, r + k + 1) for r, k in zip(radii, keep))] = values[
            tuple(slice(old - k, old + k + 1) for old, k in zip(lags.radii, keep))]
        return out

    return LagCorrelation(fit(lags.mean), fit(lags.square), fit(lags.excess), lags.sample_floor, lags.channel_floor)


def upsampled(lags: LagCorrelation | None, factors: Sequence[int], spatial_out: Sequence[int]) -> LagCorrelation | None:
    """The lag correlation of a nearest-neighbour upsampling by ``factors``: output positions
    delta apart along an axis with factor f are, for the f phases r of the first one, the input
    positions floor((r + delta) / f) apart, so every per-lag average maps linearly,
    m'(delta) = (1/f) sum_r m(floor((r + delta) / f)) per axis, and s (an average of squared
    covariances) and g likewise; repeated neighbours have correlation 1. The offsets are repeated."""
    if lags is None or len(factors) != len(lags.radii):
        return None
    radii = radii_for(spatial_out)
    maps = []
    for f, r_out, r_in in zip(factors, radii, lags.radii):
        matrix = np.zeros((2 * r_out + 1, 2 * r_in + 1))
        for index, delta in enumerate(range(-r_out, r_out + 1)):
            for phase in range(f):
                lag = (phase + delta) // f
                if abs(lag) <= r_in:
                    matrix[index, lag + r_in] += 1.0 / f
        maps.append(matrix)
    offsets = None if lags.offsets is None else lags.offsets.repeated(factors)
    offsets = offsets if offsets is not None and offsets.spatial == tuple(spatial_out) else None
    mean, square, excess = (_contract(maps, a) for a in (lags.mean, lags.square, lags.excess))
    return reduced(LagCorrelation(mean, square, excess, lags.sample_floor, lags.channel_floor, offsets))


def permuted(lags: LagCorrelation | None, order: Sequence[int]) -> LagCorrelation | None:
    """``lags`` with its spatial axes in ``order`` (axis i of the result is axis order[i] of the input)."""
    if lags is None:
        return None
    offsets = None if lags.offsets is None else lags.offsets.permuted(order)
    return LagCorrelation(*(np.transpose(a, order) for a in (lags.mean, lags.square, lags.excess)),
                          lags.sample_floor, lags.channel_floor, offsets)


def rescaled(lags: LagCorrelation | None, ratio: float) -> LagCorrelation | None:
    """The same correlated covariances over a within variance 1 / ``ratio`` times as large
    (independent noise added per element): m off the centre times ratio, s and g times ratio^2."""
    if lags is None:
        return None
    r2 = ratio * ratio
    return _centred(lags, lags.mean * ratio, lags.square * r2, lags.excess * r2, lags.kurtosis * r2,
                    lags.sample_floor * r2, lags.channel_floor * r2, lags.offsets)


def scaled(lags: LagCorrelation | None, second_moment: float, within: float, fourth_ratio: float,
           per_sample: bool) -> LagCorrelation | None:
    """x a for a factor a constant over a (sample, channel)'s positions, independent of x, with
    E[a^4] / E[a^2]^2 = ``fourth_ratio`` = K (a mask per sample when ``per_sample``, else per
    (sample, channel)); x has E[x^2] = ``second_moment`` = S and within variance w. Correlations
    of values keep; squares gain Cov = (K - 1) S^2 at every pair of positions:
    g' = K (s + g) - s near, floor' = (K (S^2 + 2 w^2 floor) - S^2) / (2 w^2)."""
    if lags is None or not within > 0:
        return lags
    k = fourth_ratio
    added = (k - 1.0) * second_moment ** 2 / (2.0 * within ** 2)
    excess = k * (lags.square + lags.excess) - lags.square
    kurtosis = k * (3.0 + lags.kurtosis) - 3.0
    return _centred(lags, lags.mean, lags.square, excess, kurtosis,
                    k * lags.sample_floor + (added if per_sample else 0.0),
                    k * lags.channel_floor + (0.0 if per_sample else added))


def summed(parts: Sequence[tuple[LagCorrelation | None, float]]) -> LagCorrelation | None:
    """The lag correlation of a sum of independent tensors given as (lags, within variance);
    None where no part has one or their lags differ in shape (an input without one counts
    as independent Gaussian positions)."""
    known = [lags for lags, _ in parts if lags is not None]
    full = [lags.radii for lags in known if not lags.is_point]
    if not known or any(r != full[0] for r in full) or any(len(k.radii) != len(known[0].radii) for k in known):
        return None
    total = float(sum(w for _, w in parts))
    if not total > 0:
        return None
    radii = full[0] if full else known[0].radii
    filled = [(expanded(lags, radii), w / total) for lags, w in parts]
    mean = sum(w * lags.mean for lags, w in filled)
    square = sum(w * w * lags.square for lags, w in filled)
    for (a, wa), (b, wb) in itertools.combinations(filled, 2):
        square = square + 2.0 * wa * wb * a.mean * b.mean
    excess = sum(w * w * lags.excess for lags, w in filled)
    return reduced(LagCorrelation(mean, square, excess, sum(w * w * lags.sample_floor for lags, w in filled),
                                  sum(w * w * lags.channel_floor for lags, w in filled)))
