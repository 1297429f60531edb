"""Recurrent estimators: Gaussian sequences through the real initialized layer (training mode)."""
import math

import keras
import numpy as np
import pytest
from keras import layers

from autoinit_sym.estimators.base import EstimationContext, WeightInitConfig
from autoinit_sym.estimators.rnn import (DEFAULT_TIMESTEPS, RecurrentEstimator, input_cells,
                                         recurrent_layers, sampling_setup)
from autoinit_sym.walk.weights import write_pending
from helpers import propagated, records

T, F, BATCH = 12, 8, 512


def initialize(layer, shape, mean, var, seed=0, extra_inputs=()):
    """Build ``layer`` on ``shape`` (+ initial states), estimate, write the weights."""
    inputs = [keras.Input(shape)] + [keras.Input(s) for s in extra_inputs]
    if extra_inputs:
        layer(inputs[0], initial_state=inputs[1:])
    else:
        layer(inputs[0])
    node = layer._inbound_nodes[0]
    context = EstimationContext(config=WeightInitConfig(seed=seed))
    shapes = [(None,) + tuple(shape)] + [(None,) + tuple(s) for s in extra_inputs]
    count = len(shapes)
    estimator = RecurrentEstimator(layer, context, shapes, None, node)
    prediction = propagated(estimator, [mean] * count, [var] * count)
    write_pending(context.pending.values(), "truncated_normal", False, context.seed_for)
    return prediction if isinstance(prediction, list) else [prediction], context


def measure(layer, shape, mean, var, extra_inputs=(), seed=5):
    rng = np.random.default_rng(seed)
    xs = [rng.normal(mean, math.sqrt(var), (BATCH,) + tuple(s)).astype("float32")
          for s in [shape, *extra_inputs]]
    if extra_inputs:
        out = layer(xs[0], initial_state=xs[1:], training=True)
    else:
        out = layer(xs[0], training=True)
    out = out if isinstance(out, (list, tuple)) else [out]
    return [keras.ops.convert_to_numpy(y).astype(np.float64) for y in out]


def assert_tracks(predictions, measured, var_tol=0.1):
    assert len(predictions) == len(measured)
    for (mean, var), y in zip(predictions, measured):
        assert y.var() == pytest.approx(var, rel=var_tol)
        assert y.mean() == pytest.approx(mean, abs=0.05 * math.sqrt(var) + 0.01)


LAYERS = {
    "simple_rnn_seq": lambda: layers.SimpleRNN(16, return_sequences=True),
    "gru_last": lambda: layers.GRU(16),
    "lstm_seq_state": lambda: layers.LSTM(16, return_sequences=True, return_state=True),
    "lstm_dropout": lambda: layers.LSTM(16, dropout=0.2, recurrent_dropout=0.1, return_sequences=True),
    "rnn_lstm_cell": lambda: layers.RNN(layers.LSTMCell(12), return_sequences=True),
    "rnn_stacked": lambda: layers.RNN(layers.StackedRNNCells([layers.GRUCell(8), layers.SimpleRNNCell(8)])),
    "gru_state": lambda: layers.GRU(8, return_state=True, go_backwards=True),
}


@pytest.mark.parametrize("mean, var", [(0.0, 0.01), (0.0, 1.0), (2.0, 0.25), (0.0, 25.0)])
@pytest.mark.parametrize("name", list(LAYERS))
def test_recurrent_layer_tracks_measurement(name, mean, var):
    layer = LAYERS[name]()
    predictions, _ = initialize(layer, (T, F), mean, var)
    assert_tracks(predictions, measure(layer, (T, F), mean, var))


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", None])
def test_bidirectional_merge_modes(merge_mode):
    layer = layers.Bidirectional(layers.GRU(8, return_sequences=True), merge_mode=merge_mode)
    predictions, context = initialize(layer, (T, F), 1.0, 0.5)
    assert len(context.pending) == 2  # both directions' input kernels
    assert_tracks(predictions, measure(layer, (T, F), 1.0, 0.5))


def test_bidirectional_with_states():
    layer = layers.Bidirectional(layers.LSTM(8, return_state=True))
    predictions, _ = initialize(layer, (T, F), 0.0, 1.0)
    assert len(predictions) == 5  # output, forward h and c, backward h and c
    assert_tracks(predictions, measure(layer, (T, F), 0.0, 1.0))


