"""AutoInit's API: inputs it accepts, errors it raises (leaving the model untouched),
distributions, seeds, constraints, custom estimators and unknown layers."""
import logging

import keras
import numpy as np
import pytest

from autoinit_sym import AutoInit
from autoinit_sym.estimators import LayerOutputDistributionEstimator
from autoinit_sym.measure import measure
from autoinit_sym.estimators.base import EstimationContext, PendingWeight, WeightInitConfig
from autoinit_sym.walk.drawing import BLOCK
from autoinit_sym.walk.weights import TRUNCATED_STD, ZeroMeanFixedScale, draw, sample, weight_seed, write_pending
from helpers import Doubling, DoublingEstimator


pytestmark = pytest.mark.usefixtures("keras_seed")


def mlp(width=64):
    inputs = keras.Input((width,), name="x")
    x = keras.layers.Dense(width, activation="relu", name="d1")(inputs)
    return keras.Model(inputs, keras.layers.Dense(width, name="d2")(x))


def weights_of(model):
    return [np.array(keras.ops.convert_to_numpy(w)) for w in model.weights]


# --- accepted inputs -----------------------------------------------------------------

def test_model_is_initialized_in_place_and_compiled_state_kept():
    model = mlp()
    model.compile(optimizer="adam", loss="mse")
    optimizer = model.optimizer
    before = weights_of(model)
    result, estimates = AutoInit().initialize_model(model, return_estimates=True)
    assert result is model and model.optimizer is optimizer and model.compiled
    assert not np.allclose(before[0], weights_of(model)[0])
    mean, var = estimates["d2"]
    assert (mean, var) == (0.0, pytest.approx(1.0))
    assert estimates["d2"].method == "exact" and estimates["d1"].method == "closed_form"
    assert estimates["d2"].means_in == [estimates["d1"].mean]


@pytest.mark.parametrize("form", ["config", "serialized", "json"])
def test_config_and_json_are_built_once(form):
    model = mlp()
    source = {"config": model.get_config(), "serialized": keras.saving.serialize_keras_object(model),
              "json": model.to_json()}[form]
    built = AutoInit().initialize_model(source)
    assert isinstance(built, keras.Model)
    assert [layer.name for layer in built.layers] == [layer.name for layer in model.layers]
    assert measure(built, samples=256)["d2"][1] == pytest.approx(1.0, rel=0.15)


def test_sequential_config():
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32)])
    built = AutoInit().initialize_model(model.get_config())
    assert isinstance(built, keras.Sequential)


def test_multi_input_statistics_by_list_and_by_name():
    a, b = keras.Input((64,), name="a"), keras.Input((64,), name="b")
    model = keras.Model([a, b], [keras.layers.Dense(64, name="da")(a), keras.layers.Dense(64, name="db")(b)])
    _, by_list = AutoInit(input_data_mean=[0.0, 2.0], input_data_var=[1.0, 3.0]).initialize_model(
        model, return_estimates=True)
    _, by_name = AutoInit(input_data_mean={"b": 2.0, "a": 0.0}, input_data_var={"a": 1.0, "b": 3.0}
                          ).initialize_model(model, return_estimates=True)
    assert by_list["db"].means_in == by_name["db"].means_in == [2.0]
    assert by_list["db"].vars_in == by_name["db"].vars_in == [3.0]
    assert by_list["db"].weights == pytest.approx({"db/kernel": np.sqrt(1.0 / (64 * 7.0))})


# --- errors ----------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [42, None, [1, 2], 3.5])
def test_not_a_model_is_a_type_error(bad):
    with pytest.raises(TypeError, match=type(bad).__name__):
        AutoInit().initialize_model(bad)


@pytest.mark.parametrize("bad, message", [("{not json", "JSON is malformed"), ("[1, 2]", "must describe an object"),
                                          ({"foo": 1}, "config is malformed"),
                                          ({"class_name": "NoSuchModel", "config": {}}, "config is malformed")])
def test_malformed_config_is_a_value_error(bad, message):
    with pytest.raises(ValueError, match=message):
        AutoInit().initialize_model(bad)


