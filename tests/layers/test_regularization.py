"""Regularization estimators against the real layers in training mode."""
import math

import keras
import numpy as np
import pytest

from autoinit_sym.estimators.base import EstimationContext
from autoinit_sym.estimators.registry import lookup
from helpers import propagated

INPUTS = [(0.0, 1.0), (5.0, 0.01), (-3.0, 25.0), (0.5, 2.0)]


@pytest.mark.parametrize("mean,var", INPUTS)
@pytest.mark.parametrize("make,shape", [
    (lambda: keras.layers.Dropout(0.3, seed=1), (20000, 16)),
    (lambda: keras.layers.Dropout(0.7, seed=1), (20000, 16)),
    (lambda: keras.layers.SpatialDropout1D(0.4, seed=1), (4000, 8, 64)),
    (lambda: keras.layers.SpatialDropout2D(0.4, seed=1), (2000, 4, 4, 64)),
    (lambda: keras.layers.SpatialDropout3D(0.4, seed=1), (1000, 2, 2, 2, 64)),
    (lambda: keras.layers.GaussianDropout(0.3, seed=1), (20000, 16)),
    (lambda: keras.layers.GaussianNoise(0.7, seed=1), (20000, 16)),
    (lambda: keras.layers.AlphaDropout(0.2, seed=1), (20000, 16)),
    (lambda: keras.layers.ActivityRegularization(l1=0.1), (20000, 16)),
])
def test_layer_matches_noise(make, shape, mean, var):
    layer = make()
    x = np.random.default_rng(0).normal(mean, math.sqrt(var), shape).astype("float32")
    y = keras.ops.convert_to_numpy(layer(x, training=True)).astype(float)
    pred_mean, pred_var = propagated(lookup(layer)(layer, EstimationContext()), [mean], [var])
    # the spatial masks make the samples correlated in groups: a looser mean bound
    assert abs(y.mean() - pred_mean) <= 0.03 * math.sqrt(pred_var) + 1e-6, (y.mean(), pred_mean)
    assert abs(math.log(y.var() / pred_var)) <= 0.04, (y.var(), pred_var)


def test_dropout_off_centre_is_not_the_reference_formula():
    """mean 5, var 0.01, rate 0.5: the variance is dominated by the dropped mean (~25), not 0.02."""
    layer = keras.layers.Dropout(0.5)
    _, var = propagated(lookup(layer)(layer, EstimationContext()), [5.0], [0.01])
    assert var == pytest.approx(25.02)
