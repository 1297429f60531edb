"""Statistics measured through the real layers where their weights are kept.

A kept (pretrained, frozen) layer is not described by AutoInit's rules: its weights are
whatever training made them. Before the walk, one batch (the user's data, or Gaussian samples
of the input statistics) runs forward through every call whose value follows from the batch
alone: calls of kept layers and weightless calls (activations, pooling, reshapes) whose
inputs are all known this way. Each such call's output record is measured on the batch:

- mean and variance over every element;
- for a tensor with positions (axes 1..-2), the position-shared variance
  Var_{b,c}(m_bc) - w / n and its per-sample part mean_c Var_b(m_bc) - w / n, with m_bc the
  mean over the n positions of sample b, channel c and w the mean within-(b, c) variance.

The walk takes these records for those calls; everything after them is estimated by the rules
(and initialized) for what the kept layers really emit. A kept layer downstream of a layer
that is being initialized is probed on Gaussian samples instead (walk/probe.py).
"""
from __future__ import annotations

from typing import Any, Sequence

import keras
import numpy as np

from autoinit_sym.statistics.state import TensorState
from autoinit_sym.walk.graph import ModelGraph, invoke

ELEMENTS, MAX_ROWS = 2**21, 256
"""Rows of the batch run forward: at most MAX_ROWS, fewer for large inputs (about ELEMENTS
input values in all)."""


def rows_for(graph: ModelGraph) -> int:
    """How many batch rows to run forward for ``graph`` (see :data:`ELEMENTS`)."""
    per_row = sum(int(np.prod([int(d) for d in shape[1:]])) for shape in graph.input_shapes)
    return int(min(MAX_ROWS, max(1, ELEMENTS // max(per_row, 1))))


def measured_record(value: Any) -> TensorState:
    """The record of one tensor measured over a batch (module docstring)."""
    y = np.asarray(keras.ops.convert_to_numpy(value), dtype=np.float64)
    mean, var = float(y.mean()), float(y.var())
    if y.ndim < 3 or y.shape[0] < 2:
        return TensorState(mean, var)
    cells = y.reshape(y.shape[0], -1, y.shape[-1])  # (batch, positions, channels)
    n = cells.shape[1]
    means = cells.mean(axis=1)
    within = float(cells.var(axis=1).mean()) / n
    shared = min(max(float(means.var()) - within, 0.0), var)
    sample = min(max(float(means.var(axis=0).mean()) - within, 0.0), shared)
    return TensorState(mean, var, shared, sample)


def measured_calls(graph: ModelGraph, batch: Sequence[Any], kept: set[int],
                   training: bool = True) -> dict[str, list[TensorState]]:
    """Layer-call key -> measured output records for every call whose value follows from
    ``batch`` (one array per model input) through kept (id in ``kept``) or weightless layers."""
    if not kept:
        return {}
    values = dict(zip(graph.inputs, batch))
    records: dict[str, list[TensorState]] = {}
    for call in graph.calls:
        if call.submodel or not all(s in values for s in call.inputs):
            continue
        layer = call.operation
        if getattr(layer, "weights", None) and id(layer) not in kept:
            continue
        outputs = invoke(layer, call.node, [values[s] for s in call.inputs], training)
        values.update(zip(call.outputs, outputs))
        records[call.key] = [measured_record(y) for y in outputs]
    return records