@pytest.mark.parametrize("make, shape", [
    (lambda: layers.ConvLSTM1D(4, 3, padding="same", return_sequences=True), (6, 10, 3)),
    (lambda: layers.ConvLSTM2D(4, 3, padding="same"), (5, 6, 6, 2)),
    (lambda: layers.ConvLSTM3D(2, 2), (4, 4, 4, 4, 2)),
])
def test_conv_lstm(make, shape):
    layer = make()
    predictions, context = initialize(layer, shape, 0.5, 2.0)
    [pending] = context.pending.values()
    assert pending.fan_in == float(np.prod(layer.cell.kernel.shape[:-1]))
    assert_tracks(predictions, measure(layer, shape, 0.5, 2.0))


def test_initial_state_inputs():
    layer = layers.LSTM(8, return_sequences=True)
    predictions, _ = initialize(layer, (T, F), 0.0, 1.0, extra_inputs=[(8,), (8,)])
    assert_tracks(predictions, measure(layer, (T, F), 0.0, 1.0, extra_inputs=[(8,), (8,)]))


def test_input_kernel_is_scaled_like_dense_and_recurrent_kernel_kept():
    layer = layers.LSTM(8)
    layer(keras.Input((T, F)))
    recurrent_before = keras.ops.convert_to_numpy(layer.cell.recurrent_kernel)
    _, context = initialize(layer, (T, F), 1.0, 3.0)
    [pending] = context.pending.values()
    assert pending.variable is layer.cell.kernel and pending.layer is layer.cell
    assert pending.stddev == pytest.approx(math.sqrt(1.0 / (F * (3.0 + 1.0))))
    assert np.array_equal(keras.ops.convert_to_numpy(layer.cell.recurrent_kernel), recurrent_before)
    assert isinstance(layer.cell.kernel_initializer, keras.initializers.TruncatedNormal)
    assert keras.ops.convert_to_numpy(layer.cell.kernel).std() == pytest.approx(pending.stddev, rel=0.15)


def test_stacked_cells_scale_only_the_first_kernel():
    layer = layers.RNN(layers.StackedRNNCells([layers.GRUCell(8), layers.GRUCell(8)]))
    layer(keras.Input((T, F)))
    assert input_cells(layer) == [layer.cell.cells[0]]


def test_reproducible_and_seeded():
    def estimate(seed):
        keras.utils.set_random_seed(1)
        layer = layers.GRU(8, return_sequences=True)  # a new auto-generated name every time
        return initialize(layer, (T, F), 0.0, 1.0, seed=seed)[0]

    assert estimate(0) == estimate(0)
    assert estimate(0) != estimate(1)


def test_standard_error_is_small():
    keras.utils.set_random_seed(2)
    layer = layers.LSTM(16, return_sequences=True)
    layer(keras.Input((T, F)))
    variances = []
    for seed in range(5):
        context = EstimationContext(config=WeightInitConfig(seed=seed))
        _, var = propagated(RecurrentEstimator(layer, context, [(None, T, F)]), [0.0], [1.0])
        variances.append(var)
    # Same weights up to the kernel draw; what varies is the draw and the sampled sequences.
    assert np.std(variances) / np.mean(variances) < 0.05


def test_unknown_time_dimension_uses_the_default_length():
    layer = layers.SimpleRNN(4, return_sequences=True)
    layer(keras.Input((None, F)))
    calls = []
    estimator = RecurrentEstimator(layer, EstimationContext(), [(None, None, F)])
    original = estimator._call

    def spy(clone, inputs):
        calls.append(tuple(inputs[0].shape))
        return original(clone, inputs)

    estimator._call = spy
    propagated(estimator, [0.0], [1.0])
    assert all(shape[1] == DEFAULT_TIMESTEPS for shape in calls)


