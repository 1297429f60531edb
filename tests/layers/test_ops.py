"""keras.ops nodes in functional graphs: estimators against the real graph fed Gaussian noise."""
import logging
import math

import keras
import numpy as np
import pytest
from keras import ops

from autoinit_sym.estimators.base import EstimationContext
from autoinit_sym.estimators.registry import lookup
from helpers import propagated

INPUTS = [(0.0, 1.0), (5.0, 0.01), (-3.0, 25.0)]
W = np.random.default_rng(3).normal(0.2, 1.0, (8, 5)).astype("float32")
ROW = np.linspace(-1.0, 2.0, 8).astype("float32")


def run(fn, stats, shapes=None, samples=20000):
    """fn(*inputs) -> output of one op; returns the noise measurement and the op's estimate."""
    shapes = shapes or [(8,)] * len(stats)
    inputs = [keras.Input(shape) for shape in shapes]
    out = fn(*inputs)
    model = keras.Model(inputs, out)
    op = [o for o in model.operations if not isinstance(o, keras.layers.InputLayer)][-1]
    node = op._inbound_nodes[0]
    rng = np.random.default_rng(0)
    data = [rng.normal(m, math.sqrt(v), (samples, *shape)).astype("float32") for (m, v), shape in zip(stats, shapes)]
    y = np.asarray(model(data), dtype=float)
    estimator = lookup(op)(op, EstimationContext(), [tuple(t.shape) for t in node.input_tensors],
                           [tuple(out.shape)], node)
    # one (mean, var) per tensor argument of the node, as the graph walk passes them
    by_input = {id(t): s for t, s in zip(inputs, stats)}
    args = [by_input.get(id(t), stats[0]) for t in node.input_tensors]
    return y, propagated(estimator, [m for m, _ in args], [v for _, v in args]), estimator


def assert_close(y, pred, tol=0.03):
    pred_mean, pred_var = pred
    assert abs(y.mean() - pred_mean) <= tol * math.sqrt(pred_var) + 1e-6, (y.mean(), pred_mean)
    assert abs(math.log(y.var() / pred_var)) <= tol, (y.var(), pred_var)


UNARY = {
    "multiply_const": lambda x: ops.multiply(x, 2.0),
    "const_multiply_row": lambda x: ops.multiply(ROW, x),
    "add_const": lambda x: ops.add(3.0, x),
    "subtract_from_const": lambda x: ops.subtract(1.0, x),
    "subtract_row": lambda x: ops.subtract(x, ROW),
    "divide_const": lambda x: ops.divide(x, 4.0),
    "true_divide_row": lambda x: ops.true_divide(x, ROW + 2.0),
    "negative": lambda x: ops.negative(x),
    "square": lambda x: ops.square(x),
    "abs": lambda x: ops.abs(x),
    "x_times_x": lambda x: ops.multiply(x, x),
    "x_plus_x": lambda x: ops.add(x, x),
    "max_const": lambda x: ops.maximum(x, 0.5),
    "min_row": lambda x: ops.minimum(ROW, x),
    "clip": lambda x: ops.clip(x, -1.0, 2.0),
    "matmul_const": lambda x: ops.matmul(x, W),
    "mean": lambda x: ops.mean(x, axis=-1),
    "sum_keepdims": lambda x: ops.sum(x, axis=1, keepdims=True),
    "reshape": lambda x: ops.reshape(x, (-1, 4, 2)),
    "transpose": lambda x: ops.transpose(ops.reshape(x, (-1, 4, 2)), (0, 2, 1)),
    "relu": lambda x: ops.relu(x),
    "gelu": lambda x: ops.gelu(x, approximate=True),
    "leaky_relu": lambda x: ops.leaky_relu(x, negative_slope=0.1),
    "silu": lambda x: ops.silu(x),
    "tanh": lambda x: ops.tanh(x),
    "sigmoid": lambda x: ops.sigmoid(x),
    "elu": lambda x: ops.elu(x, alpha=0.5),
}


@pytest.mark.parametrize("mean,var", INPUTS)
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_op_matches_noise(name, mean, var):
    y, pred, estimator = run(UNARY[name], [(mean, var)])
    assert estimator.method in ("exact", "closed_form", "quadrature")
    if pred[1] < 1e-12:  # e.g. clip(x, -1, 2) of x ~ N(5, 0.01): always 2
        assert y.var() < 1e-9 and y.mean() == pytest.approx(pred[0], abs=1e-6)
    else:
        assert_close(y, pred)


BINARY = {
    "add": ops.add, "subtract": ops.subtract, "multiply": ops.multiply, "maximum": ops.maximum,
    "minimum": ops.minimum,
    "concatenate": lambda a, b: ops.concatenate([a, b], axis=-1), "stack": lambda a, b: ops.stack([a, b], axis=1),
}


@pytest.mark.parametrize("stats", [[(0.0, 1.0), (0.0, 1.0)], [(5.0, 0.01), (-3.0, 25.0)], [(1.0, 0.5), (0.8, 2.0)]])
@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_op_matches_noise(name, stats):
    y, pred, _ = run(BINARY[name], stats)
    assert_close(y, pred)


@pytest.mark.parametrize("stats", [[(0.0, 1.0), (0.0, 1.0)], [(5.0, 0.01), (-3.0, 25.0)]])
def test_matmul_of_two_tensors(stats):
    assert_close(*run(ops.matmul, stats, shapes=[(3, 8), (8, 2)])[:2])


def test_tensor_divisor_is_probed(caplog):
    with caplog.at_level(logging.WARNING, logger="autoinit_sym"):
        y, pred, estimator = run(lambda x: ops.divide(2.0, x), [(5.0, 0.01)])
    assert estimator.method == "probe" and "probing" in caplog.text
    assert abs(pred[0] - y.mean()) < 0.01


def test_multiply_by_constant_between_layers_is_exact():
    """Issue 3: ``x = keras.ops.multiply(x, 2.0)`` between layers gets the exact statistics."""
    from autoinit_sym import AutoInit

    inputs = keras.Input((16,))
    x = keras.layers.Dense(16, activation="relu")(inputs)
    x = ops.multiply(x, 2.0)
    outputs = keras.layers.Dense(4)(x)
    model, estimates = AutoInit().initialize_model(keras.Model(inputs, outputs), return_estimates=True)
    (mean_in, var_in), (mean_out, var_out) = [estimates[k] for k in estimates if k.startswith(("dense", "multiply"))][:2]
    assert mean_out == pytest.approx(2 * mean_in, rel=1e-12) and var_out == pytest.approx(4 * var_in, rel=1e-12)
