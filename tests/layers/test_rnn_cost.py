"""The recurrent Monte Carlo's cost (issue 13, item 5): the NumPy time loop of the built-in cells
against Keras's own loop, and the accuracy the Monte Carlo batch keeps."""
import keras
import numpy as np
import pytest
from keras import layers

from autoinit_sym.estimators.base import EstimationContext, WeightInitConfig
from autoinit_sym.estimators.rnn import RecurrentEstimator, numpy_cell
from autoinit_sym.walk import weights
from helpers import propagated

T, F, BATCH = 9, 5, 32

CELLS = {
    "simple_rnn": lambda: layers.SimpleRNNCell(6),
    "simple_rnn_relu_no_bias": lambda: layers.SimpleRNNCell(6, activation="relu", use_bias=False),
    "gru": lambda: layers.GRUCell(6),
    "gru_reset_before": lambda: layers.GRUCell(6, reset_after=False),
    "gru_no_bias_linear": lambda: layers.GRUCell(6, use_bias=False, activation="linear"),
    "lstm": lambda: layers.LSTMCell(6),
    "lstm_relu_sigmoid": lambda: layers.LSTMCell(6, activation="relu", implementation=1),
}


def random_weights(layer, rng):
    """Every weight random (biases too, which their zero initializers would hide)."""
    for variable in layer.weights:
        variable.assign(rng.normal(0.0, 0.5, variable.shape).astype("float32"))


@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("go_backwards", [False, True])
def test_numpy_cell_matches_keras(name, go_backwards):
    """Outputs at every step and final states, from given initial states, as Keras computes them."""
    rng = np.random.default_rng(0)
    cell = CELLS[name]()
    layer = layers.RNN(cell, return_sequences=True, return_state=True, go_backwards=go_backwards)
    count = 2 if isinstance(cell, layers.LSTMCell) else 1
    x = rng.normal(0, 1, (BATCH, T, F)).astype("float32")
    states = [rng.normal(0, 1, (BATCH, 6)).astype("float32") for _ in range(count)]
    layer(x, initial_state=states)  # builds the weights
    random_weights(layer, rng)
    expected = [keras.ops.convert_to_numpy(y) for y in layer(x, initial_state=states)]
    run = numpy_cell(cell)
    outputs, last = run(x[:, ::-1] if go_backwards else x, states)
    np.testing.assert_allclose(np.stack(outputs, axis=1), expected[0], rtol=1e-5, atol=1e-5)
    for got, want in zip(last, expected[1:], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("make", [
    lambda: layers.LSTMCell(4, dropout=0.1),
    lambda: layers.GRUCell(4, recurrent_dropout=0.1),
    lambda: layers.GRUCell(4, activation="gelu"),
    lambda: layers.SimpleRNNCell(4, dtype="mixed_float16"),
    lambda: type("MyCell", (layers.SimpleRNNCell,), {})(4),
])
def test_other_cells_keep_the_keras_step(make):
    """Dropout, other activations, other dtypes and subclasses run the cell's own call."""
    cell = make()
    layers.RNN(cell)(keras.Input((T, F)))
    assert numpy_cell(cell) is None


def test_text_model_layers_never_step_through_keras(monkeypatch):
    """On CPU the Monte Carlo of LSTM, Bidirectional GRU and SimpleRNN layers runs no Keras cell step."""
    def refuse(*args, **kwargs):
        raise AssertionError("a Keras cell step ran")

    x = keras.Input((T, F))
    for layer in (layers.LSTM(8, return_sequences=True), layers.Bidirectional(layers.GRU(4, return_sequences=True)),
                  layers.SimpleRNN(4)):
        shape, x = tuple(x.shape), layer(x)
        for cell in (layers.LSTMCell, layers.GRUCell, layers.SimpleRNNCell):
            monkeypatch.setattr(cell, "call", refuse)
        mean, var = propagated(RecurrentEstimator(layer, EstimationContext(), [shape]), [0.0], [1.0])
        monkeypatch.undo()
        assert var > 0


@pytest.mark.parametrize("make, rel_std", [
    (lambda: layers.LSTM(16, return_sequences=True), 0.015),
    (lambda: layers.GRU(16), 0.025),
    (lambda: layers.SimpleRNN(32), 0.01),
])
def test_variance_estimate_keeps_its_documented_accuracy(make, rel_std):
    """Relative standard deviation of the variance estimate over 8 sampling seeds with the same
    weights (rnn.OUTPUT_ELEMENTS: 0.9% for LSTM(16) sequences, 1.3% for a GRU(16) last output,
    0.4% for a SimpleRNN(32) last output; bounds here leave room for the spread of 8 seeds)."""
    keras.utils.set_random_seed(0)
    layer = make()
    layer(keras.Input((12, 8)))
    variances = []
    for seed in range(8):
        context = EstimationContext(config=WeightInitConfig(seed=seed), weight_seed=0)  # same kernels
        variances.append(propagated(RecurrentEstimator(layer, context, [(None, 12, 8)]), [0.0], [1.0])[1])
    assert np.std(variances, ddof=1) / np.mean(variances) < rel_std


def test_scheduled_kernels_are_drawn_once(monkeypatch):
    """The Monte Carlo's draw of a recurrent kernel is the one written: no second draw."""
    drawn = []
    original = weights.sample
    monkeypatch.setattr(weights, "sample", lambda *args, **kwargs: drawn.append(args) or original(*args, **kwargs))
    layer = layers.Bidirectional(layers.GRU(8, return_sequences=True))
    layer(keras.Input((T, F)))
    context = EstimationContext()
    propagated(RecurrentEstimator(layer, context, [(None, T, F)]), [0.0], [1.0])
    weights.write_pending(context.pending.values(), "truncated_normal", False, context.seed_for)
    assert len(drawn) == len(context.pending) == 2  # the two directions' input kernels
    for pending in context.pending.values():
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(pending.variable), pending.kept[1])
