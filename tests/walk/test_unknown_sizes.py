"""Unknown sizes: every call's shapes re-inferred from the model inputs' sizes, stated with
``input_shapes`` / ``sequence_length`` or taken as DEFAULT_TIMESTEPS with one warning; the
option's errors; layers passed through are named."""
import logging

import keras
import numpy as np
import pytest

from autoinit_sym import AutoInit
from autoinit_sym.estimators.shapes import DEFAULT_TIMESTEPS
from autoinit_sym.measure import measure
from autoinit_sym.walk import walker

pytestmark = pytest.mark.usefixtures("keras_seed")

FAST = {"monte_carlo_samples": 2000, "recurrent_monte_carlo_samples": 256}


def einsum_model() -> keras.Model:
    """EinsumDense records an unknown sequence axis although the input fixes it at 32."""
    x = keras.Input((32, 64), name="x")
    h = keras.layers.EinsumDense("btd,df->btf", output_shape=(None, 256), activation="tanh", name="ed")(x)
    h = keras.layers.GlobalAveragePooling1D(name="gap")(h)
    return keras.Model(x, keras.layers.Dense(64, name="head")(h))


def text_model() -> keras.Model:
    """Variable-length tokens through embedding, convolution, attention and an LSTM."""
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    h = keras.layers.Embedding(1000, 32, name="emb")(tokens)
    h = keras.layers.Conv1D(32, 3, padding="same", activation="relu", name="conv")(h)
    h = keras.layers.MultiHeadAttention(2, 16, name="mha")(h, h)
    h = keras.layers.LSTM(16, return_sequences=True, name="lstm")(h)
    h = keras.layers.GlobalAveragePooling1D(name="gap")(h)
    return keras.Model(tokens, keras.layers.Dense(1, name="head")(h))


def size_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "autoinit_sym" and "DEFAULT_TIMESTEPS" in r.getMessage()]


@pytest.fixture
def seen_shapes(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[tuple]]:
    """Each call's input shapes as its rule was looked up with them."""
    seen: dict[str, list[tuple]] = {}
    lookup = walker.rule_for_call

    def spy(call, context, warned):
        seen[call.key] = list(call.input_shapes)
        return lookup(call, context, warned)

    monkeypatch.setattr(walker, "rule_for_call", spy)
    return seen


def test_einsum_sequence_axis_is_inferred_and_pooling_matches_measurement(caplog, seen_shapes):
    model = einsum_model()
    assert model.get_layer("ed").output.shape == (None, None, 256)
    predicted, measured = [], []
    with caplog.at_level(logging.WARNING):
        for seed in range(4):
            model, estimates = AutoInit(weight_init_config={"seed": seed}).initialize_model(
                model, return_estimates=True)
            predicted.append(estimates["gap"].var)
            measured.append(measure(model, samples=512, seed=seed)["gap"][1])
    assert seen_shapes["gap"] == [(None, 32, 256)]
    assert not size_warnings(caplog)
    # Expectation over weight draws: the arithmetic mean of the draws' measured variances
    # (about 1% apart from draw to draw; 32 positions, not 16, make the prediction).
    np.testing.assert_allclose(np.mean(measured), predicted[0], rtol=0.05)


def test_variable_length_text_model_warns_once_and_assumes_the_default(caplog, seen_shapes):
    model = text_model()
    with caplog.at_level(logging.WARNING):
        _, estimates = AutoInit(weight_init_config=FAST).initialize_model(model, return_estimates=True)
    warnings = size_warnings(caplog)
    assert len(warnings) == 1, warnings
    for fragment in (str(DEFAULT_TIMESTEPS), "'tokens' axis 1", "input_shapes=", "sequence_length=", "--input-shape"):
        assert fragment in warnings[0]
    assert seen_shapes["lstm"] == [(None, DEFAULT_TIMESTEPS, 32)]
    assert seen_shapes["gap"] == [(None, DEFAULT_TIMESTEPS, 16)]
    assert all(e.method != "pass_through" for e in estimates.values())
    assert np.isfinite(estimates["head"].var)


@pytest.mark.parametrize("option", [{"input_shapes": {"tokens": (24,)}}, {"input_shapes": (24,)},
                                    {"input_shapes": [[24]]}, {"sequence_length": 24}])
def test_stated_sizes_are_used_without_a_warning(caplog, seen_shapes, option):
    model = text_model()
    with caplog.at_level(logging.WARNING):
        AutoInit(weight_init_config=FAST, **option).initialize_model(model)
    assert not size_warnings(caplog)
    assert seen_shapes["mha"] == [(None, 24, 32), (None, 24, 32)]
    assert seen_shapes["lstm"] == [(None, 24, 32)]


def test_shape_inference_leaves_the_model_as_it_was():
    model = text_model()
    nodes = {layer.name: len(layer._inbound_nodes) for layer in model.layers}
    variables = len(model.variables)
    AutoInit(weight_init_config=FAST, sequence_length=12).initialize_model(model)
    assert {layer.name: len(layer._inbound_nodes) for layer in model.layers} == nodes
    assert len(model.variables) == variables
    assert model.get_layer("lstm").output.shape == (None, None, 16)


