"""Integer and boolean inputs (token ids, masks) travel beside the float signal with the values
they hold (TensorState.discrete): probes and samples draw valid ids and masks, not Gaussian
floats."""
import logging

import keras
import numpy as np
import pytest

from autoinit_sym import AutoInit
from autoinit_sym.statistics.state import DiscreteValues
from autoinit_sym.walk.graph import build_graph, input_values, run_graph
from autoinit_sym.walk.monte_carlo import gaussian_rows

VOCABULARY, LENGTH, WIDTH = 50, 12, 64


class Masked(keras.layers.Layer):
    """Zeroes the masked positions of a sequence (mask: boolean)."""

    def call(self, x, mask):
        return x * keras.ops.expand_dims(keras.ops.cast(mask, x.dtype), -1)


def masked_model() -> keras.Model:
    ids = keras.Input((LENGTH,), dtype="int32", name="ids")
    mask = keras.Input((LENGTH,), dtype="bool", name="keep")
    counts = keras.Input((LENGTH,), dtype="int32", name="counts")
    h = Masked(name="masked")(keras.layers.Embedding(VOCABULARY, WIDTH, name="embed")(ids), mask)
    h = keras.layers.Dense(WIDTH, activation="relu", name="dense")(h)
    c = keras.layers.Dense(WIDTH, name="count_dense")(keras.ops.cast(keras.ops.expand_dims(counts, -1), "float32"))
    return keras.Model([ids, mask, counts], keras.layers.Add(name="sum")([h, c]))


def test_input_values_ids_masks_and_other_integers():
    graph = build_graph(masked_model())
    assert input_values(graph) == [DiscreteValues("int32", 0, VOCABULARY), DiscreteValues("bool", 1, 2),
                                   DiscreteValues("int32", 0, 2)]


def test_rows_hold_valid_ids_and_masks():
    rng = np.random.default_rng(0)
    ids = gaussian_rows(rng, 500, (None, LENGTH), "int32", 0.0, 1.0, DiscreteValues("int32", 0, VOCABULARY))
    assert ids.dtype == np.int32 and ids.min() == 0 and ids.max() == VOCABULARY - 1
    assert gaussian_rows(rng, 4, (None, LENGTH), "bool", 0.0, 1.0).all()


def test_integer_input_model_tracks_the_real_model():
    """Embedding -> mask (traced: cast, expand, multiply) -> Dense; counts cast to float -> Dense:
    predictions against the arithmetic mean over 8 seeded draws of the real model on the inputs'
    values (ids uniform below the vocabulary, mask all True, counts 0 or 1)."""
    runs, estimates = [], None
    for draw in range(8):
        keras.utils.set_random_seed(300 + draw)
        model, estimates = AutoInit(weight_init_config={"seed": draw}).initialize_model(
            masked_model(), return_estimates=True)
        graph = build_graph(model)
        rng = np.random.default_rng(draw)
        inputs = [gaussian_rows(rng, 256, shape, dtype, 0.0, 1.0, values) for shape, dtype, values
                  in zip(graph.input_shapes, graph.input_dtypes, input_values(graph))]
        values = run_graph(graph, inputs)
        runs.append({call.key: np.asarray(keras.ops.convert_to_numpy(values[call.outputs[0]]), np.float64)
                     for call in graph.calls})
    assert estimates["masked"].method != "probe"
    for key in ("masked", "dense", "count_dense", "sum"):
        measured_var = np.mean([run[key].var() for run in runs])
        measured_mean = np.mean([run[key].mean() for run in runs])
        assert measured_var == pytest.approx(estimates[key].var, rel=0.1), key
        assert abs(measured_mean - estimates[key].mean) <= 0.1 * np.sqrt(estimates[key].var), key


class Lookup(keras.layers.Layer):
    """Rows of a table of VOCABULARY entries by id; a check on the ids' values (Python control
    flow) keeps it from being traced, so it is probed: with ids beyond the table it fails."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.input_dim = VOCABULARY

    def build(self, input_shape):
        self.table = self.add_weight(shape=(VOCABULARY, 16), initializer=keras.initializers.RandomNormal(0.5, 2.0))

    def call(self, ids):
        if keras.ops.max(ids) >= VOCABULARY:
            raise ValueError("id out of range")
        return keras.ops.take(self.table, ids, axis=0)

    def compute_output_shape(self, input_shape):
        return (*input_shape, 16)


def test_probe_draws_ids_within_the_vocabulary(caplog):
    ids = keras.Input((LENGTH,), dtype="int32", name="ids")
    model = keras.Model(ids, keras.layers.Dense(8, name="head")(Lookup(name="lookup")(ids)))
    with caplog.at_level(logging.WARNING):
        model, estimates = AutoInit().initialize_model(model, return_estimates=True)
    table = np.asarray(keras.ops.convert_to_numpy(model.get_layer("lookup").table), np.float64)
    assert estimates["lookup"].method == "probe"
    assert estimates["lookup"].mean == pytest.approx(table.mean(), abs=0.05 * table.std())
    assert estimates["lookup"].var == pytest.approx(table.var(), rel=0.05)