def test_recurrent_layer_fed_by_another_samples_through_it():
    inputs = keras.Input((T, F))
    first = layers.LSTM(16, return_sequences=True)
    second = layers.GRU(16, return_sequences=True)
    second(first(inputs))
    context = EstimationContext()
    mean1, var1 = propagated(RecurrentEstimator(first, context, [(None, T, F)], None, first._inbound_nodes[0]
                                     ), [0.0], [1.0])
    assert len(context.sequence_samples) == 1
    mean2, var2 = propagated(RecurrentEstimator(second, context, [(None, T, 16)], None, second._inbound_nodes[0]
                                     ), [mean1], [var1])
    write_pending(context.pending.values(), "truncated_normal", False, context.seed_for)
    x = np.random.default_rng(0).normal(0, 1, (BATCH, T, F)).astype("float32")
    y = keras.ops.convert_to_numpy(second(first(x, training=True), training=True)).astype(np.float64)
    assert y.var() == pytest.approx(var2, rel=0.1)
    assert y.mean() == pytest.approx(mean2, abs=0.05 * math.sqrt(var2) + 0.01)


def test_missing_shapes_are_reported():
    layer = layers.GRU(4)
    with pytest.raises(ValueError, match="input shapes unknown"):
        propagated(RecurrentEstimator(layer, EstimationContext(), []), [0.0], [1.0])
    layer(keras.Input((T, F)))
    with pytest.raises(ValueError, match="unknown non-time"):
        propagated(RecurrentEstimator(layer, EstimationContext(), [(None, T, None)]), [0.0], [1.0])


def _state(layer):
    return [keras.ops.convert_to_numpy(v) for v in layer.variables]


