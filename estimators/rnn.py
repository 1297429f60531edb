"""Recurrent layers: SimpleRNN, GRU, LSTM, ConvLSTM1D/2D/3D, RNN over any cell, Bidirectional.

Initialization: the input kernel of every cell that reads the layer's input is set
like a Dense layer, Var(W) = signal_variance / (fan_in * E[x^2]) with fan_in the
number of input taps per gate unit (prod(kernel.shape[:-1])), so the input part of
every gate pre-activation has variance signal_variance whatever the input scale.
Recurrent kernels and biases keep their initializers (orthogonal recurrent kernels
preserve the norm of the bounded state; the gates' biases, e.g. LSTM's unit forget
bias, are design choices). Cells of a StackedRNNCells after the first read a hidden
state, not the input, and keep their kernels.

Output statistics: no tractable integral, so Monte Carlo through the layer itself
on seeded Gaussian sequences in training mode, with the scheduled kernels swapped in
(drawn by ``weights.draw`` exactly as they will be written) and every variable and
setting restored afterwards, also on error (:func:`sampling_setup`; building a clone
from its config cost more than the sampling). Every output of the call (sequences or last output, and each state with
``return_state``) gets its own (mean, var). Every sequence gives many output
elements, so far fewer sequences than ``recurrent_monte_carlo_samples`` suffice:
enough for :data:`OUTPUT_ELEMENTS` elements of the main output, between
:data:`MIN_SEQUENCES` and :data:`MAX_SEQUENCES`, in one batch.

Where it runs: the Gaussian sequences are drawn with ``keras.random`` and the statistics
reduced with ``keras.ops``, on the backend's device. On an accelerator the layer runs as Keras
runs it there (its own time loop, the fused cuDNN kernel where Keras uses one for LSTM and GRU).
On CPU, where a step through Keras ops costs about a millisecond of per-op overhead whatever the
batch, the time loop is replaced (:func:`direct_loop`): SimpleRNN, GRU and LSTM cells without
dropout step in NumPy (:func:`numpy_cell`, tens of microseconds a step), other cells through
their own ``call``. The benchmark text model (Conv1D, LSTM, Bidirectional GRU, SimpleRNN over 40
steps; ``tests/benchmarks/bench_init_cost.py``) then initializes in 0.8-1.1x Keras's build time
on 2 shared CPU cores, against 3.1-4.9x with every step through Keras ops (same processes).

Correlated inputs: a recurrent layer fed directly by another one's sequences runs on
that layer's Monte Carlo output (kept when it fits in CHUNK_BYTES), which keeps its
correlation over time. Otherwise the sequences carry the input's position-shared
variance c (``shared_in``, see ``estimators.base``): x = mean + a + e with a ~ N(0, c)
per (sample, channel), common to all time steps. Each output's own shared variance
(``shared_out``) is measured from the Monte Carlo run of the actual draw
(:class:`RecurrentStatistics`): from its per-(sample, channel) means over positions
(time, and space for ConvLSTM; channels last) where it has positions, else (last
output, states) as the variance of its per-channel means over the samples: offsets
constant over samples, which one draw of the next layer reads as a fixed bias, as
``estimators.base`` counts per-channel offsets as shared.
"""
from __future__ import annotations

import inspect
import math
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import keras
import numpy as np
from scipy import special

from autoinit_sym.walk.monte_carlo import (CHUNK_BYTES, OutputStatistics, RunningMoments, batch_statistics,
                                      gaussian_statistics)
from autoinit_sym.walk.weights import draw, weight_seed

from autoinit_sym.statistics.state import TensorState

from .base import MONTE_CARLO, LayerRule, moments_of
from .registry import rule_for
from .shapes import DEFAULT_TIMESTEPS
from .weighted import kernel_stddev

OUTPUT_ELEMENTS = 100_000
"""Output elements aimed at per estimate, in one batch of sequences. Measured relative standard
deviation of the variance estimate over 8 sampling seeds (fixed weights, NumPy loop): 0.4% for
LSTM(16) sequences of 12 steps (521 sequences), 1.0% for a GRU(16) last output and 0.7% for a
GRU(8) with states (1024 sequences), 0.35% for a SimpleRNN(32) last output, 0.75% for
ConvLSTM2D(4); 1.5% (LSTM, fed by pooled convolutions with per-channel shared variance), 0.3%
(Bidirectional GRU) and 0.6% (SimpleRNN) for the recurrent layers of the benchmark text model
(174 sequences). Twice the elements would cost about 25% more time on that model."""

