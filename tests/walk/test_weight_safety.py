"""The write pass on real Keras variables: every scale checked in its dtype before anything is
written, and all or nothing when the pass is interrupted."""
import logging
import math
import re

import keras
import numpy as np
import pytest

from autoinit_sym import AutoInit
from autoinit_sym.walk import weights
from autoinit_sym.walk.weights import PendingWeight, ZeroMeanFixedScale, check_scales, sample, write_pending


def seed_for(*key, weights=False):
    return len("|".join(map(str, key)))


def dense(units=8, inputs=8, name="d", dtype=None):
    layer = keras.layers.Dense(units, name=name, dtype=dtype)
    layer.build((None, inputs))
    return layer


def snapshot(layers):
    """Every variable's value, every initializer/constraint attribute and variable constraint."""
    state = []
    for layer in layers:
        for variable in layer.weights:
            state.append((variable.path, np.array(variable.numpy()), variable.constraint))
        for attr in ("kernel_initializer", "bias_initializer", "kernel_constraint", "bias_constraint"):
            state.append((f"{layer.name}.{attr}", getattr(layer, attr, None)))
    return state


def assert_unchanged(before, after):
    assert len(before) == len(after)
    for old, new in zip(before, after):
        assert old[0] == new[0]
        if len(old) == 3:
            np.testing.assert_array_equal(old[1], new[1])
            assert old[2] is new[2]
        else:
            assert old[1] is new[1], old[0]


# --- scales checked in their dtype --------------------------------------------------------

@pytest.mark.parametrize("dtype, distribution, std, fragment", [
    ("float32", "truncated_normal", 5.7e66, "above the float32 maximum"),
    ("float32", "truncated_normal", float("inf"), "standard deviation is inf"),
    ("float32", "uniform", float("nan"), "standard deviation is nan"),
    ("float32", "untruncated_normal", 0.0, "standard deviation is 0.0"),
    ("float32", "truncated_normal", 1e-40, "below the smallest normal float32"),
    ("float64", "truncated_normal", 1e-310, "below the smallest normal float64"),
    ("float16", "truncated_normal", 4e4, r"above the float16 maximum 6\.55e\+04"),
    ("float16", "uniform", 1e-5, "below the smallest normal float16"),
    ("bfloat16", "untruncated_normal", 1e38, "above the bfloat16 maximum"),
    ("float32", "orthogonal", 1.3e38, "orthogonal draws up to"),  # gain std * sqrt(8)
])
def test_unrepresentable_scale_writes_nothing(dtype, distribution, std, fragment):
    first, second = dense(name="first", dtype=dtype), dense(name="second", dtype=dtype)
    before = snapshot([first, second])
    pending = [PendingWeight(first, first.kernel, 0.1, "kernel_initializer", 8.0),
               PendingWeight(second, second.kernel, std, "kernel_initializer", 8.0)]
    with pytest.raises(ValueError, match=fragment) as info:
        write_pending(pending, distribution, True, seed_for)
    assert "'second/kernel' of layer 'second'" in str(info.value)
    assert "no weights were written" in str(info.value)
    assert_unchanged(before, snapshot([first, second]))


def test_representable_extremes_are_written_finite():
    """Scales just inside each dtype's range are drawn finite and nonzero."""
    for dtype, std in (("float16", 2.5e4), ("bfloat16", 1.4e38), ("float32", 1.4e38), ("float16", 1e-4)):
        layer = dense(dtype=dtype)
        write_pending([PendingWeight(layer, layer.kernel, std)], "truncated_normal", False, seed_for)
        values = np.asarray(layer.kernel.numpy(), dtype=np.float64)
        assert np.all(np.isfinite(values)) and np.count_nonzero(values) > 0.9 * values.size, (dtype, std)


def test_uniform_draws_near_the_float32_maximum_do_not_overflow():
    values = sample("uniform", 1.5e38, (4096,), 0, "float32")
    assert np.all(np.isfinite(values))
    assert np.abs(values).max() <= 1.5e38 * math.sqrt(3.0)
    assert values.astype(np.float64).std() == pytest.approx(1.5e38, rel=0.05)