@pytest.mark.parametrize("kwargs, message", [
    ({"input_data_var": 0.0}, "input_data_var"), ({"input_data_var": -1.0}, "input_data_var"),
    ({"input_data_var": [1.0, float("nan")]}, "input_data_var"), ({"input_data_mean": float("inf")}, "input_data_mean"),
    ({"signal_variance": 0.0}, "signal_variance"), ({"signal_variance": -2}, "signal_variance"),
    ({"weight_init_config": {"distribution": "cauchy"}}, "valid choices.*truncated_normal"),
    ({"weight_init_config": {"sede": 1}}, "valid keys.*seed"),
])
def test_bad_settings_are_value_errors_listing_choices(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AutoInit(**kwargs)


def test_per_input_statistics_must_match_the_inputs():
    with pytest.raises(ValueError, match=r"unknown \['y'\].*inputs are \['x'\]"):
        AutoInit(input_data_var={"y": 1.0}).initialize_model(mlp())
    with pytest.raises(ValueError, match="2 entries but the model has 1 inputs"):
        AutoInit(input_data_mean=[0.0, 1.0]).initialize_model(mlp())


def test_bad_custom_estimator_is_a_type_error():
    with pytest.raises(TypeError, match="LayerOutputDistributionEstimator"):
        AutoInit(custom_distribution_estimators={keras.layers.Dense: object})


class NaNEstimator(LayerOutputDistributionEstimator):
    def estimate(self, means_in, vars_in):
        return float("nan"), 1.0


def test_non_finite_estimate_names_the_layer_and_leaves_the_model_untouched():
    inputs = keras.Input((64,))
    x = keras.layers.Dense(64, name="d1")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(64, name="d2")(keras.layers.Identity(name="bad")(x)))
    before = weights_of(model)
    with pytest.raises(ValueError, match="'bad'.*no weights were written"):
        AutoInit(custom_distribution_estimators={keras.layers.Identity: NaNEstimator}).initialize_model(model)
    for old, new in zip(before, weights_of(model)):
        np.testing.assert_array_equal(old, new)


# --- distributions, seeds, constraints -----------------------------------------------------

@pytest.mark.parametrize("distribution", ["truncated_normal", "untruncated_normal", "uniform", "orthogonal"])
def test_distributions_draw_the_requested_scale(distribution):
    inputs = keras.Input((256,))
    layer = keras.layers.Dense(512)
    model = keras.Model(inputs, layer(inputs))
    _, estimates = AutoInit(weight_init_config={"distribution": distribution}, input_data_var=4.0
                            ).initialize_model(model, return_estimates=True)
    std = np.sqrt(1.0 / (256 * 4.0))
    assert estimates[layer.name].weights == pytest.approx({layer.kernel.path: std})
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    assert kernel.std() == pytest.approx(std, rel=0.02)
    assert abs(kernel.mean()) < 0.01 * std
    if distribution == "truncated_normal":
        assert np.abs(kernel).max() <= 2 * std / TRUNCATED_STD * (1 + 1e-6)
        config = layer.get_config()["kernel_initializer"]
        assert config["class_name"] == "TruncatedNormal"
        assert config["config"]["stddev"] == pytest.approx(std / TRUNCATED_STD)
    if distribution == "orthogonal":
        gram = kernel @ kernel.T
        np.testing.assert_allclose(gram / gram[0, 0], np.eye(256), atol=1e-4)
    if distribution == "uniform":
        assert np.abs(kernel).max() <= std * np.sqrt(3) * (1 + 1e-6)


@pytest.mark.parametrize("distribution", ["truncated_normal", "untruncated_normal"])
def test_blocked_normal_draws_do_not_depend_on_threads(distribution, monkeypatch):
    """A kernel of 2.5 blocks is drawn block by block in parallel; on one core it is the same."""
    shape = (5, BLOCK // 2)
    parallel = sample(distribution, 0.1, shape, 7)
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    assert np.array_equal(sample(distribution, 0.1, shape, 7), parallel)
    assert parallel.std() == pytest.approx(0.1, rel=2e-3)
    assert not np.array_equal(parallel[:2], parallel[2:4])  # blocks are independent draws
    if distribution == "truncated_normal":
        assert np.abs(parallel).max() <= 2.0 * 0.1 / TRUNCATED_STD * (1 + 1e-6)


def test_seed_gives_the_same_weights_and_estimates():
    runs = []
    for seed in (7, 7, 8):
        keras.backend.clear_session()
        model, estimates = AutoInit(weight_init_config={"seed": seed}).initialize_model(mlp(), return_estimates=True)
        runs.append((weights_of(model), estimates))
    for a, b in zip(runs[0][0], runs[1][0]):
        np.testing.assert_array_equal(a, b)
    assert runs[0][1] == runs[1][1]
    assert not np.allclose(runs[0][0][0], runs[2][0][0])


@pytest.mark.parametrize("distribution", ["truncated_normal", "untruncated_normal", "uniform", "orthogonal"])
def test_draw_is_exactly_what_write_pending_assigns(distribution):
    """The i-th scheduled weight is written with draw(..., weight_seed(seed_for, i)), the seed
    convention (by position in the walk, never by name)."""
    layer = keras.layers.Dense(16, name="drawn_dense")
    layer.build((None, 8))
    pending = PendingWeight(layer, layer.kernel, 0.25)
    seed_for = EstimationContext(config=WeightInitConfig(seed=4)).seed_for
    values = draw(pending, distribution, weight_seed(seed_for, 0))
    assert values.shape == (8, 16) and values.dtype == np.float32
    np.testing.assert_array_equal(values, draw(pending, distribution, weight_seed(seed_for, 0)))
    assert not np.array_equal(values, draw(pending, distribution, weight_seed(seed_for, 1)))
    assert not np.array_equal(values, draw(pending, distribution, weight_seed(EstimationContext().seed_for, 0)))
    write_pending([pending], distribution, False, seed_for)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.kernel), values)