MIN_SEQUENCES = 128
MAX_SEQUENCES = 1024


def _first(outputs: Any) -> Any:
    return outputs[0] if isinstance(outputs, (list, tuple)) else outputs


def input_cells(layer: Any) -> list[Any]:
    """The cells of ``layer`` whose kernel reads the layer's input (both directions of a
    Bidirectional; the first cell of a StackedRNNCells)."""
    if isinstance(layer, keras.layers.Bidirectional):
        return input_cells(layer.forward_layer) + input_cells(layer.backward_layer)
    cell = getattr(layer, "cell", None)
    if isinstance(cell, keras.layers.StackedRNNCells):
        cell = cell.cells[0]
    has_kernel = all(hasattr(cell, a) for a in ("kernel", "recurrent_kernel", "kernel_initializer"))
    return [cell] if has_kernel else []


def _sample_shapes(shapes: list[tuple], name: str) -> list[tuple[int, ...]]:
    """Per-sample shapes (batch dimension dropped); an unknown time axis becomes DEFAULT_TIMESTEPS."""
    out = []
    for shape in shapes:
        dims = list(shape[1:])
        if dims and dims[0] is None:
            dims[0] = DEFAULT_TIMESTEPS
        if any(d is None for d in dims):
            raise ValueError(f"recurrent layer {name!r}: input shape {shape} has unknown "
                             f"non-time dimensions; Monte Carlo needs them")
        out.append(tuple(int(d) for d in dims))
    return out


@contextmanager
def sampling_setup(layer: Any, values: dict[int, np.ndarray], direct: bool) -> Iterator[None]:
    """``layer`` itself set up for Monte Carlo, restored on exit whatever happens: the
    scheduled weights assigned (``values``: id(variable) -> array), its recurrent layers
    stateless and, with ``direct``, looping over time through :func:`direct_loop`. The
    assigned weights and every non-trainable variable (dropout seed states, anything a
    training-mode call may update) get their saved values back, so the model is left
    as it was; the other weights are only read, and are not copied."""
    variables = [v for v in layer.variables if id(v) in values or not v.trainable]
    saved = [keras.ops.convert_to_numpy(v) for v in variables]
    recurrent = recurrent_layers(layer)
    stateful = [r.stateful for r in recurrent]
    replaced: list[Any] = []
    try:
        for variable in variables:
            if id(variable) in values:
                variable.assign(values[id(variable)])
        for r in recurrent:
            r.stateful = False
            if direct and "inner_loop" not in vars(r):  # leave a user's own loop alone
                r.inner_loop = direct_loop(r)
                replaced.append(r)
        yield
    finally:
        for r, was_stateful in zip(recurrent, stateful):
            r.stateful = was_stateful
        for r in replaced:
            del r.inner_loop
        for variable, value in zip(variables, saved):
            variable.assign(value)


def direct_loop(layer: Any) -> Callable[..., tuple]:
    """A stand-in for ``layer.inner_loop`` (Keras's time loop, which RNN.call wraps with the
    initial states, dropout masks and output packing): a plain loop over the time steps, in
    NumPy where :func:`numpy_cell` knows the cell, else calling the cell's ``call`` directly,
    which skips the per-step layer-call and loop bookkeeping (~30% of a step on CPU). Unmasked
    inputs only; masked calls go to Keras."""
    keras_loop, cell = layer.inner_loop, layer.cell
    takes_training = "training" in inspect.signature(cell.call).parameters
    run_numpy = numpy_cell(cell)

    def inner_loop(sequences, initial_state, mask=None, training=False):
        if mask is not None:
            return keras_loop(sequences, initial_state, mask, training=training)
        states = list(initial_state) if isinstance(initial_state, (list, tuple)) else [initial_state]
        if run_numpy is not None:
            x = keras.ops.convert_to_numpy(sequences)
            outputs, states = run_numpy(x[:, ::-1] if layer.go_backwards else x,
                                        [keras.ops.convert_to_numpy(s) for s in states])
            sequence = np.stack(outputs, axis=1) if layer.return_sequences else outputs[-1]
            tensor = keras.ops.convert_to_tensor
            return tensor(outputs[-1]), tensor(sequence), [tensor(s) for s in states]
        steps = keras.ops.unstack(sequences, axis=1)
        outputs = []
        for step in reversed(steps) if layer.go_backwards else steps:
            if takes_training:
                output, states = cell.call(step, states, training=training)
            else:
                output, states = cell.call(step, states)
            states = list(states) if isinstance(states, (list, tuple)) else [states]
            outputs.append(output)
        sequence = keras.ops.stack(outputs, axis=1) if layer.return_sequences else outputs[-1]
        return outputs[-1], sequence, states

    return inner_loop