def test_mixed_precision_is_checked_in_the_compute_dtype():
    layer = dense(dtype="mixed_float16")
    assert layer.kernel.dtype == "float32"
    with pytest.raises(ValueError, match="float16 \\(the compute dtype of layer 'd'\\)"):
        write_pending([PendingWeight(layer, layer.kernel, 1e5)], "truncated_normal", False, seed_for)


def test_explanation_is_part_of_the_error():
    layer = dense(name="head")
    pending = [PendingWeight(layer, layer.kernel, 5.7e66, "kernel_initializer", 8.0)]
    with pytest.raises(ValueError, match=r"\(the input of 'head' has second moment 3.8e-135\)"):
        check_scales(pending, "truncated_normal", lambda item: "the input of 'head' has second moment 3.8e-135")


def test_scales_near_the_limits_are_warned_about(caplog):
    layer = dense(dtype="float16")
    with caplog.at_level(logging.WARNING, logger="autoinit_sym"):
        check_scales([PendingWeight(layer, layer.kernel, 1000.0)], "truncated_normal")
        check_scales([PendingWeight(layer, layer.kernel, 1.0)], "truncated_normal")
        check_scales([PendingWeight(layer, layer.kernel, 1e-3)], "truncated_normal")
    messages = [r.getMessage() for r in caplog.records if r.name == "autoinit_sym"]
    assert len(messages) == 2, messages
    assert all("'d/kernel'" in m and "within a factor 100 of the float16 range" in m for m in messages)


def test_integer_variable_is_refused():
    layer = keras.layers.Embedding(4, 2, name="emb")
    layer.build((None, 3))
    counter = keras.Variable(np.zeros(3, dtype="int32"), dtype="int32", name="counter", trainable=False)  # torch: no int grads
    with pytest.raises(ValueError, match="not a floating-point type"):
        check_scales([PendingWeight(layer, counter, 1.0)], "uniform")


# --- all or nothing ------------------------------------------------------------------------

@pytest.mark.parametrize("error", [KeyboardInterrupt, MemoryError])
def test_interrupted_write_pass_restores_everything(monkeypatch, error):
    layers = [dense(name=f"d{i}") for i in range(3)]
    before = snapshot(layers)
    pending = [PendingWeight(layer, variable, 0.2, attr, 8.0)
               for layer in layers for variable, attr in ((layer.kernel, "kernel_initializer"),
                                                          (layer.bias, "bias_initializer"))]
    real_source, calls = weights.source, []

    def failing_source(item, *args):
        calls.append(item.variable.path)
        if len(calls) == 3:  # the second layer's kernel
            raise error()
        return real_source(item, *args)

    monkeypatch.setattr(weights, "source", failing_source)
    with pytest.raises(error):
        write_pending(pending, "truncated_normal", True, seed_for)
    assert calls == ["d0/kernel", "d0/bias", "d1/kernel"]
    assert_unchanged(before, snapshot(layers))


def test_failing_reset_restores_the_written_weights():
    layer = dense()
    other = keras.Variable(np.ones(3, dtype="float32"), name="moment")
    before = snapshot([layer])
    with pytest.raises(ValueError):
        write_pending([PendingWeight(layer, layer.kernel, 0.2, "kernel_initializer")], "uniform", False, seed_for,
                      resets=[(other, np.zeros(3, dtype="float32")), (layer.bias, np.zeros((5, 5)))])
    assert_unchanged(before, snapshot([layer]))
    np.testing.assert_array_equal(other.numpy(), np.ones(3))


def test_complete_write_pass_updates_weights_attributes_and_resets():
    layer = dense()
    moment = keras.Variable(np.ones(3, dtype="float32"), name="moment")
    write_pending([PendingWeight(layer, layer.kernel, 0.2, "kernel_initializer")], "uniform", True, seed_for,
                  resets=[(moment, np.zeros(3, dtype="float32"))])
    assert np.abs(layer.kernel.numpy()).max() <= 0.2 * math.sqrt(3.0) + 1e-6
    assert isinstance(layer.kernel_initializer, keras.initializers.RandomUniform)
    assert isinstance(layer.kernel_constraint, ZeroMeanFixedScale)
    assert layer.kernel.constraint is layer.kernel_constraint
    np.testing.assert_array_equal(moment.numpy(), np.zeros(3))


