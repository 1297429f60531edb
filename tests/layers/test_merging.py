"""Merge-layer estimators against the real layers fed independent Gaussian noise."""
import math

import keras
import numpy as np
import pytest

from autoinit_sym.estimators.base import EstimationContext
from autoinit_sym.estimators.registry import lookup
from helpers import propagated

# (mean, var) per input: narrow, wide, far-off-centre, mixed
STATS = [[(0.0, 1.0), (0.0, 1.0)], [(5.0, 0.01), (-3.0, 25.0)], [(1.0, 0.5), (1.2, 0.3), (-0.5, 2.0)],
         [(-3.0, 25.0), (-3.0, 25.0)]]


def run(layer, stats, widths=None, samples=40000, same_input=False):
    """Measure layer(inputs) on Gaussian noise; predict it through the registered estimator."""
    widths = widths or [16] * len(stats)
    inputs = [keras.Input((w,)) for w in widths[:1 if same_input else None]]
    out = layer(inputs * len(stats) if same_input else inputs)
    model = keras.Model(inputs, out)
    rng = np.random.default_rng(0)
    data = [rng.normal(m, math.sqrt(v), (samples, w)).astype("float32")
            for (m, v), w in zip(stats[:len(inputs)], widths)]
    y = keras.ops.convert_to_numpy(model(data, training=True)).astype(float)
    node = layer._inbound_nodes[0]
    estimator = lookup(layer)(layer, EstimationContext(), [tuple(t.shape) for t in node.input_tensors],
                              [tuple(out.shape)], node)
    return y, propagated(estimator, [m for m, _ in stats], [v for _, v in stats]), estimator


def assert_close(y, pred, tol=0.03):
    pred_mean, pred_var = pred
    assert abs(y.mean() - pred_mean) <= tol * math.sqrt(pred_var) + 1e-6, (y.mean(), pred_mean)
    assert abs(math.log(y.var() / pred_var)) <= tol, (y.var(), pred_var)


@pytest.mark.parametrize("stats", STATS)
@pytest.mark.parametrize("make", [keras.layers.Add, keras.layers.Average, keras.layers.Multiply,
                                  keras.layers.Maximum, keras.layers.Minimum, keras.layers.Concatenate])
def test_merge_matches_noise(make, stats):
    y, pred, estimator = run(make(), stats)
    assert_close(y, pred, tol=0.05 if estimator.method == "closed_form" and len(stats) > 2 else 0.03)


@pytest.mark.parametrize("stats", [s for s in STATS if len(s) == 2])
def test_subtract(stats):
    assert_close(*run(keras.layers.Subtract(), stats)[:2])


def test_concatenate_weights_by_size():
    y, pred, _ = run(keras.layers.Concatenate(), [(5.0, 0.01), (-3.0, 25.0)], widths=[4, 28])
    assert_close(y, pred)
    assert pred[0] == pytest.approx((4 * 5.0 - 28 * 3.0) / 32)


@pytest.mark.parametrize("make", [keras.layers.Add, keras.layers.Subtract, keras.layers.Multiply,
                                  keras.layers.Maximum])
def test_same_tensor_twice_is_correlated(make):
    y, pred, _ = run(make(), [(1.5, 2.0), (1.5, 2.0)], same_input=True)
    if make is keras.layers.Subtract:
        assert pred == (0.0, 0.0) and not y.any()
    else:
        assert_close(y, pred)


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("stats", [[(0.0, 1.0), (0.0, 1.0)], [(5.0, 0.01), (-3.0, 25.0)],
                                   [(0.5, 1.0), (1.0, 0.2)]])
def test_dot(normalize, stats):
    y, pred, _ = run(keras.layers.Dot(axes=1, normalize=normalize), stats, widths=[8, 8])
    assert_close(y, pred, tol=0.04)
