"""Pooling estimators: window bookkeeping exactly, and the real layers fed Gaussian noise."""
import functools
import math

import keras
import numpy as np
import pytest

from autoinit_sym.estimators.base import EstimationContext
from autoinit_sym.estimators.pooling import (adaptive_window_sizes, averaging_matrix, pooled_counts, pooled_moments,
                                             replicates_border, window_sizes)
from autoinit_sym.estimators.registry import lookup
from helpers import propagated

INPUTS = [(0.0, 1.0), (5.0, 0.01), (-3.0, 25.0)]


def one_hot_weights(layer, spatial):
    """W[o, i]: the weight the real layer gives input position i in output o, read by pooling the
    one-hot inputs e_i (one channel, channels_last); positions flattened in row-major order."""
    size = int(np.prod(spatial))
    out = keras.ops.convert_to_numpy(layer(np.eye(size, dtype="float32").reshape(size, *spatial, 1)))
    return out.reshape(size, -1).T.astype(np.float64)


WINDOWED = [  # (pool, strides, spatial, padding): even and uneven 'same' padding, 1D to 3D
    (3, 2, (5,), "same"), (2, 2, (7,), "same"), (3, 1, (8,), "same"), (4, 3, (6,), "same"), (4, 1, (6,), "same"),
    (3, 1, (1,), "same"), (3, 2, (9,), "valid"), ((3, 4), (1, 3), (6, 6), "same"), ((3, 3), (2, 2), (5, 5), "same"),
    ((2, 3), (1, 1), (5, 5), "valid"), ((3, 3, 2), (1, 2, 2), (5, 5, 5), "same"), (2, 2, (3, 3, 3), "same"),
]


@pytest.mark.parametrize("pool,strides,spatial,padding", WINDOWED)
def test_averaging_matrices_match_the_backend(pool, strides, spatial, padding):
    """The per-axis weights the rule derives for the current backend (torch pads an uneven 'same'
    window with copies of the border elements, on every axis; TensorFlow and JAX average the real
    elements only) multiply out to the weights the real AveragePooling layer applies, and a max
    pools exactly the elements with nonzero weight (window_sizes)."""
    rank = len(spatial)
    pool, strides = ((p,) * rank if isinstance(p, int) else p for p in (pool, strides))
    layer = getattr(keras.layers, f"AveragePooling{rank}D")(pool, strides=strides, padding=padding)
    replicate = replicates_border(spatial, pool, strides, padding)
    assert replicate == (keras.backend.backend() == "torch" and padding == "same" and any(
        ((-(-n // s) - 1) * s + p - n) % 2 for n, p, s in zip(spatial, pool, strides)))
    axes = [averaging_matrix(n, p, s, padding, replicate) for n, p, s in zip(spatial, pool, strides)]
    np.testing.assert_allclose(one_hot_weights(layer, spatial), functools.reduce(np.kron, axes), atol=1e-6)
    real = [averaging_matrix(n, p, s, padding) for n, p, s in zip(spatial, pool, strides)]
    for matrix, n, p, s in zip(real, spatial, pool, strides):
        assert list(np.count_nonzero(matrix, axis=1)) == list(window_sizes(n, p, s, padding))


def test_window_sizes_and_counts():
    for n, size in [(5, 3), (7, 2), (4, 4)]:
        out = one_hot_weights(keras.layers.AdaptiveAveragePooling1D(size), (n,))
        assert list(adaptive_window_sizes(n, size)) == list(np.count_nonzero(out, axis=1))
    assert list(window_sizes(5, 3, 2, "same")) == [2, 3, 2]
    assert list(window_sizes(4, 3, 1, "same")) == [2, 3, 3, 2]
    assert list(window_sizes(7, 3, 2, "valid")) == [3, 3, 3]
    assert list(adaptive_window_sizes(5, 3)) == [2, 3, 2]
    np.testing.assert_allclose(averaging_matrix(6, 4, 3, "same", replicate=True),
                               [[0.25, 0.25, 0.25, 0.25, 0, 0], [0, 0, 0, 0.25, 0.25, 0.5]])
    ks, weights = pooled_counts([np.array([2, 3]), np.array([2, 3, 2])])
    assert list(ks) == [4, 6, 9] and list(weights) == pytest.approx([2 / 6, 3 / 6, 1 / 6])


def measure(layer, shape, mean, var, seed=0):
    x = np.random.default_rng(seed).normal(mean, math.sqrt(var), shape).astype("float32")
    y = keras.ops.convert_to_numpy(layer(x)).astype(float)
    estimator = lookup(layer)(layer, EstimationContext(), [(None, *shape[1:])], [(None, *y.shape[1:])])
    return y, propagated(estimator, [mean], [var]), estimator


POOLS = [
    (lambda: keras.layers.MaxPooling1D(3, strides=2, padding="same"), (3000, 9, 8)),
    (lambda: keras.layers.AveragePooling1D(3, strides=2, padding="same"), (3000, 9, 8)),
    (lambda: keras.layers.AveragePooling1D(4, strides=3, padding="same"), (4000, 6, 8)),  # uneven padding
    (lambda: keras.layers.AveragePooling2D((3, 4), strides=(1, 3), padding="same"), (1000, 6, 6, 8)),
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
    y = keras.ops.convert_to_numpy(layer(x)).astype(float)
    k = 16 if "Global" in type(layer).__name__ else 4
    pred_mean, pred_var = pooled_moments(mean, shared + varying, np.array([k]), np.array([1.0]), mode, shared)
    assert abs(y.mean() - pred_mean) < 0.03 and abs(math.log(y.var() / pred_var)) < 0.05
    independent = pooled_moments(mean, 1.0, np.array([k]), np.array([1.0]), mode)[1]
    assert abs(math.log(y.var() / independent)) > 0.2  # the test can tell the two apart
