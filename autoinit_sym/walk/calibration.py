"""Calibration on the actual draw: one forward pass that rescales each weighted layer so the
pre-activation variance measured on this draw equals its target.

AutoInit's scales are expectations over weight draws; one draw of a finite-width network
drifts from them, and unstable variance maps (deep SiLU or GELU stacks) amplify the drift.
Calibration walks the graph once in topological order on one batch (Gaussian samples of the
input statistics, or the user's data): at each weighted layer it runs the layer with its
activation switched off, measures the variance of the weighted sum W x over the batch (the
bias is left out: it is not rescaled), multiplies the layer's kernel by
f = sqrt((target - Var(b)) / Var(W x)), and runs the layer again so that everything after
it sees the calibrated output. The cost is about two evaluations of each weighted layer and
one of every other layer. A layer called at several sites is calibrated at its first call.
Recurrent and attention layers, whose kernels do not map to one pre-activation, keep their
analytic scale (factor 1). A factor far from 1 points at an unstable variance map or a
wrong rule; :func:`flagged` lists them.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import keras
import numpy as np

from autoinit_sym.walk.graph import ModelGraph, input_values, invoke
from autoinit_sym.walk.monte_carlo import gaussian_rows

KERNELS = ("pointwise_kernel", "depthwise_kernel", "kernel")
"""Kernel attributes, in the order the last stage of a layer is found (a separable
convolution's pointwise kernel is its last stage)."""
FLAG_RATIO = 1.5
"""Factors outside [1 / FLAG_RATIO, FLAG_RATIO] are flagged."""
ROWS, MIN_ROWS, ELEMENTS = 1024, 32, 2**19
"""Calibration batch without data: up to ROWS rows (30-layer MLPs of width 128 then stay within
[0.8, 1.25] on fresh batches), fewer for large inputs (about ELEMENTS input values), at least
MIN_ROWS."""
VARIANCE_FLOOR = 1e-30
"""A weighted sum with a measured variance below this is left alone (a dead input)."""


def calibrated_kernel(layer: Any) -> Any:
    """The kernel a calibration rescales: the layer's last weighted stage, None if it has none
    or is not a plain weighted layer (recurrent cells and attention keep theirs)."""
    if isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional, keras.layers.MultiHeadAttention)):
        return None
    if not hasattr(layer, "activation"):
        return None
    return next((getattr(layer, name) for name in KERNELS if getattr(layer, name, None) is not None), None)


def _weighted_sum_variance(layer: Any, node: Any, inputs: list[Any], training: bool) -> tuple[float, float]:
    """(Var(W x), Var(b)) over the batch and all output elements, with the activation off."""
    activation = layer.activation
    layer.activation = keras.activations.linear
    try:
        (pre,) = invoke(layer, node, inputs, training)[:1]
    finally:
        layer.activation = activation
    values = np.asarray(keras.ops.convert_to_numpy(pre), dtype=np.float64)
    bias = getattr(layer, "bias", None)
    if bias is None:
        return float(values.var()), 0.0
    b = np.asarray(keras.ops.convert_to_numpy(bias), dtype=np.float64)
    b_full = np.broadcast_to(b, values.shape) if b.shape == values.shape[-b.ndim:] else np.zeros_like(values)
    return float((values - b_full).var()), float(b_full.var())


def calibrate(graph: ModelGraph, inputs: Sequence[Any], target: float, training: bool = True,
              skip: set[int] = frozenset()) -> dict[str, float]:
    """Rescale every plain weighted layer of ``graph`` (module docstring) but those in ``skip``
    (id(layer): kept layers) on the batch ``inputs`` (one array per model input); returns the
    factor applied per layer-call key. Every kernel is restored if anything fails, so the model
    ends calibrated or as it was."""
    values = dict(zip(graph.inputs, inputs))
    factors: dict[str, float] = {}
    seen: set[int] = set()
    saved: list[tuple[Any, np.ndarray]] = []
    try:
        for call in graph.calls:
            if call.submodel:
                continue
            layer, ins = call.operation, [values[s] for s in call.inputs]
            kernel = calibrated_kernel(layer) if id(layer) not in seen | skip else None
            if kernel is not None:
                seen.add(id(layer))
                weighted, bias_var = _weighted_sum_variance(layer, call.node, ins, training)
                factor = math.sqrt((target - bias_var) / weighted) \
                    if weighted > VARIANCE_FLOOR and target > bias_var else 1.0
                if math.isfinite(factor) and factor != 1.0:
                    old = keras.ops.convert_to_numpy(kernel)
                    new = (np.asarray(old, dtype=np.float64) * factor).astype(old.dtype)
                    if not np.all(np.isfinite(new)):
                        raise ValueError(f"calibrating layer {layer.name!r} would write non-finite weights "
                                         f"(factor {factor:.3g}); nothing was changed")
                    saved.append((kernel, old))
                    kernel.assign(new)
                factors[call.key] = factor if math.isfinite(factor) else 1.0
            values.update(zip(call.outputs, invoke(layer, call.node, ins, training)))
    except BaseException:
        for kernel, old in reversed(saved):
            kernel.assign(old)
        raise
    return factors


def calibration_batch(graph: ModelGraph, means: Sequence[float], variances: Sequence[float],
                      seed: int | None = None) -> list[np.ndarray]:
    """Gaussian rows of the input statistics, one array per model input (integer and boolean
    inputs: the ids and masks ``walk.graph.input_values`` says they hold): :data:`ROWS` rows at
    most, fewer for large inputs so one input holds about :data:`ELEMENTS` values (at least
    :data:`MIN_ROWS` rows)."""
    per_row = sum(math.prod(int(d) for d in shape[1:]) for shape in graph.input_shapes)
    rows = int(min(ROWS, max(MIN_ROWS, ELEMENTS // max(per_row, 1))))
    rng = np.random.default_rng(0 if seed is None else seed)
    return [gaussian_rows(rng, rows, shape, dtype, mean, var, values) for shape, dtype, mean, var, values
            in zip(graph.input_shapes, graph.input_dtypes, means, variances, input_values(graph))]


def flagged(factors: dict[str, float], ratio: float = FLAG_RATIO) -> dict[str, float]:
    """The factors outside [1 / ratio, ratio]."""
    return {key: f for key, f in factors.items() if not 1.0 / ratio <= f <= ratio}
