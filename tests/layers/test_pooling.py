"""Pooling estimators: window bookkeeping exactly, and the real layers fed Gaussian noise."""
import math

import keras
import numpy as np
import pytest

from autoinit_sym.estimators.base import EstimationContext
from autoinit_sym.estimators.pooling import adaptive_window_sizes, pooled_counts, pooled_moments, window_sizes
from autoinit_sym.estimators.registry import lookup
from helpers import propagated

INPUTS = [(0.0, 1.0), (5.0, 0.01), (-3.0, 25.0)]


def test_window_sizes_match_keras_counts():
    """Average-pooling the one-hot inputs e_j gives 1/k_i in each window i containing j, so
    1 / max_j output_i recovers the real window sizes Keras uses."""
    for n, pool, stride, padding in [(5, 3, 2, "same"), (7, 2, 2, "same"), (8, 3, 1, "same"), (6, 4, 3, "same"),
                                     (1, 3, 1, "same"), (9, 3, 2, "valid")]:
        layer = keras.layers.AveragePooling1D(pool, strides=stride, padding=padding)
        out = np.asarray(layer(np.eye(n, dtype="float32")[:, :, None]))[:, :, 0]
        assert list(window_sizes(n, pool, stride, padding)) == list(np.rint(1 / out.max(axis=0)).astype(int))
    for n, size in [(5, 3), (7, 2), (4, 4)]:
        out = np.asarray(keras.layers.AdaptiveAveragePooling1D(size)(np.eye(n, dtype="float32")[:, :, None]))
        assert list(adaptive_window_sizes(n, size)) == list(np.rint(1 / out[:, :, 0].max(axis=0)).astype(int))
    assert list(window_sizes(5, 3, 2, "same")) == [2, 3, 2]
    assert list(window_sizes(4, 3, 1, "same")) == [2, 3, 3, 2]
    assert list(window_sizes(7, 3, 2, "valid")) == [3, 3, 3]
    assert list(adaptive_window_sizes(5, 3)) == [2, 3, 2]
    ks, weights = pooled_counts([np.array([2, 3]), np.array([2, 3, 2])])
    assert list(ks) == [4, 6, 9] and list(weights) == pytest.approx([2 / 6, 3 / 6, 1 / 6])


def measure(layer, shape, mean, var, seed=0):
    x = np.random.default_rng(seed).normal(mean, math.sqrt(var), shape).astype("float32")
    y = np.asarray(layer(x), dtype=float)
    estimator = lookup(layer)(layer, EstimationContext(), [(None, *shape[1:])], [(None, *y.shape[1:])])
    return y, propagated(estimator, [mean], [var]), estimator


POOLS = [
    (lambda: keras.layers.MaxPooling1D(3, strides=2, padding="same"), (3000, 9, 8)),
    (lambda: keras.layers.AveragePooling1D(3, strides=2, padding="same"), (3000, 9, 8)),
    (lambda: keras.layers.MaxPooling2D(3, strides=2, padding="same"), (1000, 5, 5, 8)),
    (lambda: keras.layers.AveragePooling2D(3, strides=2, padding="same"), (1000, 5, 5, 8)),
    (lambda: keras.layers.MaxPooling2D(2), (1000, 6, 6, 8)),
    (lambda: keras.layers.AveragePooling2D((2, 3), strides=1, padding="valid"), (1000, 5, 5, 8)),
    (lambda: keras.layers.MaxPooling2D(3, strides=1, padding="same", data_format="channels_first"),
     (1000, 8, 4, 4)),
    (lambda: keras.layers.MaxPooling3D(2, padding="same"), (300, 3, 3, 3, 8)),
    (lambda: keras.layers.AveragePooling3D(2, padding="same"), (300, 3, 3, 3, 8)),
    (lambda: keras.layers.GlobalMaxPooling2D(), (20000, 4, 4, 4)),
    (lambda: keras.layers.GlobalAveragePooling2D(), (20000, 4, 4, 4)),
    (lambda: keras.layers.GlobalMaxPooling1D(keepdims=True), (20000, 30, 4)),
    (lambda: keras.layers.GlobalAveragePooling3D(), (20000, 2, 2, 2, 4)),
    (lambda: keras.layers.AdaptiveMaxPooling2D((2, 3)), (2000, 5, 7, 4)),
    (lambda: keras.layers.AdaptiveAveragePooling1D(3), (5000, 5, 4)),
]


@pytest.mark.parametrize("mean,var", INPUTS)
@pytest.mark.parametrize("make,shape", POOLS)
def test_pooling_matches_noise(make, shape, mean, var):
    y, (pred_mean, pred_var), _ = measure(make(), shape, mean, var)
    assert abs(y.mean() - pred_mean) <= 0.03 * math.sqrt(pred_var) + 1e-6, (y.mean(), pred_mean)
    assert abs(math.log(y.var() / pred_var)) <= 0.03, (y.var(), pred_var)


def test_border_windows_matter():
    """Full-window statistics would be visibly wrong on a small 'same'-padded input."""
    layer = keras.layers.AveragePooling2D(3, strides=2, padding="same")
    y, (_, pred_var), estimator = measure(layer, (4000, 5, 5, 4), 0.0, 1.0)
    assert estimator.method == "exact"
    assert abs(pred_var - 1 / 9) > 0.05 and abs(math.log(y.var() / pred_var)) < 0.02
    layer = keras.layers.MaxPooling2D(3, strides=2, padding="same")
    assert measure(layer, (4000, 5, 5, 4), 0.0, 1.0)[2].method == "quadrature"


def test_unknown_size_is_a_clear_error():
    layer = keras.layers.GlobalAveragePooling2D()
    estimator = lookup(layer)(layer, EstimationContext(), [(None, None, None, 3)], [(None, 3)])
    with pytest.raises(ValueError, match="spatial input size"):
        propagated(estimator, [0.0], [1.0])


@pytest.mark.parametrize("mode,layer", [("average", keras.layers.GlobalAveragePooling2D()),
                                        ("max", keras.layers.GlobalMaxPooling2D()),
                                        ("max", keras.layers.MaxPooling2D(2))])
def test_shared_channel_offsets(mode, layer):
    """Per-channel offsets b_c ~ N(0, s) survive pooling: var s + (v - s)/k, not v/k."""
    rng = np.random.default_rng(0)
    shared, varying, mean = 0.3, 0.7, 0.5
    x = (mean + rng.normal(0, math.sqrt(shared), (1, 1, 1, 4000))
         + rng.normal(0, math.sqrt(varying), (64, 4, 4, 4000))).astype("float32")
    y = np.asarray(layer(x), dtype=float)
    k = 16 if "Global" in type(layer).__name__ else 4
    pred_mean, pred_var = pooled_moments(mean, shared + varying, np.array([k]), np.array([1.0]), mode, shared)
    assert abs(y.mean() - pred_mean) < 0.03 and abs(math.log(y.var() / pred_var)) < 0.05
    independent = pooled_moments(mean, 1.0, np.array([k]), np.array([1.0]), mode)[1]
    assert abs(math.log(y.var() / independent)) > 0.2  # the test can tell the two apart