@pytest.mark.parametrize("make", [
    lambda: layers.LSTM(8, dropout=0.3, recurrent_dropout=0.2, return_sequences=True, return_state=True),
    lambda: layers.GRU(8, go_backwards=True, return_state=True),
    lambda: layers.RNN(layers.StackedRNNCells([layers.GRUCell(8), layers.SimpleRNNCell(4)]),
                       return_sequences=True),
    lambda: layers.Bidirectional(layers.SimpleRNN(8, return_sequences=True, dropout=0.2), merge_mode="ave"),
    lambda: layers.ConvLSTM1D(3, 3, padding="same", return_sequences=True),
])
def test_direct_loop_matches_the_keras_loop(make):
    """Same weights and dropout seed state: the direct cell loop gives Keras's outputs."""
    layer = make()
    shape = (T, 10, 3) if isinstance(layer, layers.ConvLSTM1D) else (T, F)
    layer(keras.Input(shape))
    x = np.random.default_rng(0).normal(0, 1, (16,) + shape).astype("float32")
    before = _state(layer)
    with sampling_setup(layer, {}, direct=False):
        expected = measure_outputs(layer, x)
    with sampling_setup(layer, {}, direct=True):
        assert all("inner_loop" in vars(r) for r in recurrent_layers(layer))
        got = measure_outputs(layer, x)
    for e, g in zip(expected, got, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
    assert all(np.array_equal(a, b) for a, b in zip(before, _state(layer)))


def measure_outputs(layer, x):
    """The layer's outputs in training mode, as arrays. Keras's global seed is set first: on torch
    a dropout without its own seed draws its masks from torch's global generator, not from the
    layer's seed state, so two runs only see the same masks from the same global state."""
    keras.utils.set_random_seed(0)
    out = layer(x, training=True)
    return [keras.ops.convert_to_numpy(y) for y in (out if isinstance(out, (list, tuple)) else [out])]


def test_estimate_leaves_the_layer_untouched():
    """Weights, dropout seed states and settings are back after estimating; nothing is
    written until write_pending."""
    layer = layers.Bidirectional(layers.LSTM(8, dropout=0.2, return_sequences=True))
    layer(keras.Input((T, F)))
    before = _state(layer)
    context = EstimationContext()
    propagated(RecurrentEstimator(layer, context, [(None, T, F)]), [0.0], [1.0])
    assert all(np.array_equal(a, b) for a, b in zip(before, _state(layer)))
    assert not any("inner_loop" in vars(r) for r in recurrent_layers(layer))
    write_pending(context.pending.values(), "truncated_normal", False, context.seed_for)
    assert not np.array_equal(before[0], keras.ops.convert_to_numpy(layer.forward_layer.cell.kernel))


def test_estimate_failure_restores_the_layer():
    layer = layers.GRU(8, stateful=True)
    layer(keras.Input((T, F), batch_size=4))
    before = _state(layer)
    estimator = RecurrentEstimator(layer, EstimationContext(), [(4, T, F)])
    seen = []

    def failing(run_layer, inputs):
        seen.append((run_layer.stateful, keras.ops.convert_to_numpy(run_layer.cell.kernel)))
        raise RuntimeError("boom")

    estimator._call = failing
    with pytest.raises(RuntimeError, match="boom"):
        propagated(estimator, [0.0], [1.0])
    assert seen and seen[0][0] is False  # stateless while sampling ...
    assert not np.array_equal(seen[0][1], before[0])  # ... with the scheduled kernel
    assert layer.stateful and "inner_loop" not in vars(layer)
    assert all(np.array_equal(a, b) for a, b in zip(before, _state(layer)))


def test_sampled_kernel_is_the_written_kernel():
    layer = layers.SimpleRNN(8)
    layer(keras.Input((T, F)))
    context = EstimationContext(config=WeightInitConfig(seed=3))
    estimator = RecurrentEstimator(layer, context, [(None, T, F)])
    kernels = []
    original = estimator._call

    def spy(run_layer, inputs):
        kernels.append(keras.ops.convert_to_numpy(run_layer.cell.kernel))
        return original(run_layer, inputs)

    estimator._call = spy
    propagated(estimator, [0.0], [1.0])
    write_pending(context.pending.values(), "truncated_normal", False, context.seed_for)
    assert np.array_equal(kernels[0], keras.ops.convert_to_numpy(layer.cell.kernel))


def measured_shared(y):
    """Covariance between distinct positions of a channel, from the position means; for an
    output without positions, the variance of the channel means less their sampling variance."""
    if y.ndim == 2:
        return y.mean(axis=0).var() - y.var(axis=0).mean() / len(y)
    positions = int(np.prod(y.shape[1:-1]))
    means = y.mean(axis=tuple(range(1, y.ndim - 1)))
    return (positions * means.var() - y.var()) / (positions - 1)


@pytest.mark.parametrize("make, shape, mean", [
    (lambda: layers.LSTM(16, return_sequences=True), (T, F), 0.0),
    (lambda: layers.Bidirectional(layers.GRU(8, return_sequences=True)), (T, F), 1.0),
    (lambda: layers.ConvLSTM2D(4, 3, padding="same"), (5, 6, 6, 2), 0.5),
    (lambda: layers.SimpleRNN(16), (T, F), 1.0),
    (lambda: layers.GRU(8, return_sequences=True, return_state=True), (T, F), 0.5),
])
def test_position_shared_input_and_output(make, shape, mean):
    """Input x = mean + a + e with a per-(sample, channel) offset a ~ N(0, 0.8) common to
    all positions: the prediction and the shared_out of every output track the real layer
    on such input; outputs without positions (last output, states) share their per-channel
    offsets, constant over samples."""
    var, shared, batch = 1.0, 0.8, 2048  # few offsets per sample: measure on more samples
    keras.utils.set_random_seed(0)  # order-independent weights; seeds 0-5 all pass
    layer = make()
    layer(keras.Input(shape))
    context = EstimationContext()
    estimator = RecurrentEstimator(layer, context, [(None,) + shape])
    states = records(estimator, [mean], [var], shared=[shared])
    predicted = [(s.mean, s.var) for s in states]
    write_pending(context.pending.values(), "truncated_normal", False, context.seed_for)
    rng = np.random.default_rng(1)
    offset = rng.normal(0, math.sqrt(shared), (batch,) + (1,) * (len(shape) - 1) + shape[-1:])
    x = (mean + offset + rng.normal(0, math.sqrt(var - shared), (batch,) + shape)).astype("float32")
    outputs = layer(x, training=True)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    assert len(states) == len(predicted) == len(outputs)
    for (predicted_mean, predicted_var), shared_out, y in zip(predicted, [s.shared for s in states], outputs):
        y = keras.ops.convert_to_numpy(y).astype(np.float64)
        assert y.var() == pytest.approx(predicted_var, rel=0.1)
        assert y.mean() == pytest.approx(predicted_mean, abs=0.05 * math.sqrt(predicted_var) + 0.01)
        assert shared_out == pytest.approx(measured_shared(y), abs=0.1 * predicted_var)
