"""Short-range spatial correlation (statistics.lag_correlation): each rule against exact
values or Gaussian noise through real layers, and a depthwise (MBConv) stack whose global pools
AutoInit now predicts where independent positions were off by a factor of two."""
import math

import keras
import numpy as np
import pytest
from keras import layers
from helpers import log_errors, records

from autoinit_sym import moments
from autoinit_sym.estimators import convolutional
from autoinit_sym.moment_engine.nodes import standard_normal_nodes
from autoinit_sym.statistics.activation import classify
from autoinit_sym.estimators.regularization import DropoutEstimator
from autoinit_sym.statistics.lag_correlation import (LagCorrelation, activated_lags, convolved, pair_counts,
                                                         resized, scaled, summed, uncorrelated)


def _kernel_correlations(kernels: np.ndarray) -> np.ndarray:
    """rho_c(delta) of the depthwise output of white noise, per kernel: its autocorrelation
    sum_t k_t k_{t+delta} / sum_t k_t^2 (positions away from borders)."""
    from scipy.signal import correlate

    return np.stack([correlate(k, k) / (k * k).sum() for k in kernels])


def test_pair_counts_are_the_kernel_autocorrelation():
    from scipy.signal import correlate

    counts = pair_counts((3, 2), (2, 1))
    mask = np.zeros((5, 2))
    mask[::2] = 1.0
    assert np.array_equal(counts, correlate(mask, mask))
    assert counts.sum() == 36 and counts[counts.shape[0] // 2, counts.shape[1] // 2] == 6


@pytest.mark.parametrize("kernel", [3, 5])
def test_depthwise_correlation_of_independent_positions(kernel):
    """E_c[rho_c] = 0 and E_c[rho_c^2] = N(delta) / T^2 over Gaussian kernels (20000 of them)."""
    kernels = np.random.default_rng(0).standard_normal((20000, kernel, kernel))
    rho = _kernel_correlations(kernels)
    lags = convolved(None, (32, 32), (32, 32), (kernel, kernel), (1, 1), (1, 1), 1.0)
    r = lags.radii[0]
    c = kernel - 1
    window = (slice(r - c, r + c + 1),) * 2
    assert lags.mean[lags.radii] == 1.0 and np.count_nonzero(lags.mean) == 1
    measured = (rho ** 2).mean(axis=0)
    off = np.ones_like(measured, dtype=bool)
    off[c, c] = False
    assert np.abs(rho.mean(axis=0)[off]).max() < 0.01
    assert np.allclose(lags.square[window][off], measured[off], rtol=0.25, atol=0.002)
    # the ratio of quadratic forms makes E[rho^2] a little larger than E[num^2] / E[den]^2
    assert abs(math.log(lags.square[window][off].sum() / measured[off].sum())) < 0.25


def test_mixing_convolution_shrinks_the_spread_by_the_channels():
    base = convolved(None, (16, 16), (16, 16), (3, 3), (1, 1), (1, 1), 1.0)
    mixed = convolved(None, (16, 16), (16, 16), (3, 3), (1, 1), (1, 1), 16.0)
    off = base.square.copy()
    off[base.radii] = 0.0
    assert np.allclose(mixed.square[off > 0], off[off > 0] * (81 + 18) / (16 * 81 + 18))
    assert convolved(None, (16, 16), (16, 16), (3, 3), (1, 1), (1, 1), 64.0).is_point  # negligible
    assert convolved(base, (16, 16), (16, 16), (1, 1), (1, 1), (1, 1), 1.0).square == pytest.approx(base.square)
    strided = convolved(base, (16, 16), (8, 8), (1, 1), (2, 2), (1, 1), 1.0)
    assert strided.radii == (7, 7)
    assert strided.square[8, 7] == pytest.approx(base.square[9, 7])  # output lag 1 is input lag 2
    edge = convolved(None, (2, 2), (2, 2), (2.0, 2.0), (1, 1), (1, 1), 1.0)  # a 5x5 'same' kernel on 2x2
    assert edge.square[0, 1] == pytest.approx(2 / (16 + 8))


def _activation(name: str, values: np.ndarray) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(getattr(keras.activations, name)(
        keras.ops.convert_to_tensor(values, "float64"))), dtype=np.float64)


@pytest.mark.parametrize("name", ["silu", "tanh", "gelu", "relu"])
@pytest.mark.parametrize("rho", [0.05, -0.1, 0.2])
def test_activation_rule_matches_the_bivariate_gaussian(name, rho):
    """m' for one lag of correlation rho (s = rho^2, g = 0) against the exact
    Cov(f(x), f(y)) / Var f of a bivariate Gaussian (two-dimensional Gauss-Hermite; for the
    kinked relu, 4e6 Monte Carlo pairs); the rule is second order, so it errs by O(rho^3)."""
    mean, var = 0.3, 1.5
    lags = LagCorrelation(np.array([rho, 1.0, rho]), np.array([rho * rho, 1.0, rho * rho]), np.zeros(3))
    out_var = float(moments(name).variance(mean, var))
    result = activated_lags(lags, classify(name), mean, var, 0.0, 0.0, out_var, 0.0)
    if name == "relu":
        z = np.random.default_rng(3).standard_normal((2, 4_000_000))
        fx = _activation(name, mean + math.sqrt(var) * z[0])
        fy = _activation(name, mean + math.sqrt(var) * (rho * z[0] + math.sqrt(1 - rho * rho) * z[1]))
        exact, tolerance = float(np.cov(fx, fy)[0, 1]) / out_var, 3e-3
    else:
        z, w = standard_normal_nodes(80)
        fx = _activation(name, mean + math.sqrt(var) * z)
        fy = _activation(name, mean + math.sqrt(var) * (rho * z[:, None] + math.sqrt(1 - rho * rho) * z[None, :]))
        centre = float(w @ fx)
        exact, tolerance = float(w @ ((fx - centre)[:, None] * (fy - centre)) @ w) / out_var, 1e-4
    assert result.lags.mean[0] == pytest.approx(exact, abs=0.6 * abs(rho) ** 3 + tolerance)
    assert result.offsets == 0.0


