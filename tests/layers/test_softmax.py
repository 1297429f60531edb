"""Softmax / log-softmax statistics and the Softmax layer.

References are brute-force softmaxes of iid Gaussian logits; their standard error is
computed from per-row sums and added to the 1% tolerance.
"""
import math

import keras
import numpy as np
import pytest
from scipy.special import log_softmax, logsumexp, softmax

from autoinit_sym.statistics import softmax as softmax_module
from autoinit_sym.estimators.base import EXACT, MONTE_CARLO, QUADRATURE, EstimationContext
from autoinit_sym.estimators.activations import SoftmaxEstimator
from autoinit_sym.statistics.softmax import mean_sum_of_squares, softmax_statistics
from helpers import propagated


def brute_force(n: int, var: float, log: bool, rows: int, seed: int = 11):
    """(mean, var, standard error of var) over all elements of softmax(iid N(0, var) logits)."""
    z = np.random.default_rng(seed).normal(0.0, math.sqrt(var), (rows, n))
    s = log_softmax(z, axis=1) if log else softmax(z, axis=1)
    mean = s.mean()
    per_row = ((s - mean) ** 2).mean(axis=1)
    return mean, per_row.mean(), per_row.std() / math.sqrt(rows)


@pytest.mark.parametrize("n", [3, 10, 100])
@pytest.mark.parametrize("var", [0.01, 1.0, 9.0])
@pytest.mark.parametrize("log", [False, True])
def test_second_moment_within_one_percent(n, var, log):
    mean, variance, method = softmax_statistics(0.0, var, n, log=log)
    ref_mean, ref_var, ref_error = brute_force(n, var, log, rows=400_000 // n)
    assert method == MONTE_CARLO
    assert variance == pytest.approx(ref_var, rel=0.01 + 3 * ref_error / ref_var)
    if log:
        assert mean == pytest.approx(ref_mean, abs=3 * math.sqrt(ref_var / (400_000)) + 0.002 * abs(ref_mean))
    else:
        assert mean == 1.0 / n  # exact


def test_two_classes_by_quadrature():
    mean, variance, method = softmax_statistics(0.0, 2.0, 2)
    _, ref_var, ref_error = brute_force(2, 2.0, False, rows=400_000)
    assert method == QUADRATURE and mean == 0.5
    assert variance == pytest.approx(ref_var, abs=3 * ref_error + 1e-4)


def test_exact_cases_and_small_variance_expansion():
    assert softmax_statistics(0.0, 3.0, 1) == (1.0, 0.0, EXACT)
    assert softmax_statistics(0.0, 0.0, 7) == (1 / 7, 0.0, EXACT)
    assert softmax_statistics(0.0, 3.0, 1, log=True) == (0.0, 0.0, EXACT)
    # Continuity across the switch to the first-order expansion at var = 1e-4.
    below = softmax_statistics(0.0, 0.99e-4, 10)[1] / 0.99e-4
    above = softmax_statistics(0.0, 1.01e-4, 10)[1] / 1.01e-4
    assert below == pytest.approx(above, rel=0.01)


def test_shift_invariance_and_reproducibility():
    first = softmax_statistics(0.0, 1.5, 20)
    assert softmax_statistics(37.0, 1.5, 20) == first  # the logits' mean does not matter
    softmax_module._cached.cache_clear()
    assert softmax_statistics(0.0, 1.5, 20) == first


def test_mean_sum_of_squares_is_between_uniform_and_one_hot():
    for var in (0.0, 1.0, 100.0):
        value, _ = mean_sum_of_squares(var, 16)
        assert 1 / 16 - 1e-12 <= value <= 1.0
    assert mean_sum_of_squares(0.0, 16)[0] == pytest.approx(1 / 16)
    assert mean_sum_of_squares(400.0, 16)[0] > 0.8  # nearly one-hot


@pytest.mark.parametrize("args, message", [
    ((0.0, 1.0, 0), "positive int"), ((0.0, -1.0, 3), "variance"), ((math.nan, 1.0, 3), "mean"),
])
def test_bad_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        softmax_statistics(*args)


@pytest.mark.parametrize("axis, shape", [(-1, (6, 12)), (1, (6, 12)), ((1, 2), (5, 4))])
@pytest.mark.parametrize("mean, var", [(0.0, 1e-3), (0.0, 1.0), (4.0, 9.0)])
def test_softmax_layer_against_noise(axis, shape, mean, var):
    layer = keras.layers.Softmax(axis=axis)
    estimator = SoftmaxEstimator(layer, EstimationContext(), [(None,) + shape])
    pred_mean, pred_var = propagated(estimator, [mean], [var])
    x = np.random.default_rng(0).normal(mean, math.sqrt(var), (4000,) + shape).astype("float32")
    y = keras.ops.convert_to_numpy(layer(x)).astype(np.float64)
    axes = (axis,) if isinstance(axis, int) else axis
    n = int(np.prod([shape[a - 1] if a > 0 else shape[a] for a in axes]))
    assert pred_mean == pytest.approx(1.0 / n)  # the softmax axis only, not all non-batch dims
    assert y.mean() == pytest.approx(pred_mean, rel=1e-4)
    assert y.var() == pytest.approx(pred_var, rel=0.05)


def test_softmax_layer_needs_a_known_axis():
    estimator = SoftmaxEstimator(keras.layers.Softmax(), EstimationContext(), [(None, 4, None)])
    with pytest.raises(ValueError, match="known size"):
        propagated(estimator, [0.0], [1.0])


@pytest.mark.parametrize("var", [0.1, 1.0, 9.0])
@pytest.mark.parametrize("causal", [True, False])
def test_softmax_layer_with_a_mask_against_noise(var, causal):
    """A 0/1 mask input (keras_hub decoders pass a causal one) changes the weights' statistics:
    a causal mask lets query i see i + 1 keys, a padding mask that hides the last keys lets every
    query see the same fewer keys. Without the mask rule both read as n keys seen (the
    causal case at n = 12 differs by a factor above 2 in variance)."""
    n = 12
    mask = np.tril(np.ones((n, n))) if causal else np.repeat([[1.0] * 8 + [0.0] * 4], n, axis=0)
    fraction = mask.mean()
    layer = keras.layers.Softmax()
    estimator = SoftmaxEstimator(layer, EstimationContext(), [(None, n, n), (None, n, n)])
    pred_mean, pred_var = propagated(estimator, [0.0, fraction], [var, fraction * (1.0 - fraction)])
    x = np.random.default_rng(1).normal(0.0, math.sqrt(var), (3000, n, n)).astype("float32")
    y = keras.ops.convert_to_numpy(layer(x, mask=np.broadcast_to(mask, x.shape) > 0)).astype(np.float64)
    assert y.mean() == pytest.approx(pred_mean, rel=1e-3)
    assert y.var() == pytest.approx(pred_var, rel=0.05)
    _, unmasked_var = propagated(SoftmaxEstimator(layer, EstimationContext(), [(None, n, n)]), [0.0], [var])
    assert abs(math.log(unmasked_var / y.var())) > 0.1  # the check can fail without the mask rule


@pytest.mark.parametrize("scale", [0.05, 1.0, 400.0])
def test_row_log_sum_exp_matches_scipy_without_overflow(scale):
    """The in-place log-sum-exp of the sampled logits equals scipy's, also where
    exp(scale * z) alone overflows float64 (scale 400)."""
    z = np.random.default_rng(3).standard_normal((64, 999))
    expected = logsumexp(scale * z, axis=1)
    got = softmax_module._row_log_sum_exp(z.copy(), scale)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-13)
