"""Calibration on the actual draw (walk/calibration.py) and sample data (walk/data.py).

Calibration rescales each weighted layer so its pre-activation variance on the calibration
batch equals the target; on a fresh batch of the same distribution and size the variance
stays near it. Deep unnormalized MLPs (30 layers, width 128) drift far from 1 on one draw
without it (SiLU ends near 150, GELU near 3, ReLU near 0.3).
"""
from __future__ import annotations

import keras
import numpy as np
import pytest

from autoinit_sym import AutoInit
from autoinit_sym.walk.calibration import calibrate, calibrated_kernel, flagged
from autoinit_sym.walk.data import data_statistics, read_batches
from autoinit_sym.walk.graph import build_graph

WIDTH, DEPTH, ROWS = 128, 30, 1024


def mlp(activation: str) -> keras.Model:
    inputs = keras.Input((WIDTH,))
    x = inputs
    for i in range(DEPTH):
        x = keras.layers.Dense(WIDTH, activation=activation, name=f"d{i}")(x)
    return keras.Model(inputs, x)


def pre_activation_variances(model: keras.Model, batch: np.ndarray) -> dict[str, float]:
    """Per Dense layer, the variance of W x + b on ``batch`` (activation off)."""
    out, x = {}, batch
    for layer in model.layers[1:]:
        activation, layer.activation = layer.activation, keras.activations.linear
        out[layer.name] = float(np.var(keras.ops.convert_to_numpy(layer(x)).astype(np.float64)))
        layer.activation = activation
        x = layer(x)
    return out


@pytest.mark.parametrize("activation", ["gelu", "silu", "relu"])
def test_deep_mlp_calibrated_on_its_batch_and_fresh_batches(activation):
    model = mlp(activation)
    AutoInit(weight_init_config={"seed": 3}).initialize_model(model)
    rng = np.random.default_rng(0)
    batch = rng.normal(0.0, 1.0, (ROWS, WIDTH)).astype("float32")
    drift = pre_activation_variances(model, batch)[f"d{DEPTH - 1}"]
    factors = calibrate(build_graph(model), [batch], 1.0)
    assert len(factors) == DEPTH
    on_batch = pre_activation_variances(model, batch)
    assert all(abs(v - 1.0) <= 0.02 for v in on_batch.values()), on_batch
    fresh = pre_activation_variances(model, rng.normal(0.0, 1.0, (ROWS, WIDTH)).astype("float32"))
    assert all(0.8 <= v <= 1.25 for v in fresh.values()), fresh
    if activation == "silu":  # the uncalibrated draw had drifted far
        assert drift > 10.0


def test_calibration_restores_every_kernel_when_interrupted(monkeypatch):
    from autoinit_sym.walk import calibration

    model = mlp("tanh")
    AutoInit(weight_init_config={"seed": 1}).initialize_model(model)
    before = [keras.ops.convert_to_numpy(layer.kernel) for layer in model.layers[1:]]
    calls = {"n": 0}
    real = calibration.invoke

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 9:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(calibration, "invoke", interrupted)
    batch = np.random.default_rng(0).normal(0.0, 3.0, (64, WIDTH)).astype("float32")
    with pytest.raises(KeyboardInterrupt):
        calibrate(build_graph(model), [batch], 1.0)
    for layer, kernel in zip(model.layers[1:], before):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.kernel), kernel)


def test_only_plain_weighted_layers_are_calibrated_and_far_factors_flagged():
    assert calibrated_kernel(keras.layers.LSTM(4)) is None
    assert calibrated_kernel(keras.layers.Dropout(0.1)) is None
    assert flagged({"a": 1.2, "b": 2.0, "c": 0.5}) == {"b": 2.0, "c": 0.5}


def test_data_forms_and_statistics():
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, (300, 4))
    for data in (x, (x, np.zeros(300)), [(x[:100], None), (x[100:], None)], iter([x[:150], x[150:]])):
        batches = read_batches(data, ["in"])
        means, variances = data_statistics(batches)
        assert means[0] == pytest.approx(x.mean()) and variances[0] == pytest.approx(x.var())
    two = read_batches({"b": x, "a": x * 2}, ["a", "b"])
    assert np.array_equal(two[0][0], x * 2)
    assert read_batches([x, x * 2], ["a", "b"])[0][1][0, 0] == x[0, 0] * 2
    assert sum(b[0].shape[0] for b in read_batches([x] * 30, ["in"], max_rows=500)) == 500


@pytest.mark.parametrize("data,names,message", [
    (np.zeros((5, 2)), ["a", "b"], "2 inputs"),
    ({"a": np.zeros(3)}, ["a", "b"], "lacks"),
    ("text", ["a"], "cannot read|must be"),
    (np.full((4, 2), np.nan), ["a"], "non-finite"),
    (np.ones((4, 2)), ["a"], "constant"),
    ([], ["a"], "no batch"),
])
def test_bad_data_is_refused_clearly(data, names, message):
    with pytest.raises((ValueError, TypeError), match=message):
        data_statistics(read_batches(data, names))