# --- through AutoInit ----------------------------------------------------------------------

def model_weights(model):
    return [np.array(w.numpy()) for w in model.weights]


def dead_relu_model():
    """Dense -> ReLU(threshold=25) -> Dropout -> Dense: the head's input is almost always 0."""
    inputs = keras.Input((16,), name="x")
    x = keras.layers.Dense(32, name="dense")(inputs)
    x = keras.layers.ReLU(threshold=25.0, name="relu_1")(x)
    x = keras.layers.Dropout(0.1, name="dropout")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="head")(x))


def relu_mlp(dtype=None):
    inputs = keras.Input((16,), name="x")
    x = keras.layers.Dense(32, name="dense", dtype=dtype)(inputs)
    x = keras.layers.ReLU(name="relu_1", dtype=dtype)(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="head", dtype=dtype)(x))


@pytest.mark.parametrize("make, kwargs, fragments", [
    (dead_relu_model, {}, ["'head/kernel'", "above the float32 maximum",
                           "the input of 'head' has second moment", "falls from 1 at 'relu_1'"]),
    (relu_mlp, {"input_data_var": 1e-300}, ["'dense/kernel'", "above the float32 maximum",
                                            "input second moment 1e-300", "input_data_var of 'x'"]),
    (relu_mlp, {"input_data_var": 1e300}, ["'dense/kernel'", "round to zero", "input second moment 1e+300"]),
    (relu_mlp, {"signal_variance": 1e80}, ["'dense/kernel'", "signal_variance 1e+80"]),
    (relu_mlp, {"signal_variance": 1e300}, ["non-finite"]),
    (lambda: relu_mlp("float16"), {"input_data_var": 1e-12}, ["above the float16 maximum"]),
    (relu_mlp, {"input_data_mean": 1e300}, ["input 'x'", "overflows"]),
])
def test_unrepresentable_initialization_is_a_value_error_and_writes_nothing(make, kwargs, fragments):
    model = make()
    before = model_weights(model)
    with pytest.raises(ValueError) as info:
        AutoInit(**kwargs).initialize_model(model)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)
    for old, new in zip(before, model_weights(model)):
        np.testing.assert_array_equal(old, new)


def test_float16_near_its_range_warns_but_initializes(caplog):
    model = relu_mlp("float16")
    with caplog.at_level(logging.WARNING, logger="autoinit_sym"):
        AutoInit(input_data_var=1e-7).initialize_model(model)
    assert any("'dense/kernel'" in r.getMessage() and "float16 range" in r.getMessage() for r in caplog.records)
    assert np.all(np.isfinite(model.get_layer("dense").kernel.numpy()))


def test_interrupted_initialization_leaves_the_model_as_it_was(monkeypatch):
    model = relu_mlp()
    model.compile(optimizer="adam", loss="mse")
    model.fit(np.ones((8, 16)), np.ones((8, 4)), epochs=1, verbose=0)
    before = model_weights(model) + [np.array(v.numpy()) for v in model.optimizer.variables]
    initializers = [model.get_layer(n).kernel_initializer for n in ("dense", "head")]
    real_source, calls = weights.source, []

    def failing_source(item, *args):
        calls.append(item.variable.path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_source(item, *args)

    monkeypatch.setattr(weights, "source", failing_source)
    with pytest.raises(KeyboardInterrupt):
        AutoInit().initialize_model(model)
    after = model_weights(model) + [np.array(v.numpy()) for v in model.optimizer.variables]
    for old, new in zip(before, after):
        np.testing.assert_array_equal(old, new)
    assert [model.get_layer(n).kernel_initializer for n in ("dense", "head")] == initializers


def test_optimizer_state_is_reset_to_a_fresh_optimizers():
    model = relu_mlp()
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.01), loss="mse")
    model.fit(np.ones((8, 16)), np.ones((8, 4)), epochs=1, verbose=0)
    optimizer = model.optimizer
    assert int(optimizer.iterations.numpy()) == 1
    assert any(np.any(v.numpy() != 0) for v in optimizer.variables if "momentum" in v.path)
    AutoInit().initialize_model(model)
    assert model.optimizer is optimizer
    assert int(optimizer.iterations.numpy()) == 0
    for variable in optimizer.variables:
        if "momentum" in variable.path or "velocity" in variable.path:
            assert not np.any(variable.numpy()), variable.path
    assert float(optimizer.learning_rate.numpy()) == pytest.approx(0.01)
    model.fit(np.ones((8, 16)), np.ones((8, 4)), epochs=1, verbose=0)  # still trains
    assert int(optimizer.iterations.numpy()) == 1


