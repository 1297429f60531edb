"""Layers without a rule are opened by tracing their call (walk/tracing.py): their inner calls
are estimated and initialized, checked against Gaussian noise through the real initialized
model (arithmetic mean over independently seeded draws); what cannot be traced is probed with
a warning; the user's model is left as it was."""
import logging

import keras
import numpy as np
import pytest

from autoinit_sym import AutoInit
from autoinit_sym.walk import walker
from autoinit_sym.walk.graph import build_graph, run_graph
from autoinit_sym.walk.monte_carlo import RunningMoments
from autoinit_sym.walk.tracing import open_layers
from helpers import model_state

DRAWS = 8


class Block(keras.layers.Layer):
    """A residual block: LayerNorm(x + Dense(Dense_relu(x)))."""

    def __init__(self, width: int, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(2 * width, activation="relu", name="hidden")
        self.project = keras.layers.Dense(width, name="project")
        self.norm = keras.layers.LayerNormalization(name="norm")

    def call(self, x):
        return self.norm(x + self.project(self.hidden(x)))


def block_model() -> keras.Model:
    x = keras.Input((48,), name="x")
    h = keras.layers.Dense(64, name="stem")(x)
    return keras.Model(x, keras.layers.Dense(32, name="head")(Block(64, name="block")(h)))


def opened_graph(model):
    """The model's graph with its rule-free layers opened, as initialize_model walks it."""
    graph = build_graph(model)
    open_layers(graph, walker.opens(walker.WalkContext()))
    return graph


def measured(model, mean: float, var: float, rows: int = 512, seed: int = 0) -> dict[str, list[tuple]]:
    """Call key -> [(mean, var) per output] of Gaussian rows N(mean, var) through the real model."""
    graph = opened_graph(model)
    shape = (rows,) + tuple(graph.input_shapes[0][1:])
    x = np.random.default_rng(seed).normal(mean, np.sqrt(var), shape).astype("float32")
    out: dict[str, list[tuple]] = {}

    def visit(call, outputs):
        pairs = []
        for y in outputs:
            values = np.asarray(keras.ops.convert_to_numpy(y), dtype=np.float64)
            acc = RunningMoments()
            acc.add(values.size, float(values.mean()), float(np.square(values - values.mean()).sum()))
            pairs.append((acc.mean, acc.variance))
        out[call.key] = pairs

    run_graph(graph, [x], training=True, visit=visit)
    return out


@pytest.mark.parametrize("mean, var", [(0.0, 0.05), (0.0, 6.0), (2.0, 1.0)], ids=["narrow", "wide", "off-centre"])
def test_block_inner_calls_are_initialized_and_track_the_real_model(mean, var):
    """Every call inside the block is estimated where it is; the inner kernels are redrawn; the
    prediction of each inner call matches the arithmetic mean over 8 seeded draws of the real
    initialized model (variance within 10%, mean within 0.1 standard deviations)."""
    runs, estimates = [], None
    for draw in range(DRAWS):
        keras.utils.set_random_seed(100 + draw)
        model, estimates = AutoInit(weight_init_config={"seed": draw}, input_data_mean=mean,
                                    input_data_var=var).initialize_model(block_model(), return_estimates=True)
        runs.append(measured(model, mean, var, seed=draw))
    assert list(estimates) == ["stem", "hidden", "project", "add", "norm", "block", "head"]
    assert "block/hidden/kernel" in estimates["hidden"].weights
    assert "block/project/kernel" in estimates["project"].weights
    for key in ["hidden", "project", "add", "norm", "block", "head"]:
        measured_mean = np.mean([run[key][0][0] for run in runs])
        measured_var = np.mean([run[key][0][1] for run in runs])
        assert measured_var == pytest.approx(estimates[key].var, rel=0.1), key
        assert abs(measured_mean - estimates[key].mean) <= 0.1 * np.sqrt(estimates[key].var) + 1e-6, key


def test_inner_kernels_are_drawn_at_the_estimated_spread():
    model, estimates = AutoInit(weight_init_config={"seed": 1}).initialize_model(block_model(), return_estimates=True)
    block = model.get_layer("block")
    for layer, key in ((block.hidden, "hidden"), (block.project, "project")):
        std = estimates[key].weights[layer.kernel.path]
        assert keras.ops.convert_to_numpy(layer.kernel).std() == pytest.approx(std, rel=0.05)


class Net(keras.Model):
    """A subclassed model: no functional graph, traced from the shape it was built with."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(256, activation="tanh", name="hidden")
        self.out = keras.layers.Dense(128, name="out")

    def call(self, x):
        return self.out(self.hidden(x) + 0.5)


def test_subclassed_model_is_traced_and_tracks_the_real_model():
    outputs, estimates = [], None
    for draw in range(DRAWS):
        keras.utils.set_random_seed(200 + draw)
        net = Net()
        net(np.zeros((1, 40), "float32"))
        net, estimates = AutoInit(weight_init_config={"seed": draw}, input_data_mean=1.0).initialize_model(
            net, return_estimates=True)
        x = np.random.default_rng(draw).normal(1.0, 1.0, (1024, 40)).astype("float32")
        outputs.append(keras.ops.convert_to_numpy(net(x)))
    assert list(estimates) == ["hidden", "add", "out", net.name]
    assert net.get_layer("out").kernel.path in estimates["out"].weights
    assert np.mean([y.var() for y in outputs]) == pytest.approx(estimates["out"].var, rel=0.1)
    assert abs(np.mean([y.mean() for y in outputs])) <= 0.1 * np.sqrt(estimates["out"].var)


class Branching(keras.layers.Layer):
    """Python control flow on the values: cannot be traced (it declares its output shape, so
    Keras builds the model without running it symbolically)."""

    def call(self, x):
        if keras.ops.mean(x) > 0:
            return 2.0 * x
        return x

    def compute_output_shape(self, input_shape):
        return input_shape


def test_layer_with_control_flow_on_values_is_probed_with_one_warning(caplog):
    x = keras.Input((32,))
    model = keras.Model(x, keras.layers.Dense(16, name="head")(Branching(name="branching")(x)))
    with caplog.at_level(logging.WARNING):
        _, estimates = AutoInit(input_data_mean=1.0).initialize_model(model, return_estimates=True)
    assert estimates["branching"].method == "probe"
    assert estimates["branching"].mean == pytest.approx(2.0, rel=0.05)
    warnings = [r.getMessage() for r in caplog.records if "branching" in r.getMessage()]
    assert len(warnings) == 1 and "could not be opened by tracing" in warnings[0], warnings


class Causal(keras.layers.Layer):
    """Masks a sequence with a causal mask broadcast to the batch, then flattens it: the traced
    nodes hold the batch size as a constant argument (the mask) and on an operation (the
    reshape's target shape)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(16, name="inner")

    def call(self, x):
        batch, length = keras.ops.shape(x)[0], keras.ops.shape(x)[1]
        lower = keras.ops.tril(keras.ops.ones((length, length)))
        mask = keras.ops.broadcast_to(lower[None], (batch, length, length))
        return keras.ops.reshape(keras.ops.matmul(mask, self.dense(x)) / float(length), (batch, length * 16))


def causal_model() -> keras.Model:
    x = keras.Input((6, 8))
    return keras.Model(x, keras.layers.Dense(4, name="head")(Causal(name="causal")(x)))


def test_traced_graph_runs_at_any_batch_size():
    model = causal_model()
    graph = opened_graph(model)
    assert any(call.site is not None for call in graph.calls)
    for rows in (3, 7):
        x = np.random.default_rng(rows).normal(size=(rows, 6, 8)).astype("float32")
        values = run_graph(graph, [x], training=False)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(values[graph.outputs[0]]),
                                   keras.ops.convert_to_numpy(model(x)), rtol=1e-5, atol=1e-6)


def test_model_config_summary_and_nodes_unchanged_by_tracing():
    model = causal_model()
    def state():
        return model_state(model)

    before = state()
    graph = opened_graph(model)
    run_graph(graph, [np.zeros((5, 6, 8), "float32")])  # retraces at batch 5
    assert state() == before
    AutoInit().initialize_model(model)
    assert state()[1:] == before[1:]  # the config differs only by the initializers written
    assert model.get_config()["layers"][1]["config"] == before[0]["layers"][1]["config"]


class CachedAttention(keras.layers.MultiHeadAttention):
    """Takes a ``cache`` keyword that MultiHeadAttention.compute_output_spec does not know."""

    def call(self, query, value, key=None, cache=None, **kwargs):
        return super().call(query, value, key, **kwargs)


class Attending(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.attention = CachedAttention(2, 8, name="attention")

    def call(self, x):
        return x + self.attention(x, x, cache=None)


def test_inner_layer_whose_output_spec_rejects_its_arguments_is_traced_generically():
    x = keras.Input((5, 16))
    model = keras.Model(x, Attending(name="attending")(x))
    _, estimates = AutoInit().initialize_model(model, return_estimates=True)
    assert estimates["attention"].role == "initialized"
    assert estimates["attending"].method != "probe"


def test_frozen_layer_inside_an_opened_block_keeps_its_weights():
    model = block_model()
    block = model.get_layer("block")
    block.hidden.trainable = False
    frozen = keras.ops.convert_to_numpy(block.hidden.kernel).copy()
    model, estimates = AutoInit().initialize_model(model, return_estimates=True)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(block.hidden.kernel), frozen)
    assert estimates["hidden"].role == "kept" and estimates["project"].role == "initialized"


class Pooled(keras.layers.Layer):
    """An EinsumDense that declares an unknown sequence axis, then a softmax over that axis (its
    rule needs the size): inside a trace the size comes from the real call."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.project = keras.layers.EinsumDense("abc,cd->abd", output_shape=(None, 16), name="project")
        self.softmax = keras.layers.Softmax(axis=1, name="softmax")

    def call(self, x):
        return self.softmax(self.project(x))


def test_sizes_an_inner_layer_declares_unknown_are_taken_from_its_call():
    x = keras.Input((10, 8))
    model = keras.Model(x, Pooled(name="pooled")(x))
    _, estimates = AutoInit().initialize_model(model, return_estimates=True)
    assert estimates["project"].role == "initialized"
    assert estimates["softmax"].mean == pytest.approx(0.1)  # 10 positions share each channel's mass