def test_identity_sum_and_resize_keep_what_they_should():
    base = convolved(None, (6, 6), (6, 6), (3, 3), (1, 1), (1, 1), 1.0)
    both = summed([(base, 2.0), (None, 2.0)])
    assert both.mean[base.radii] == 1.0 and both.square[base.radii] == pytest.approx(1.0)
    off = base.square.copy()
    off[base.radii] = 0.0
    assert np.allclose(both.square - np.where(off > 0, 0, both.square), off / 4)
    assert summed([(None, 1.0), (None, 1.0)]) is None
    grown = resized(base, (7, 7))
    assert grown.radii == (7, 7) and np.allclose(resized(grown, base.radii).square, base.square)


def test_per_sample_factor_adds_a_common_floor():
    """x a with a per-sample factor: the squares of two far positions covary by (K - 1) S^2
    (K = E[a^4] / E[a^2]^2), measured on noise."""
    rng = np.random.default_rng(1)
    x = rng.normal(0.4, 1.0, (200000, 2))
    a = rng.choice([0.0, 1.0 / 0.7], size=(200000, 1), p=[0.3, 0.7])
    y = x * a
    cov = np.cov(y[:, 0] ** 2, y[:, 1] ** 2)[0, 1]
    lags = scaled(uncorrelated((1,)), 1.0 + 0.16, 1.0, 1 / 0.7, per_sample=True)
    w_out = 1.0 / 0.7
    assert 2 * lags.sample_floor * w_out ** 2 == pytest.approx(cov, rel=0.05)
    assert lags.channel_floor == 0.0


def test_dropout_noise_shape_spanning_positions_shares_like_spatial_dropout():
    """Dropout(noise_shape=(None, 1, 1, 1)) (EfficientNet's drop-connect) masks whole samples:
    the covariance of two positions of a channel grows as for SpatialDropout."""
    layer = layers.Dropout(0.3, noise_shape=(None, 1, 1, 1))
    rng = np.random.default_rng(2)
    offsets = rng.normal(0.0, 0.6, (20000, 1, 1, 4))
    x = (1.0 + offsets + rng.normal(0.0, 0.8, (20000, 4, 4, 4))).astype("float32")
    y = keras.ops.convert_to_numpy(layer(x, training=True)).astype(np.float64)
    estimator = DropoutEstimator(layer, input_shapes=[(None, 4, 4, 4)], output_shapes=[(None, 4, 4, 4)])
    (state,) = records(estimator, [1.0], [0.36 + 0.64], shared=[0.36], sample_shared=[0.36])
    centred = y - y.mean()
    measured = float((centred[:, 0, 0, :] * centred[:, 3, 2, :]).mean())
    assert state.shared == pytest.approx(measured, rel=0.05)


def mbconv_stack(size: int = 24, channels: int = 16, blocks: int = 4) -> keras.Model:
    """Depthwise residual blocks (expand 1x1, BN, swish, depthwise 5x5, BN, swish, project 1x1,
    BN, add) with a global average pool read off every block's activation and sum."""
    inputs = keras.Input((size, size, channels))
    x, pools = inputs, []
    for b in range(blocks):
        y = layers.Conv2D(3 * channels, 1, use_bias=False)(x)
        y = layers.Activation("silu")(layers.BatchNormalization()(y))
        y = layers.DepthwiseConv2D(5, padding="same", use_bias=False)(y)
        y = layers.Activation("silu")(layers.BatchNormalization()(y))
        pools.append(layers.GlobalAveragePooling2D(name=f"pool_act{b}")(y))
        y = layers.BatchNormalization()(layers.Conv2D(channels, 1, use_bias=False)(y))
        x = layers.Add()([x, y])
        pools.append(layers.GlobalAveragePooling2D(name=f"pool_add{b}")(x))
    return keras.Model(inputs, pools)


def test_global_pools_after_depthwise_blocks_track_measurement(monkeypatch):
    """Each pool's variance (arithmetic mean over 8 draws) within 0.2 in log of the prediction
    (measured: +0.01 to +0.15); taking positions as independent (no lag correlation) misses
    them by up to 0.6 (the activations' pools: +0.4 to +0.63)."""
    model = mbconv_stack()

    def pool_errors() -> dict[str, float]:
        errors = log_errors(model, samples=128, seeds=tuple(range(8)))
        return {k: v for k, v in errors.items() if k.startswith("pool_")}

    pools = pool_errors()
    assert len(pools) == 8 and max(pools.values()) <= 0.2, pools
    monkeypatch.setattr(convolutional, "convolved", lambda *args: None)
    assert max(pool_errors().values()) > 0.4