NUMPY_ACTIVATIONS: dict[Any, Callable[[np.ndarray], np.ndarray]] = {
    keras.activations.tanh: np.tanh,
    keras.activations.sigmoid: special.expit,
    keras.activations.relu: lambda x: np.maximum(x, 0.0, dtype=x.dtype),
    keras.activations.linear: lambda x: x,
}
"""NumPy versions of the Keras activations :func:`numpy_cell` runs (with their default arguments)."""

StepsFunction = Callable[[np.ndarray, list[np.ndarray]], tuple[list[np.ndarray], list[np.ndarray]]]


def numpy_cell(cell: Any) -> StepsFunction | None:
    """The time loop of a SimpleRNNCell, GRUCell or LSTMCell (exactly these classes, float32,
    without dropout, activations in :data:`NUMPY_ACTIVATIONS`) in NumPy, as Keras computes it:
    ``run(x, states)`` on inputs x of shape (batch, steps, features), in the order the steps are
    taken, returns each step's output and the last states. The input projection of all steps is
    one product; each step adds the recurrent one and the gates. On CPU a step then costs
    microseconds instead of a millisecond of per-op overhead through Keras. None for any other cell."""
    kind = type(cell)
    if kind not in (keras.layers.SimpleRNNCell, keras.layers.GRUCell, keras.layers.LSTMCell) \
            or cell.dropout or cell.recurrent_dropout or cell.compute_dtype != "float32":
        return None
    activation = NUMPY_ACTIVATIONS.get(cell.activation)
    gate = NUMPY_ACTIVATIONS.get(getattr(cell, "recurrent_activation", keras.activations.linear))
    if activation is None or gate is None:
        return None
    units, array = cell.units, keras.ops.convert_to_numpy

    def run(x: np.ndarray, states: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        kernel, recurrent = array(cell.kernel), array(cell.recurrent_kernel)
        bias = array(cell.bias) if cell.use_bias else None
        if kind is keras.layers.GRUCell and cell.reset_after and bias is not None:
            bias, recurrent_bias = bias[0], bias[1]
        else:
            recurrent_bias = None
        projected = x @ kernel if bias is None else x @ kernel + bias
        outputs, h = [], states[0]
        if kind is keras.layers.SimpleRNNCell:
            for t in range(x.shape[1]):
                h = activation(projected[:, t] + h @ recurrent)
                outputs.append(h)
            return outputs, [h]
        if kind is keras.layers.LSTMCell:
            c = states[1]
            for t in range(x.shape[1]):
                z = projected[:, t] + h @ recurrent
                c = gate(z[:, units:2 * units]) * c + gate(z[:, :units]) * activation(z[:, 2 * units:3 * units])
                h = gate(z[:, 3 * units:]) * activation(c)
                outputs.append(h)
            return outputs, [h, c]
        for t in range(x.shape[1]):  # GRU
            x_t = projected[:, t]
            if cell.reset_after:
                inner = h @ recurrent if recurrent_bias is None else h @ recurrent + recurrent_bias
            else:
                inner = h @ recurrent[:, :2 * units]
            z = gate(x_t[:, :units] + inner[:, :units])
            r = gate(x_t[:, units:2 * units] + inner[:, units:2 * units])
            if cell.reset_after:
                candidate = activation(x_t[:, 2 * units:] + r * inner[:, 2 * units:])
            else:
                candidate = activation(x_t[:, 2 * units:] + (r * h) @ recurrent[:, 2 * units:])
            h = z * h + (1 - z) * candidate
            outputs.append(h)
        return outputs, [h]

    return run


def recurrent_layers(layer: Any) -> list[Any]:
    """The RNN layers that run the loop: both directions of a Bidirectional, else the layer."""
    if isinstance(layer, keras.layers.Bidirectional):
        return [layer.forward_layer, layer.backward_layer]
    return [layer] if isinstance(layer, keras.layers.RNN) else []


def device_kind() -> str:
    """The kind of device ("cpu", "gpu", "cuda", "tpu", "mps", ...) on which the current backend
    places a new tensor, read from a tensor itself: TensorFlow's device string
    (".../device:CPU:0"), JAX's device platform, torch's device type. (``keras.distribution`` is
    None on torch, and lists devices the backend may not use.)"""
    probe = keras.ops.zeros(())
    backend = keras.backend.backend()
    if backend == "jax":
        return next(iter(probe.devices())).platform.lower()
    if backend == "torch":
        return probe.device.type.lower()
    if backend == "tensorflow":
        return probe.device.rsplit("device:", 1)[-1].split(":")[0].lower()
    return "cpu"  # NumPy: no accelerator


def direct_loop_pays() -> bool:
    """Loop directly only on CPU: on an accelerator Keras's own loop can use the fused
    cuDNN kernel for LSTM and GRU."""
    return device_kind() == "cpu"


def _with_offset(shapes: list[tuple[int, ...]], means: list[float], variances: list[float],
                 offset: float) -> tuple[list, list, list]:
    """Gaussian inputs (shapes, means, variances) for a sequence x = mean + a + e: e iid
    with variance var - offset, and one more input a ~ N(0, offset) of shape
    (1, ..., 1, channels), added to the sequence by the caller (channels last)."""
    if not offset:
        return shapes, means, variances
    return ([*shapes, (1,) * (len(shapes[0]) - 1) + shapes[0][-1:]], [*means, 0.0],
            [variances[0] - offset, *variances[1:], offset])


class RecurrentStatistics(OutputStatistics):
    """:class:`OutputStatistics` with positions, plus the per-channel moments of each output
    without positions (batch, channels), for :meth:`shared`."""

    def __init__(self) -> None:
        super().__init__(positions=True)
        self.channels: list[RunningMoments | None] = []

    def add(self, outputs: Any) -> list[Any]:
        outputs = super().add(outputs)
        if not self.channels:
            self.channels = [RunningMoments() if p < 2 else None for p in self.positions]
        for acc, y in zip(self.channels, outputs):
            if acc is not None:
                axes = tuple(range(len(y.shape) - 1))
                mean = keras.ops.mean(y, axis=axes)
                m2 = keras.ops.sum(keras.ops.square(y - mean), axis=axes)
                acc.add(int(np.prod(y.shape[:-1])), keras.ops.convert_to_numpy(mean).astype(np.float64),
                        keras.ops.convert_to_numpy(m2).astype(np.float64))
        return outputs

    def shared(self) -> list[float]:
        """Per output, clipped to [0, var]: the position-shared variance where it has
        positions, else the variance over channels of the channel means (each over n
        values) less their sampling variance, Var_c(mean_c) - avg_c(var_c) / n."""
        out = []
        for by_position, acc, (_, var) in zip(self.position_shared(), self.channels, self.result()):
            shared = (by_position if acc is None
                      else float(np.var(acc.mean)) - float(np.mean(acc.variance)) / acc.count)
            out.append(min(max(shared, 0.0), var))
        return out


@rule_for(keras.layers.RNN, keras.layers.Bidirectional)
class RecurrentEstimator(LayerRule):
    """Monte Carlo through the recurrent layer itself, with the scheduled kernels swapped
    in and restored afterwards (see the module docstring).
    Inputs: the sequence, then any initial states; all iid Gaussian, training mode."""

    method = MONTE_CARLO

    def propagate(self, inputs: Sequence[TensorState]) -> TensorState | list[TensorState]:
        means_in, vars_in = moments_of(inputs)
        if not self.input_shapes:
            raise ValueError(f"recurrent layer {self.layer.name!r}: input shapes unknown")
        second_moment = vars_in[0] + means_in[0] ** 2
        for cell in input_cells(self.layer):
            fan_in = float(np.prod(cell.kernel.shape[:-1]))
            std = kernel_stddev(self.signal_variance, fan_in, second_moment)
            # The owner is the cell: the RNN layer's initializer attributes are read-only views.
            self.set_initializer(cell.kernel, std, "kernel_initializer", fan_in, owner=cell)
        shapes = _sample_shapes(self.input_shapes, self.layer.name)
        row_elements = self._output_elements(shapes[0])
        sequences = min(self.weight_init_config.recurrent_monte_carlo_samples,
                        MAX_SEQUENCES,
                        max(MIN_SEQUENCES, math.ceil(OUTPUT_ELEMENTS / row_elements)))
        upstream = self._upstream_samples() if len(shapes) == 1 else None
        captured: list[Any] | None = [] if getattr(self.layer, "return_sequences", False) else None
        offset = min(max(inputs[0].shared, 0.0), vars_in[0]) if upstream is None else 0.0

        def run(*inputs):
            if offset:  # the drawn per-(sample, channel) offset, common to all positions
                inputs = (inputs[0] + inputs[-1],) + inputs[1:-1]
            outputs = self._call(self.layer, inputs)
            if captured is not None:
                captured.append(_first(outputs))
            return outputs

        description = f"AutoInit: {self.layer.name}"
        statistics = RecurrentStatistics()
        with sampling_setup(self.layer, self._scheduled_values(), direct_loop_pays()):
            if upstream is None:
                row_bytes = 4 * (sum(int(np.prod(s)) for s in shapes) + row_elements)
                stats = gaussian_statistics(run, *_with_offset(shapes, means_in, vars_in, offset),
                                            sequences, chunk_size=max(1, CHUNK_BYTES // row_bytes),
                                            seed=self.context.seed_for(
                                                "recurrent", self.context.call_positions.get(id(self.node))),
                                            description=description, statistics=statistics)
            else:
                stats = batch_statistics(run, [(batch,) for batch in upstream], description, statistics)
        if captured and sum(4 * int(np.prod(y.shape)) for y in captured) <= CHUNK_BYTES:
            self._record_samples(captured)
        # every step mixes the whole past: no border profile over time
        return [self.output(inputs, m, v, i, shared=shared, profile=None)
                for i, ((m, v), shared) in enumerate(zip(stats, statistics.shared()))]

    def _upstream_samples(self) -> list[Any] | None:
        """Output sequences kept from the Monte Carlo run of the recurrent layer that made
        this call's input, if any: sampling through them keeps the input's correlation
        over time, which iid Gaussian sequences would miss."""
        tensors = list(getattr(self.node, "input_tensors", None) or [])
        return self.context.sequence_samples.get(id(tensors[0])) if len(tensors) == 1 else None

    def _record_samples(self, batches: list[Any]) -> None:
        tensors = list(getattr(self.node, "output_tensors", None) or [])
        if tensors:
            self.context.sequence_samples[id(tensors[0])] = batches

    @staticmethod
    def _call(layer: Any, inputs: tuple) -> Any:
        if len(inputs) > 1:
            return layer(inputs[0], initial_state=list(inputs[1:]), training=True)
        return layer(inputs[0], training=True)

    def _scheduled_values(self) -> dict[int, np.ndarray]:
        """The values every pending write to one of this layer's weights will assign, kept on the
        pending write so that the write pass does not draw them again."""
        owned = {id(v) for v in self.layer.weights}
        distribution = self.weight_init_config.distribution
        return {key: draw(pending, distribution, weight_seed(self.context.seed_for, index), keep=True)
                for index, (key, pending) in enumerate(self.context.pending.items()) if key in owned}

    def _output_elements(self, shape: tuple[int, ...]) -> int:
        """Elements in one sample of the layer's first output."""
        output = self.layer.compute_output_shape((None,) + shape)
        while isinstance(output[0], (list, tuple)):
            output = output[0]
        return int(np.prod(output[1:]))
