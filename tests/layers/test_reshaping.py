"""Reshaping estimators against the real layers fed Gaussian noise."""
import math

import keras
import numpy as np
import pytest

from autoinit_sym.estimators.base import EstimationContext
from autoinit_sym.estimators.registry import lookup
from helpers import propagated

INPUTS = [(0.0, 1.0), (5.0, 0.01), (-3.0, 25.0)]


def measure(layer, shape, mean, var, context=None):
    x = np.random.default_rng(0).normal(mean, math.sqrt(var), shape).astype("float32")
    y = keras.ops.convert_to_numpy(layer(x, training=True)).astype(float)
    estimator = lookup(layer)(layer, context or EstimationContext(), [(None, *shape[1:])], [(None, *y.shape[1:])])
    return y, propagated(estimator, [mean], [var]), estimator


def assert_close(y, pred, tol=0.03):
    pred_mean, pred_var = pred
    assert abs(y.mean() - pred_mean) <= tol * math.sqrt(pred_var) + 1e-6, (y.mean(), pred_mean)
    assert abs(math.log(y.var() / pred_var)) <= tol, (y.var(), pred_var)


@pytest.mark.parametrize("mean,var", INPUTS)
@pytest.mark.parametrize("make,shape", [
    (lambda: keras.layers.Flatten(), (4000, 4, 4)),
    (lambda: keras.layers.Reshape((8, 2)), (4000, 4, 4)),
    (lambda: keras.layers.Permute((2, 1)), (4000, 4, 4)),
    (lambda: keras.layers.RepeatVector(3), (4000, 16)),
    (lambda: keras.layers.Cropping1D((1, 2)), (4000, 8, 4)),
    (lambda: keras.layers.Cropping2D(((1, 0), (2, 1))), (2000, 6, 6, 2)),
    (lambda: keras.layers.Cropping3D(1), (1000, 4, 4, 4, 1)),
    (lambda: keras.layers.UpSampling1D(2), (4000, 8, 2)),
    (lambda: keras.layers.UpSampling2D(2), (2000, 4, 4, 2)),
    (lambda: keras.layers.UpSampling3D(2), (1000, 2, 2, 2, 2)),
    (lambda: keras.layers.ZeroPadding1D((1, 3)), (4000, 6, 4)),
    (lambda: keras.layers.ZeroPadding2D(((1, 2), (0, 1))), (2000, 5, 5, 2)),
    (lambda: keras.layers.ZeroPadding3D(1), (1000, 3, 3, 3, 1)),
    (lambda: keras.layers.UpSampling2D((2, 3), interpolation="bilinear"), (4000, 5, 4, 2)),
    (lambda: keras.layers.UpSampling2D(3, interpolation="bicubic"), (2000, 4, 4, 2)),
    (lambda: keras.layers.UpSampling2D(2, interpolation="bilinear", data_format="channels_first"),
     (2000, 2, 4, 6)),
])
def test_layer_matches_noise(make, shape, mean, var):
    assert_close(*measure(make(), shape, mean, var)[:2])


def test_bilinear_shrinks_variance():
    """Interpolated outputs average neighbours: the variance drops well below the input's."""
    y, (mean, var), estimator = measure(keras.layers.UpSampling2D(2, interpolation="bilinear"),
                                        (4000, 6, 6, 1), 0.0, 1.0)
    assert estimator.method == "exact" and var < 0.8 and abs(math.log(y.var() / var)) < 0.02


def test_zero_padding_off_centre_variance():
    """Zeros among mean-5 values: the variance is dominated by the mixture, not by 0.01."""
    _, (mean, var), _ = measure(keras.layers.ZeroPadding1D(1), (10, 2, 1), 5.0, 0.01)
    assert mean == pytest.approx(2.5) and var == pytest.approx(0.005 + 6.25)


@pytest.mark.parametrize("mean,var", INPUTS)
def test_time_distributed_delegates(mean, var):
    layer = keras.layers.TimeDistributed(keras.layers.Dropout(0.3))
    y, pred, estimator = measure(layer, (4000, 3, 8), mean, var)
    assert_close(y, pred)
    assert estimator.method == "exact"


def test_time_distributed_pooling_shapes():
    layer = keras.layers.TimeDistributed(keras.layers.MaxPooling1D(3, strides=2, padding="same"))
    y, pred, estimator = measure(layer, (3000, 2, 5, 4), 1.0, 4.0)
    assert_close(y, pred)
    assert estimator.method == "quadrature"


@pytest.mark.parametrize("mean,var", INPUTS)
@pytest.mark.parametrize("make", [
    lambda: keras.layers.Resizing(7, 5, interpolation="bilinear"),
    lambda: keras.layers.Resizing(3, 9, interpolation="bicubic", antialias=True),
    lambda: keras.layers.Resizing(2, 2, interpolation="area"),
    lambda: keras.layers.Resizing(11, 6, interpolation="nearest"),
])
def test_resizing_matches_noise(make, mean, var):
    layer = make()
    if layer.interpolation == "area" and keras.backend.backend() != "tensorflow":
        pytest.skip("Keras resizes with interpolation='area' on TensorFlow only")
    y, pred, estimator = measure(layer, (2000, 4, 6, 2), mean, var)
    assert estimator.method == "exact"
    assert_close(y, pred)


def test_time_distributed_unknown_layer_is_probed(caplog):
    from helpers import Doubling, propagated

    inputs = keras.Input((3, 4))
    layer = keras.layers.TimeDistributed(Doubling(name="doubling"))
    layer(inputs)
    estimator = lookup(layer)(layer, EstimationContext(), [(None, 3, 4)], [(None, 3, 4)], layer._inbound_nodes[0])
    with caplog.at_level("WARNING", logger="autoinit_sym"):
        mean, var = propagated(estimator, [1.0], [2.0])
    assert "No LayerOutputDistributionEstimator found for layer doubling" in caplog.text
    assert estimator.method == "probe" and mean == pytest.approx(2.0, abs=0.2) and var == pytest.approx(8.0, rel=0.2)
