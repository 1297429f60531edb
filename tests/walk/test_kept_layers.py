"""Pretrained parts kept, real data, and calibration through ``AutoInit.initialize_model``
(issue 16): ``layers=``, ``data=``, ``calibrate=``."""
from __future__ import annotations

import logging

import keras
import numpy as np
import pytest

from autoinit_sym import AutoInit


def numpy_weights(layers) -> list[np.ndarray]:
    return [keras.ops.convert_to_numpy(v).copy() for layer in layers for v in layer.weights]


@pytest.fixture(scope="module")
def frozen_backbone():
    """MobileNetV2 (32x32, no top) with non-AutoInit weights (Keras's default kernels and
    batch-normalization statistics collected on the data, so that, like a trained backbone,
    it maps different images to different features), frozen, under a new Dense head; the
    data are blocky random images."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(1)
    data = np.kron(rng.uniform(0, 1, (256, 4, 4, 3)), np.ones((1, 8, 8, 1)))
    data = (data + rng.normal(0, 0.05, data.shape)).astype("float32")
    base = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), include_top=False,
                                          pooling="avg")
    norms = [layer for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in norms:
        layer.momentum = 0.0
    base(data, training=True)
    for layer in norms:
        layer.momentum = 0.99
    base.trainable = False
    features = keras.ops.convert_to_numpy(base(data, training=False))
    assert features.var(axis=0).mean() > 0.1 * features.var()  # the features differ between images
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, keras.layers.Dense(128, name="head")(base(inputs)))
    return model, base, data


def test_frozen_backbone_is_kept_and_the_head_is_scaled_for_it(frozen_backbone):
    model, base, data = frozen_backbone
    before = numpy_weights([base])
    variances = []
    for seed in range(4):
        _, estimates = AutoInit(weight_init_config={"seed": seed}).initialize_model(
            model, return_estimates=True, data=data)
        variances.append(float(np.var(keras.ops.convert_to_numpy(model(data, training=False)))))
    assert all(np.array_equal(a, b) for a, b in zip(before, numpy_weights([base])))
    assert 0.8 <= np.mean(variances) <= 1.25, variances
    assert estimates["head"].role == "initialized"
    assert estimates["Conv1"].role == "kept" and estimates["Conv1"].method == "measured"
    assert estimates["out_relu"].method == "measured" and estimates["out_relu"].role == ""
    assert estimates["head"].means_in[0] == pytest.approx(
        float(np.mean(keras.ops.convert_to_numpy(base(data, training=False)))), rel=1e-3)


def test_frozen_backbone_with_calibration_hits_the_target_on_the_data(frozen_backbone):
    model, base, data = frozen_backbone
    before = numpy_weights([base])
    _, estimates = AutoInit(weight_init_config={"seed": 5}).initialize_model(
        model, return_estimates=True, data=data, calibrate=True)
    assert float(np.var(keras.ops.convert_to_numpy(model(data, training=False)))) == pytest.approx(1.0, rel=0.02)
    assert estimates["head"].calibration is not None and estimates["Conv1"].calibration is None
    assert estimates["head"].var == pytest.approx(1.0)  # the analytic prediction is kept
    assert all(np.array_equal(a, b) for a, b in zip(before, numpy_weights([base])))


def stack(depth: int = 6) -> keras.Model:
    keras.utils.set_random_seed(2)
    inputs = keras.Input((16,))
    x = inputs
    for i in range(depth):
        x = keras.layers.Dense(16, activation="tanh", name=f"block{i}")(x)
    return keras.Model(inputs, x)


@pytest.mark.parametrize("select", [["block4", "block5"], "objects", "predicate"])
def test_reinitialize_the_top_blocks_only(select):
    model = stack()
    top = [model.get_layer("block4"), model.get_layer("block5")]
    if select == "objects":
        select = top
    elif select == "predicate":
        select = lambda layer: layer.name in ("block4", "block5")  # noqa: E731
    bottom = [model.get_layer(f"block{i}") for i in range(4)]
    kept = numpy_weights(bottom)
    redrawn = [keras.ops.convert_to_numpy(layer.kernel).copy() for layer in top]
    _, estimates = AutoInit(weight_init_config={"seed": 0}).initialize_model(model, return_estimates=True,
                                                                              layers=select)
    assert all(np.array_equal(a, b) for a, b in zip(kept, numpy_weights(bottom)))
    assert not any(np.array_equal(a, keras.ops.convert_to_numpy(layer.kernel)) for a, layer in zip(redrawn, top))
    assert [estimates[f"block{i}"].role for i in range(6)] == ["kept"] * 4 + ["initialized"] * 2


def test_trainable_false_is_kept_by_default_and_all_overrides():
    model = stack()
    model.get_layer("block0").trainable = False
    kept = numpy_weights([model.get_layer("block0")])
    AutoInit(weight_init_config={"seed": 0}).initialize_model(model)
    assert all(np.array_equal(a, b) for a, b in zip(kept, numpy_weights([model.get_layer("block0")])))
    AutoInit(weight_init_config={"seed": 0}).initialize_model(model, layers="all")
    assert not all(np.array_equal(a, b) for a, b in zip(kept, numpy_weights([model.get_layer("block0")])))


@pytest.mark.parametrize("layers,error,message", [
    (["nope"], ValueError, "does not have"),
    ([3], TypeError, "layer names"),
    ([keras.layers.Dense(2)], ValueError, "not part of the model"),
])
def test_bad_layer_selection_leaves_the_model_untouched(layers, error, message):
    model = stack()
    before = numpy_weights(model.layers)
    with pytest.raises(error, match=message):
        AutoInit().initialize_model(model, layers=layers)
    assert all(np.array_equal(a, b) for a, b in zip(before, numpy_weights(model.layers)))


def test_data_sets_the_input_statistics():
    model = stack()
    data = np.random.default_rng(0).normal(3.0, 0.5, (200, 16))
    _, estimates = AutoInit().initialize_model(model, return_estimates=True, data=[(data[:100], None),
                                                                                 (data[100:], None)])
    assert estimates["block0"].means_in[0] == pytest.approx(data.mean())
    assert estimates["block0"].vars_in[0] == pytest.approx(data.var())


def test_calibration_factors_are_recorded_and_far_ones_warned(caplog):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((64,))
    x = inputs
    for i in range(30):
        x = keras.layers.Dense(64, activation="silu", name=f"d{i}")(x)
    model = keras.Model(inputs, x)
    with caplog.at_level(logging.WARNING, logger="autoinit_sym"):
        _, estimates = AutoInit(weight_init_config={"seed": 1}).initialize_model(
            model, return_estimates=True, calibrate=True)
    assert all(estimates[f"d{i}"].calibration is not None for i in range(30))
    factors = [estimates[f"d{i}"].calibration for i in range(30)]
    assert all(np.isfinite(factors)) and max(abs(np.log(factors))) > 0.0
    if max(factors) > 1.5 or min(factors) < 1 / 1.5:
        assert "calibration rescaled" in caplog.text
    with pytest.raises(TypeError, match="calibrate"):
        AutoInit().initialize_model(model, calibrate="yes")
