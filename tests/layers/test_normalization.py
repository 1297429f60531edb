"""Normalization estimators against the real Keras layers fed Gaussian noise (training mode)."""
import math

import keras
import numpy as np
import pytest

from autoinit_sym.estimators.base import EstimationContext
from autoinit_sym.estimators.normalization import (
    BatchNormalizationEstimator, GroupNormalizationEstimator, LayerNormalizationEstimator,
    NormalizationEstimator, RMSNormalizationEstimator, RescalingEstimator, UnitNormalizationEstimator)
from autoinit_sym.statistics.linear import affine_moments, direction_moments, standardized_second_moment
from helpers import propagated

# narrow, wide, far-off-centre and tiny-variance (epsilon matters) inputs
INPUTS = [(0.0, 1.0), (5.0, 0.01), (-3.0, 25.0), (0.0, 1e-3)]
GAMMA = keras.initializers.RandomUniform(0.5, 2.0, seed=1)
BETA = keras.initializers.RandomNormal(0.3, 1.0, seed=2)


def check(layer, estimator_cls, shape, mean, var, tol=0.03):
    x = np.random.default_rng(0).normal(mean, math.sqrt(var), shape).astype("float32")
    y = keras.ops.convert_to_numpy(layer(x, training=True)).astype(float)
    estimator = estimator_cls(layer, EstimationContext(), [(None, *shape[1:])], [(None, *y.shape[1:])])
    pred_mean, pred_var = propagated(estimator, [mean], [var])
    assert abs(y.mean() - pred_mean) <= tol * math.sqrt(pred_var) + 1e-6, (y.mean(), pred_mean)
    assert abs(math.log(y.var() / pred_var)) <= tol, (y.var(), pred_var)
    return estimator


@pytest.mark.parametrize("mean,var", INPUTS)
@pytest.mark.parametrize("make,estimator_cls,shape", [
    (lambda: keras.layers.BatchNormalization(gamma_initializer=GAMMA, beta_initializer=BETA),
     BatchNormalizationEstimator, (64, 6, 6, 16)),
    (lambda: keras.layers.BatchNormalization(center=False, scale=False), BatchNormalizationEstimator, (4096, 8)),
    (lambda: keras.layers.LayerNormalization(gamma_initializer=GAMMA, beta_initializer=BETA),
     LayerNormalizationEstimator, (8192, 8)),
    (lambda: keras.layers.LayerNormalization(axis=[1, 2]), LayerNormalizationEstimator, (2048, 3, 4)),
    (lambda: keras.layers.GroupNormalization(groups=2, gamma_initializer=GAMMA),
     GroupNormalizationEstimator, (512, 4, 4, 8)),
    (lambda: keras.layers.GroupNormalization(groups=4, center=False), GroupNormalizationEstimator, (4096, 8)),
    (lambda: keras.layers.UnitNormalization(), UnitNormalizationEstimator, (8192, 8)),
    (lambda: keras.layers.RMSNormalization(), RMSNormalizationEstimator, (8192, 8)),
    (lambda: keras.layers.Normalization(mean=[1.0, 2.0, 3.0], variance=[1.0, 4.0, 9.0]),
     NormalizationEstimator, (40000, 3)),
    (lambda: keras.layers.Normalization(mean=[1.0, 2.0, 3.0], variance=[1.0, 4.0, 9.0], invert=True),
     NormalizationEstimator, (40000, 3)),
    (lambda: keras.layers.Rescaling(scale=np.array([1.0, 2.0, -3.0]), offset=np.array([0.0, 1.0, 2.0])),
     RescalingEstimator, (40000, 3)),
    (lambda: keras.layers.Rescaling(1 / 255.0, offset=-1.0), RescalingEstimator, (40000, 3)),
])
def test_layer_matches_noise(make, estimator_cls, shape, mean, var):
    check(make(), estimator_cls, shape, mean, var)


def test_group_norm_epsilon_matters_for_small_groups():
    """Tiny groups and var ~ eps: the chi-square expectation, not var/(var+eps), is right."""
    estimator = check(keras.layers.GroupNormalization(groups=8, epsilon=1e-2), GroupNormalizationEstimator,
                      (200000, 16), 0.0, 0.01, tol=0.02)
    assert estimator.method == "quadrature"
    naive = 0.01 / (0.01 + 1e-2)
    assert abs(propagated(estimator, [0.0], [0.01])[1] - naive) > 0.1


def test_standardized_second_moment_limits():
    assert standardized_second_moment(None, 1.0, 1.0) == (0.5, "closed_form")
    assert standardized_second_moment(10, 1.0, 0.0) == (1.0, "exact")
    big, method = standardized_second_moment(10 ** 6, 2.0, 1e-3)
    assert method == "quadrature" and big == pytest.approx(2.0 * (1 - 1e-6) / (2.0 * (1 - 1e-6) + 1e-3), rel=1e-6)


def test_direction_moments_limits():
    # one element: u = sign(x), E[u] = erf(mean / (sd sqrt 2))
    assert direction_moments(0.7, 2.0, 1)[0] == pytest.approx(math.erf(0.7 / 2.0), rel=1e-12)
    assert direction_moments(0.0, 1.0, 5) == (0.0, 0.0)
    first, cross = direction_moments(1e3, 1e-6, 4)  # nearly constant vector: u = 1/2 everywhere
    assert first == pytest.approx(0.5, rel=1e-9) and cross == pytest.approx(0.25, rel=1e-9)


def test_affine_moments_mixture():
    assert affine_moments([1.0, 3.0], [0.0, 2.0], 1.0, 1.0) == pytest.approx((3.0, 5.0 + 4.0))