def test_constrained_weights_keep_their_scale_and_reload(tmp_path):
    model, estimates = AutoInit(weight_init_config={"constrain_weights": True}).initialize_model(
        mlp(), return_estimates=True)
    layer = model.get_layer("d2")
    (std,) = estimates["d2"].weights.values()
    assert isinstance(layer.kernel.constraint, ZeroMeanFixedScale)
    model.compile(optimizer=keras.optimizers.SGD(10.0), loss="mse")
    x = np.random.default_rng(0).normal(size=(32, 64)).astype("float32")
    model.fit(x, x + 5.0, epochs=2, verbose=0)
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    assert abs(kernel.mean()) < 1e-5
    assert kernel.std() == pytest.approx(std, rel=1e-3)
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    constraint = reloaded.get_layer("d2").kernel_constraint
    assert isinstance(constraint, ZeroMeanFixedScale) and constraint.std == pytest.approx(std)


# --- custom estimators and unknown layers ---------------------------------------------------

def doubling_model():
    inputs = keras.Input((64,))
    x = Doubling(name="double")(keras.layers.Dense(64, name="d1")(inputs))
    return keras.Model(inputs, keras.layers.Dense(64, name="d2")(x))


def test_custom_estimator_is_used(caplog):
    with caplog.at_level(logging.WARNING):
        _, estimates = AutoInit(custom_distribution_estimators={Doubling: DoublingEstimator}).initialize_model(
            doubling_model(), return_estimates=True)
    assert estimates["double"].var == pytest.approx(4.0) and estimates["double"].method == "exact"
    assert "No LayerOutputDistributionEstimator" not in caplog.text


def test_custom_estimator_overrides_a_builtin_one():
    class Halving(LayerOutputDistributionEstimator):
        def estimate(self, means_in, vars_in):
            return 0.0, 0.5

    _, estimates = AutoInit(custom_distribution_estimators={keras.layers.Dense: Halving}).initialize_model(
        doubling_model(), return_estimates=True)
    assert estimates["d1"].var == estimates["d2"].var == 0.5


def test_unknown_layer_is_probed_with_the_reference_warning(caplog):
    with caplog.at_level(logging.WARNING):
        model, estimates = AutoInit(input_data_mean=1.0).initialize_model(doubling_model(), return_estimates=True)
    assert "No LayerOutputDistributionEstimator found for layer double. Probing" in caplog.text
    assert estimates["double"].method == "probe"
    assert estimates["double"].var == pytest.approx(4.0, rel=0.1)
    assert measure(model, input_mean=1.0, samples=256)["d2"][1] == pytest.approx(1.0, rel=0.15)


def test_unknown_layer_on_integer_input_is_probed_with_valid_values(caplog):
    inputs = keras.Input((8,), dtype="int32")  # integers 0 or 1 (walk.graph.input_values)
    model = keras.Model(inputs, keras.layers.Dense(8, name="d")(Doubling(name="double")(inputs)))
    with caplog.at_level(logging.WARNING):
        _, estimates = AutoInit().initialize_model(model, return_estimates=True)
    assert "No LayerOutputDistributionEstimator found for layer double. Probing" in caplog.text
    assert estimates["double"].method == "probe"
    assert tuple(estimates["double"]) == pytest.approx((1.0, 1.0), rel=0.1)  # 2 x for x in {0, 1}


class Failing(keras.layers.Layer):
    """Declares its output shape (so Keras never runs it symbolically) and fails on real tensors."""

    def compute_output_shape(self, input_shape):
        return input_shape

    def call(self, x):
        raise RuntimeError("no eager calls")


def test_unknown_layer_whose_probe_fails_passes_through_and_says_so(caplog):
    inputs = keras.Input((8,))
    model = keras.Model(inputs, keras.layers.Dense(8, name="d")(Failing(name="failing")(inputs)))
    with caplog.at_level(logging.WARNING):
        _, estimates = AutoInit(input_data_var=2.0).initialize_model(model, return_estimates=True)
    assert "Probing layer failing failed" in caplog.text and "no eager calls" in caplog.text
    assert estimates["failing"].method == "pass_through"
    assert tuple(estimates["failing"]) == (0.0, 2.0)


def test_json_with_custom_objects_and_estimators():
    source = doubling_model().to_json()
    with pytest.raises(ValueError, match="config is malformed"):
        AutoInit().initialize_model(source)
    model, estimates = AutoInit(custom_distribution_estimators={Doubling: DoublingEstimator}).initialize_model(
        source, return_estimates=True, custom_objects={"Doubling": Doubling})
    assert isinstance(model.get_layer("double"), Doubling)
    assert estimates["double"].method == "exact" and estimates["double"].var == pytest.approx(4.0)