def test_loss_scale_and_accumulators_get_their_configured_initial_values():
    model = relu_mlp()
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adagrad(initial_accumulator_value=0.25),
                                                    initial_scale=64.0)
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(np.ones((8, 16)), np.ones((8, 4)), epochs=2, verbose=0)
    optimizer.dynamic_scale.assign(8.0)
    AutoInit().initialize_model(model)
    assert float(optimizer.dynamic_scale.numpy()) == 64.0
    assert int(optimizer.step_counter.numpy()) == 0 and int(optimizer.inner_optimizer.iterations.numpy()) == 0
    accumulators = [v for v in optimizer.inner_optimizer.variables if "accumulator" in v.path]
    assert accumulators and all(np.all(v.numpy() == 0.25) for v in accumulators)


class Unrebuildable(keras.optimizers.SGD):
    """An optimizer whose config does not rebuild it (its __init__ takes an extra argument)."""

    def __init__(self, tag, **kwargs):
        super().__init__(momentum=0.9, **kwargs)
        self.tag = tag


def test_optimizer_that_cannot_be_rebuilt_keeps_its_state_with_a_warning(caplog):
    model = relu_mlp()
    model.compile(optimizer=Unrebuildable("x"), loss="mse")
    model.fit(np.ones((8, 16)), np.ones((8, 4)), epochs=1, verbose=0)
    with caplog.at_level(logging.WARNING, logger="autoinit_sym"):
        AutoInit().initialize_model(model)
    assert int(model.optimizer.iterations.numpy()) == 1
    assert any("optimizer state of Unrebuildable was kept" in r.getMessage() for r in caplog.records)


def test_uncompiled_and_unbuilt_optimizers_are_left_alone():
    model = relu_mlp()
    AutoInit().initialize_model(model)
    model.compile(optimizer="adam", loss="mse")
    assert not model.optimizer.built
    AutoInit().initialize_model(model)
    assert not model.optimizer.built


# --- settings --------------------------------------------------------------------------------

@pytest.mark.parametrize("config, fragment", [
    ({"monte_carlo_samples": 1.5}, "'monte_carlo_samples'] must be an integer, got 1.5"),
    ({"monte_carlo_samples": 1e300}, "must be an integer"),
    ({"monte_carlo_samples": float("inf")}, "must be an integer"),
    ({"monte_carlo_samples": True}, "must be an integer, got True"),
    ({"monte_carlo_samples": 1}, "between 2 and 2147483647, got 1"),
    ({"recurrent_monte_carlo_samples": 10**12}, "'recurrent_monte_carlo_samples'] must be between 2"),
    ({"recurrent_monte_carlo_samples": "100"}, "must be an integer"),
    ({"constrain_weights": "no"}, "'constrain_weights'] must be True or False, got 'no'"),
    ({"constrain_weights": 1}, "must be True or False"),
    ({"seed": 1.0}, "'seed'] must be an integer"),
    ({"seed": False}, "'seed'] must be an integer"),
    ({"distribution": ["uniform"]}, "valid choices"),
])
def test_bad_weight_init_config_names_the_key_and_the_choices(config, fragment):
    with pytest.raises(ValueError, match=re.escape(fragment)):
        AutoInit(weight_init_config=config)


def test_numpy_integers_and_bools_are_valid_settings():
    config = AutoInit(weight_init_config={"seed": np.int64(7), "monte_carlo_samples": np.int32(64),
                                          "constrain_weights": np.bool_(True)}).config
    assert (config.seed, config.monte_carlo_samples, config.constrain_weights) == (7, 64, True)
    assert type(config.seed) is int and type(config.constrain_weights) is bool
