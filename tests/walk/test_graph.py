"""The graph walk: Sequential, nested models, shared layers and submodels, multi-input
and multi-output models; keys, ordering, and predictions against measurement."""
import keras
import numpy as np
import pytest

from autoinit_sym import AutoInit
from autoinit_sym.walk.graph import build_graph, run_graph
from autoinit_sym.measure import measure


pytestmark = pytest.mark.usefixtures("keras_seed")


def assert_tracks(model, estimates, rel=0.15, **stats):
    """Single weight draw: layers of a few hundred units fluctuate by ~5% around the
    expectation AutoInit predicts."""
    measured = measure(model, samples=512, **stats)
    assert list(measured) == list(estimates)
    for key, estimate in estimates.items():
        mean, var = (np.asarray(v) for v in measured[key])
        predicted_mean, predicted_var = (np.asarray(v) for v in estimate)
        np.testing.assert_allclose(var, predicted_var, rtol=rel, err_msg=key)
        assert np.all(np.abs(mean - predicted_mean) <= 0.15 * np.sqrt(predicted_var) + 1e-6), key


def test_sequential_keys_in_layer_order():
    model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(128, activation="relu", name="a"),
                              keras.layers.Dense(128, activation="tanh", name="b"), keras.layers.Dense(128, name="c")])
    model, estimates = AutoInit().initialize_model(model, return_estimates=True)
    assert list(estimates) == ["a", "b", "c"]
    assert estimates["c"].means_in == [estimates["b"].mean]
    assert_tracks(model, estimates)


def test_sequential_built_without_an_input_layer():
    model = keras.Sequential([keras.layers.Dense(64, activation="relu", name="a"), keras.layers.Dense(8, name="b")])
    model.build((None, 16))
    _, estimates = AutoInit().initialize_model(model, return_estimates=True)
    assert list(estimates) == ["a", "b"] and estimates["b"].means_in == [estimates["a"].mean]


def test_unbuilt_sequential_is_a_clear_error():
    with pytest.raises(ValueError, match="not built"):
        AutoInit().initialize_model(keras.Sequential([keras.layers.Dense(4)]))


def test_unbuilt_subclassed_model_is_a_clear_error():
    """A built subclassed model is traced (tests/walk/test_composite_layers.py); an unbuilt one
    has no input shapes to trace it at."""
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(4)

        def call(self, x):
            return self.dense(x)

    with pytest.raises(ValueError, match="cannot see the graph"):
        AutoInit().initialize_model(Net())


def test_nested_models_are_walked_through():
    inner = keras.Sequential([keras.Input((256,)), keras.layers.Dense(256, activation="selu", name="inner_dense"),
                              keras.layers.Dense(256, name="inner_out")], name="block")
    inputs = keras.Input((64,))
    x = keras.layers.Dense(256, activation="relu", name="first")(inputs)
    x = inner(x)
    outputs = keras.layers.Dense(256, name="last")(keras.layers.Activation("tanh", name="act")(x))
    model = keras.Model(inputs, outputs)
    model, estimates = AutoInit().initialize_model(model, return_estimates=True)
    assert list(estimates) == ["first", "inner_dense", "inner_out", "block", "act", "last"]
    assert estimates["block"].var == estimates["inner_out"].var
    assert estimates["inner_dense"].means_in == [estimates["first"].mean]
    assert_tracks(model, estimates)


def test_shared_layer_is_scaled_from_combined_statistics():
    shared = keras.layers.Dense(256, name="shared")
    a, b = keras.Input((64,), name="a"), keras.Input((64,), name="b")
    model = keras.Model([a, b], keras.layers.Concatenate(name="cat")([shared(a), shared(b)]))
    model, estimates = AutoInit(input_data_var={"a": 1.0, "b": 9.0}, input_data_mean=[0.0, 1.0]).initialize_model(
        model, return_estimates=True)
    first, second = estimates["shared"], estimates["shared#1"]
    combined = (1.0 + (9.0 + 1.0)) / 2  # mean of the two calls' E[x^2]
    assert first.init_means_in == second.init_means_in == [0.5]
    assert first.init_vars_in[0] + 0.25 == pytest.approx(combined)
    assert first.var == pytest.approx(1.0 / combined)
    assert second.var == pytest.approx(10.0 / combined)
    (std,) = first.weights.values()
    assert std == pytest.approx(np.sqrt(1.0 / (64 * combined)))
    assert_tracks(model, estimates, input_var={"a": 1.0, "b": 9.0}, input_mean=[0.0, 1.0])


def test_layer_applied_twice_in_a_chain_settles():
    shared = keras.layers.Dense(128, activation="tanh", name="shared")
    inputs = keras.Input((128,))
    model = keras.Model(inputs, shared(shared(inputs)))
    model, estimates = AutoInit(input_data_var=4.0).initialize_model(model, return_estimates=True)
    first, second = estimates["shared"], estimates["shared#1"]
    second_moments = [4.0, second.vars_in[0] + second.means_in[0] ** 2]
    assert first.init_vars_in[0] + first.init_means_in[0] ** 2 == pytest.approx(np.mean(second_moments), rel=1e-6)
    assert_tracks(model, estimates, input_var=4.0)


def test_shared_submodel_gets_one_entry_per_call():
    block = keras.Sequential([keras.Input((32,)), keras.layers.Dense(64, activation="relu", name="d")], name="block")
    a, b = keras.Input((32,)), keras.Input((32,))
    model = keras.Model([a, b], keras.layers.Add(name="add")([block(a), block(b)]))
    model, estimates = AutoInit().initialize_model(model, return_estimates=True)
    assert list(estimates) == ["d", "block", "d#1", "block#1", "add"]
    assert_tracks(model, estimates)


class Halves(keras.layers.Layer):
    """A layer with two outputs and no estimator: 2x and x/2."""

    def call(self, x):
        return 2.0 * x, 0.5 * x


def test_multi_output_layer_and_model_record_each_output():
    inputs = keras.Input((64,))
    big, small = Halves(name="halves")(inputs)
    model = keras.Model(inputs, [keras.layers.Dense(128, name="out_a")(big), keras.layers.Dense(128, name="out_b")(small)])
    model, estimates = AutoInit(input_data_mean=1.0).initialize_model(model, return_estimates=True)
    halves = estimates["halves"]
    assert halves.method == "exact"  # traced: its two products are estimated in place
    assert len([key for key in estimates if key not in ("halves", "out_a", "out_b")]) == 2
    assert halves.mean == pytest.approx((2.0, 0.5), rel=0.05)
    assert halves.var == pytest.approx((4.0, 0.25), rel=0.1)
    assert_tracks(model, estimates, input_mean=1.0)


def test_run_graph_reproduces_the_model():
    inner = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, activation="relu")])
    inputs = keras.Input((8,))
    model = keras.Model(inputs, keras.layers.Dense(3)(inner(inputs) + inputs))
    graph = build_graph(model)
    x = np.random.default_rng(0).normal(size=(5, 8)).astype("float32")
    values = run_graph(graph, [x], training=False)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(values[graph.outputs[0]]),
                               keras.ops.convert_to_numpy(model(x)), rtol=1e-5, atol=1e-6)