def test_partial_dict_and_sequence_length_fill_different_inputs(seen_shapes):
    a, b = keras.Input((None, 8), name="a"), keras.Input((None, 8), name="b")
    pooled = [keras.layers.GlobalAveragePooling1D(name=f"gap_{n}")(keras.layers.Dense(8, name=f"d_{n}")(t))
              for n, t in (("a", a), ("b", b))]
    model = keras.Model([a, b], keras.layers.Add(name="add")(pooled))
    AutoInit(input_shapes={"a": (5, 8)}, sequence_length=7).initialize_model(model)
    assert seen_shapes["gap_a"] == [(None, 5, 8)] and seen_shapes["gap_b"] == [(None, 7, 8)]


@pytest.mark.parametrize("option, fragments", [
    ({"input_shapes": {"tokens": (0,)}}, ["input_shapes['tokens']", "dimension 0", "positive integer", "got 0"]),
    ({"input_shapes": {"tokens": (12.5,)}}, ["input_shapes['tokens']", "positive integer", "12.5"]),
    ({"input_shapes": {"tokens": (True,)}}, ["input_shapes['tokens']", "positive integer", "True"]),
    ({"input_shapes": (-3,)}, ["input_shapes", "positive integer", "-3"]),
    ({"input_shapes": [(4,), (None,)]}, ["input_shapes[1]", "positive integer", "None"]),
    ({"input_shapes": {"tokens": "12"}}, ["input_shapes['tokens']", "tuple of positive integers"]),
    ({"input_shapes": {3: (12,)}}, ["input names", "3"]),
    ({"sequence_length": 0}, ["sequence_length", "positive integer", "got 0"]),
    ({"sequence_length": 2.5}, ["sequence_length", "positive integer", "2.5"]),
])
def test_bad_option_values_are_refused_at_construction(option, fragments):
    with pytest.raises(ValueError) as error:
        AutoInit(**option)
    for fragment in fragments:
        assert fragment in str(error.value)


@pytest.mark.parametrize("build, option, fragments", [
    (text_model, {"tokens_": (8,)}, ["unknown input(s) ['tokens_']", "['tokens']"]),
    (text_model, {"tokens": (8, 4)}, ["input_shapes['tokens']", "2 dimension(s)", "has 1", "valid: (?,)"]),
    (text_model, [(8,), (8,)], ["2 shapes", "1 inputs", "['tokens']"]),
    (einsum_model, {"x": (32, 32)}, ["input_shapes['x']", "contradicts", "(None, 32, 64)", "valid: (32, 64)"]),
    (einsum_model, (16, 64), ["input_shapes['x']", "contradicts", "valid: (32, 64)"]),
])
def test_option_that_does_not_fit_the_model_is_an_error_and_changes_nothing(build, option, fragments):
    model = build()
    before = [np.array(v) for v in model.get_weights()]
    with pytest.raises(ValueError) as error:
        AutoInit(input_shapes=option).initialize_model(model)
    for fragment in fragments:
        assert fragment in str(error.value)
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_one_shape_for_a_model_of_several_inputs_is_an_error():
    a, b = keras.Input((4,), name="a"), keras.Input((4,), name="b")
    model = keras.Model([a, b], keras.layers.Add()([a, b]))
    with pytest.raises(ValueError, match=r"one shape \(4,\).*2 inputs \['a', 'b'\].*dict by input name"):
        AutoInit(input_shapes=(4,)).initialize_model(model)


def test_call_that_cannot_run_on_the_assumed_sizes_is_named_not_raised(caplog):
    tokens = keras.Input((None,), name="values")
    h = keras.layers.Reshape((4, 4), name="grid")(tokens)
    model = keras.Model(tokens, keras.layers.Dense(4, name="head")(keras.layers.Flatten(name="flat")(h)))
    with caplog.at_level(logging.WARNING):
        AutoInit(sequence_length=10).initialize_model(model)
    assert "the shapes of layer call 'grid' could not be inferred" in caplog.text


class Twice(keras.layers.Layer):
    """Reads strings: it can be neither traced (Python control flow) nor probed (no samples of strings)."""

    def call(self, x):
        if keras.ops.any(keras.ops.equal(x, "")):
            raise ValueError("empty string")
        return 2.0 * keras.ops.cast(keras.ops.not_equal(x, "a"), "float32")

    def compute_output_shape(self, input_shape):
        return input_shape

    def compute_output_spec(self, x):
        return keras.KerasTensor(x.shape, dtype="float32")


def test_layer_neither_estimated_nor_probed_is_named_with_the_reason(caplog):
    """Without a rule: one warning naming the layer and the reason, and method pass_through."""
    ids = keras.Input((5, 4), dtype="string", name="ids")
    model = keras.Model(ids, keras.layers.Dense(8, name="head")(Twice(name="twice")(ids)))
    with caplog.at_level(logging.WARNING):
        _, estimates = AutoInit().initialize_model(model, return_estimates=True)
    assert estimates["twice"].method == "pass_through"
    said = "A probe is impossible (input of dtype string is neither numeric nor boolean)"
    lines = [line for line in caplog.text.splitlines() if said in line]
    assert len(lines) == 1 and "twice" in lines[0], caplog.text
    assert "neither estimated nor probed" not in caplog.text


def test_a_fixed_batch_size_is_kept(seen_shapes):
    x = keras.Input(batch_shape=(8, None, 4), name="x")
    model = keras.Model(x, keras.layers.GlobalAveragePooling1D(name="gap")(keras.layers.Dense(4, name="d")(x)))
    AutoInit(sequence_length=6).initialize_model(model)
    assert seen_shapes["gap"] == [(8, 6, 4)]
