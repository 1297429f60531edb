"""Pooling where positions are correlated or differ: max pooling samples the tracked field
(lag correlation, border profile, per-position offsets), transposed convolutions, upsampling
and normalizations carry the correlation on, and an average pool keeps the border offsets that
batch normalization leaves. Unit checks against NumPy and real layers, then the models of
issue 13 (item 4) against measurement (arithmetic mean of the measured variance over 8 draws)."""
import math

import keras
import numpy as np
import pytest
from keras import layers
from scipy.signal import correlate, fftconvolve

from autoinit_sym import AutoInit
from autoinit_sym.estimators import convolutional, pooling, reshaping
from autoinit_sym.estimators.base import EstimationContext
from autoinit_sym.estimators.registry import lookup
from autoinit_sym.measure import measure
from autoinit_sym.statistics.correlated_max import field_kernel, kernel_correlation
from autoinit_sym.statistics.lag_correlation import LagCorrelation, radii_for, transposed, upsampled
from autoinit_sym.statistics.state import TensorState

DRAWS = tuple(range(8))


def _embedded(values: np.ndarray, size: int) -> np.ndarray:
    """``values`` (odd lengths, lag 0 at the centre) centred in a zero array of ``size`` per axis."""
    out = np.zeros((size,) * values.ndim)
    out[tuple(slice((size - n) // 2, (size + n) // 2) for n in values.shape)] = values
    return out


def smooth_correlation(kernel: np.ndarray, radii: tuple[int, ...]) -> np.ndarray:
    """The correlation of white noise convolved with ``kernel``, over a lag box of ``radii``."""
    full = correlate(kernel, kernel) / (kernel ** 2).sum()
    out = np.zeros(tuple(2 * r + 1 for r in radii))
    reach = [(n - 1) // 2 for n in full.shape]
    out[tuple(slice(r - k, r + k + 1) for r, k in zip(radii, reach))] = full
    return out


@pytest.mark.parametrize("make", [
    lambda: np.ones((3, 3)),
    lambda: np.random.default_rng(0).standard_normal((3, 3)),
    lambda: np.outer([1.0, 2.0, 1.0], [1.0, 1.0]),
])
def test_field_kernel_reproduces_the_correlation(make):
    """White noise convolved with the spectral square root has the correlation asked for (within
    0.025 at every lag with the default trimming tolerance; exact for a 3x3 kernel's own)."""
    m = smooth_correlation(make(), (7, 7))
    achieved = kernel_correlation(field_kernel(m))
    assert np.abs(_embedded(achieved, 63) - _embedded(m, 63)).max() < 0.025
    assert field_kernel(np.ones((1, 1))).shape == (1, 1)


def _rule(layer, spatial, channels=4):
    shape_in = (None, *spatial, channels)
    shape_out = tuple(layer.compute_output_shape(shape_in))
    return lookup(layer)(layer, EstimationContext(), [shape_in], [shape_out])


@pytest.mark.parametrize("make", [lambda: layers.MaxPooling2D(2), lambda: layers.MaxPooling2D(3, strides=2),
                                  lambda: layers.GlobalMaxPooling2D()])
def test_max_of_a_correlated_field_matches_noise(make):
    """A Gaussian field whose neighbours correlate (white noise through a positive 3x3 kernel)
    max-pooled by the real layer: the sampled rule meets the mean within 2% and the variance
    within 0.08 in log (16000 noisy maps; the rule samples at most 4096 rows, so a global max's
    variance carries about 2.5% of sampling error on each side, and 0.08 is three standard
    errors); positions taken as independent miss the mean by more than 5%."""
    kernel = np.outer([1.0, 2.0, 1.0], [1.0, 2.0, 1.0])
    spatial = (12, 12)
    rng = np.random.default_rng(1)
    noise = rng.standard_normal((16000, spatial[0] + 2, spatial[1] + 2))
    field = np.stack([fftconvolve(n, kernel, mode="valid") for n in noise]) / math.sqrt((kernel ** 2).sum())
    layer = make()
    y = keras.ops.convert_to_numpy(layer(field[..., None].astype("float32"))).astype(np.float64)
    lags = LagCorrelation(*(lambda m: (m, m * m, np.zeros_like(m)))(smooth_correlation(kernel, radii_for(spatial))))
    rule = _rule(layer, spatial)
    correlated = rule.propagate([TensorState(0.0, 1.0, lags=lags)])
    independent = rule.propagate([TensorState(0.0, 1.0)])
    assert rule.method == "monte_carlo"
    assert abs(correlated.mean / y.mean() - 1.0) < 0.02, (correlated.mean, y.mean())
    assert abs(math.log(correlated.var / y.var())) < 0.08, (correlated.var, y.var())
    assert independent.mean / y.mean() - 1.0 > 0.05


def test_max_pool_output_carries_the_correlation():
    """Overlapping windows (3, stride 2) of a correlated field are correlated; the rule measures
    it from its samples (lag 1 within 0.03 of the real layer's)."""
    kernel = np.ones((3, 3))
    spatial = (16, 16)
    rng = np.random.default_rng(2)
    noise = rng.standard_normal((3000, spatial[0] + 2, spatial[1] + 2))
    field = np.stack([fftconvolve(n, kernel, mode="valid") for n in noise]) / 3.0
    layer = layers.MaxPooling2D(3, strides=2)
    y = keras.ops.convert_to_numpy(layer(field[..., None].astype("float32"))).astype(np.float64)[..., 0]
    y = y - y.mean(axis=0)
    measured = float((y[:, :, 1:] * y[:, :, :-1]).mean() / y.var())
    lags = LagCorrelation(*(lambda m: (m, m * m, np.zeros_like(m)))(smooth_correlation(kernel, radii_for(spatial))))
    out = _rule(layer, spatial).propagate([TensorState(0.0, 1.0, lags=lags)]).lags
    r = out.radii
    assert abs(out.mean[r[0], r[1] + 1] - measured) < 0.03, (out.mean[r[0], r[1] + 1], measured)


def _per_channel_lags(y: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean over channels of the position-averaged covariance at lag (0, d) and the average over
    positions and channels of its square, both over the mean variance (rows: samples)."""
    y = y - y.mean(axis=0)
    w = float((y ** 2).mean())
    means, squares = [], []
    for d in range(radius + 1):
        cov = (y[:, :, d:, :] * y[:, :, :y.shape[2] - d, :]).mean(axis=0)
        means.append(float(cov.mean()) / w)
        squares.append(float((cov ** 2).mean()) / w ** 2)
    return np.array(means), np.array(squares)


def test_transposed_convolution_correlation_matches_the_layer():
    """Conv2DTranspose(stride 2) of white noise: the mean correlation stays 0 and the squared
    covariances (averaged over positions, where outputs reached by 1, 2 or 4 taps alternate)
    meet transposed() within 35% at lags 1 and 2 (3 input channels, 256 output channels)."""
    keras.utils.set_random_seed(3)
    layer = layers.Conv2DTranspose(256, 3, strides=2, padding="same", use_bias=False,
                                   kernel_initializer="random_normal")
    x = np.random.default_rng(3).standard_normal((2000, 8, 8, 3)).astype("float32")
    y = keras.ops.convert_to_numpy(layer(x)).astype(np.float64)
    means, squares = _per_channel_lags(y, 2)
    lags = transposed(None, (8, 8), (16, 16), (3, 3), (2, 2), "same", 3.0)
    r = lags.radii
    assert np.abs(lags.mean[r[0], r[1] + 1:r[1] + 3]).max() == 0.0 and np.abs(means[1:]).max() < 0.03
    predicted = lags.square[r[0], r[1] + 1:r[1] + 3]
    assert np.all(np.abs(np.log(predicted / squares[1:])) < 0.35), (predicted, squares[1:])


def test_upsampling_repeats_the_correlation():
    """Nearest-neighbour repetition: a repeated neighbour has correlation 1, the next input
    lag is reached by half the pairs."""
    base = LagCorrelation(*(lambda m: (m, m * m, np.zeros_like(m)))(smooth_correlation(np.ones(3), (7,))))
    up = upsampled(base, (2,), (16,))
    r = up.radii[0]
    assert up.mean[r + 1] == pytest.approx(0.5 + 0.5 * base.mean[8])
    assert up.mean[r + 2] == pytest.approx(base.mean[8])
    assert up.mean[r - 1] == pytest.approx(up.mean[r + 1])


def upsampling_model() -> keras.Model:
    keras.backend.clear_session()
    inputs = keras.Input((8, 8, 4))
    x = layers.UpSampling2D(2, name="up")(layers.Conv2D(32, 3, padding="same", name="conv")(inputs))
    x = layers.Conv2D(32, 3, padding="same", name="conv2")(x)
    return keras.Model(inputs, [layers.GlobalAveragePooling2D(name="avg")(x), layers.GlobalMaxPooling2D(name="max")(x)])


def test_pools_after_upsampling_see_the_repeated_neighbours(monkeypatch):
    """UpSampling2D(2) -> Conv2D -> global pools (8 draws): the average keeps the variance the
    repeated neighbours share (within 0.1 in log; measured +0.04), the max's mean within 2%
    (measured -0.7%); with the correlation ended at the upsampling the average read -0.9."""
    def errors() -> tuple[float, float]:
        predicted, measured = [], []
        for seed in DRAWS:
            model, est = AutoInit(weight_init_config={"seed": seed}).initialize_model(upsampling_model(),
                                                                                      return_estimates=True)
            got = measure(model, samples=128, seed=seed, batch_size=128)
            predicted.append((est["avg"].var, est["max"].mean))
            measured.append((got["avg"][1], got["max"][0]))
        (avg, top), (avg_m, top_m) = np.mean(predicted, axis=0), np.mean(measured, axis=0)
        return math.log(avg_m / avg), top / top_m - 1.0

    average, maximum = errors()
    assert abs(average) < 0.1 and abs(maximum) < 0.02, (average, maximum)
    monkeypatch.setattr(reshaping, "repeated_lags", lambda rule, lags: None)
    assert abs(errors()[0]) > 0.5


def test_layer_normalization_keeps_the_correlation():
    lags = LagCorrelation(*(lambda m: (m, m * m, np.zeros_like(m)))(smooth_correlation(np.ones((3, 3)), (7, 7))))
    for layer in (layers.LayerNormalization(), layers.GroupNormalization(2)):
        rule = _rule(layer, (8, 8))
        out = rule.propagate([TensorState(0.0, 2.0, lags=lags)]).lags
        assert out is not None and np.allclose(out.mean, lags.mean)


def max_model(pool: str, after_activation: bool = False, width: int = 32) -> keras.Model:
    """Conv2DTranspose(stride 2) -> ELU -> Conv2D -> max pool over a 16x16 map -> Dense head."""
    keras.backend.clear_session()
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2DTranspose(width, 3, strides=2, padding="same", name="up")(inputs)
    x = layers.Activation("elu", name="act")(x)
    if not after_activation:
        x = layers.Conv2D(width, 3, padding="same", name="conv")(x)
    pooling = layers.GlobalMaxPooling2D if pool == "global" else lambda name: layers.MaxPooling2D(int(pool), name=name)
    x = pooling(name="pool")(x)
    x = layers.Flatten(name="flat")(x)
    return keras.Model(inputs, layers.Dense(64, name="head")(x))


def normalized_model(padding: str = "same", pool: str = "average", width: int = 32) -> keras.Model:
    """Conv2D -> BatchNormalization -> ReLU -> AveragePooling2D (or a 2x2 / global max pool) over a
    16x16 map -> Dense head."""
    keras.backend.clear_session()
    inputs = keras.Input((16, 16, 3))
    x = layers.Conv2D(width, 3, padding=padding, name="conv")(inputs)
    x = layers.Activation("relu", name="act")(layers.BatchNormalization(name="bn")(x))
    pooling = {"average": lambda: layers.AveragePooling2D(2, name="pool"),
               "max": lambda: layers.MaxPooling2D(2, name="pool"),
               "global": lambda: layers.GlobalMaxPooling2D(name="pool")}[pool]
    x = layers.Flatten(name="flat")(pooling()(x))
    return keras.Model(inputs, layers.Dense(64, name="head")(x))


def figures(model: keras.Model, input_mean: float = 0.0, input_var: float = 1.0) -> dict[str, tuple[float, float]]:
    """Per call: (predicted mean / measured mean - 1, log(measured var / predicted var)), the
    measured values averaged arithmetically over 8 independently seeded draws."""
    predicted, measured = {}, {}
    for seed in DRAWS:
        model, est = AutoInit(input_data_mean=input_mean, input_data_var=input_var,
                              weight_init_config={"seed": seed}).initialize_model(model, return_estimates=True)
        got = measure(model, input_mean, input_var, samples=64, seed=seed, batch_size=64)
        for key in ("pool", "head"):
            predicted[key] = (est[key].mean, est[key].var)
            measured.setdefault(key, []).append(got[key])
    out = {}
    for key, values in measured.items():
        mean, var = np.mean(values, axis=0)
        out[key] = (predicted[key][0] / mean - 1.0 if abs(mean) > 1e-3 else 0.0, math.log(var / predicted[key][1]))
    return out


@pytest.mark.parametrize("pool", ["global", "2", "3"])
def test_max_pool_after_a_transposed_convolution(pool):
    """The pooled mean within 5% and the head within 0.25 in log of its target. The stride-2
    transposed convolution leaves a 1:2:2:4 pattern of variances that the next convolution
    smooths to a border profile; the max follows the high-variance positions. Measured (draws
    0-7 / 8-15): pooled mean -1.4 / -2.1%, +3.1 / +2.7%, +3.3 / +2.5% (global, 2, 3); heads
    -0.06 / -0.03, -0.03 / -0.04, -0.01 / +0.04. Without sampling (iid positions of one
    variance) the global pool's mean read -5.3 / -5.8%. The pooled variance of the global max
    still reads +0.46 to +0.62: its channels' variances spread (their maxima with them), which
    the record does not describe."""
    errors = figures(max_model(pool))
    assert abs(errors["pool"][0]) < 0.05 and abs(errors["head"][1]) < 0.25, errors


def test_max_pool_of_an_activation_output_uses_the_profile(monkeypatch):
    """Max pooling the ELU output directly: the 1:2:2:4 variance pattern of the transposed
    convolution decides the max. Measured (draws 0-7 / 8-15): pooled mean -3.3 / -1.5%, head
    +0.13 / +0.05 (iid positions of one variance: -15 / -14%, +0.39 / +0.31)."""
    model = max_model("global", after_activation=True)
    errors = figures(model)
    assert abs(errors["pool"][0]) < 0.05 and abs(errors["head"][1]) < 0.25, errors
    monkeypatch.setattr(pooling._Pooling, "correlated", lambda self, state: False)
    assert figures(model)["pool"][0] < -0.1


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_average_pool_keeps_the_border_offsets_batch_normalization_leaves(padding, monkeypatch):
    """Input mean 1, variance 0.1 (an image-like input): each output channel of the 'same'
    convolution has an offset, the input mean times the sum of its weights, smaller at the
    borders where padding cuts taps. Batch normalization removes each channel's mean over
    positions, so the border offsets (the same in every sample) become a large part of its
    output, and the pool keeps them. Measured (draws 0-7 / 8-15): pool -0.03 / -0.06 in log
    variance, pooled mean -1.3 / -1.5%, head +0.07 / -0.03 ('valid': -0.02 / -0.03); without the
    offsets the pool read +0.29 / +0.26 (+0.64 / +0.62 at input variance 0.01, where the pooled
    mean now reads -5 / -6%: batch normalization divides each channel by its own spread)."""
    model = normalized_model(padding)
    errors = figures(model, 1.0, 0.1)
    assert abs(errors["pool"][0]) < 0.05 and abs(errors["pool"][1]) < 0.1 and abs(errors["head"][1]) < 0.25, errors
    if padding == "same":
        monkeypatch.setattr(convolutional.ConvolutionEstimator, "pre_activation_offsets", lambda self, sums: None)
        assert figures(model, 1.0, 0.1)["pool"][1] > 0.2


@pytest.mark.parametrize("pool", ["max", "global"])
def test_max_pool_of_border_offsets_batch_normalization_leaves(pool, monkeypatch):
    """The same input and layers with a 2x2 or global max pool: the max follows each channel's
    border pattern (sampled with the pattern, each channel divided by its own spread as batch
    normalization does). Measured (draws 0-7 / 8-15): pooled mean +0.9 / +0.4% and -0.5 / +1.2%,
    log variance +0.02 / -0.01 and -0.04 / -0.13 (2x2, global); positions taken as independent
    with one variance read +9.2 / +8.7% and -1.0 / +0.4%, +0.12 / +0.09 and +0.52 / +0.50."""
    model = normalized_model(pool=pool)
    errors = figures(model, 1.0, 0.1)
    assert abs(errors["pool"][0]) < 0.05 and abs(errors["pool"][1]) < 0.2 and abs(errors["head"][1]) < 0.25, errors
    monkeypatch.setattr(pooling._Pooling, "correlated", lambda self, state: False)
    monkeypatch.setattr(convolutional.ConvolutionEstimator, "pre_activation_offsets", lambda self, sums: None)
    old = figures(model, 1.0, 0.1)["pool"]
    assert old[0] > 0.05 or old[1] > 0.3, old
