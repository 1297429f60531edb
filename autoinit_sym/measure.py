"""Measure every layer call's output statistics in a real model under Gaussian input.

Each model input is drawn iid N(mean, var) (integer and boolean inputs: the ids and masks
``walk.graph.input_values`` says they hold), the model runs call by call
(``autoinit_sym.walk.graph.run_graph``, nested models and the calls traced inside layers
without a rule included, ``training=True`` by default so dropout and noise layers are
active), and
the mean and variance over all elements of every call's output(s) are accumulated in
float64. Keys match AutoInit's estimates.
"""
from __future__ import annotations

from typing import Any

import keras
import numpy as np

from autoinit_sym.walk.graph import Call, build_graph, input_values, run_graph
from autoinit_sym.walk.loading import input_statistics, load_model
from autoinit_sym.walk.monte_carlo import RunningMoments, gaussian_rows
from autoinit_sym.walk.tracing import open_layers
from autoinit_sym.walk.walker import WalkContext, opens


def measure(model: Any, input_mean: Any = 0.0, input_var: Any = 1.0, samples: int = 1024,
            seed: int = 0, training: bool = True, batch_size: int = 256,
            ) -> dict[str, tuple[float, float] | tuple[tuple[float, ...], tuple[float, ...]]]:
    """Layer-call key -> (mean, var) of its output measured on ``samples`` Gaussian rows.

    ``input_mean`` / ``input_var`` are given as for AutoInit (one number, a list, or a
    dict by input name). A call with several outputs maps to (means, vars) tuples."""
    model = load_model(model)
    graph = build_graph(model)
    open_layers(graph, opens(WalkContext()))  # the calls inside layers without a rule, as AutoInit walks them
    means, variances = input_statistics(graph, input_mean, input_var)
    for shape in graph.input_shapes:
        if any(d is None for d in shape[1:]):
            raise ValueError(f"measure needs fully known input shapes, got {shape}")
    rng = np.random.default_rng(seed)
    moments: dict[str, list[RunningMoments]] = {}

    def accumulate(call: Call, outputs: list[Any]) -> None:
        accumulators = moments.setdefault(call.key, [RunningMoments() for _ in outputs])
        for acc, y in zip(accumulators, outputs):
            values = np.asarray(keras.ops.convert_to_numpy(y), dtype=np.float64)
            centre = float(values.mean())
            acc.add(values.size, centre, float(np.square(values - centre).sum()))

    done = 0
    while done < samples:
        rows = min(batch_size, samples - done)
        inputs = [gaussian_rows(rng, rows, shape, dtype, m, v, values) for shape, dtype, m, v, values
                  in zip(graph.input_shapes, graph.input_dtypes, means, variances, input_values(graph))]
        run_graph(graph, inputs, training=training, visit=accumulate)
        done += rows
    return {key: _pair(accs) for key, accs in moments.items()}


def _pair(accumulators: list[RunningMoments]) -> tuple:
    if len(accumulators) == 1:
        return float(accumulators[0].mean), float(accumulators[0].variance)
    return (tuple(float(a.mean) for a in accumulators), tuple(float(a.variance) for a in accumulators))
