"""LSUV, layer-sequential unit-variance initialization (Mishkin & Matas, ICLR 2016, "All you
need is a good init"): the data-driven baseline of the training benchmark.

Written from the paper's description of the method (its Algorithm 1):

1. Pre-initialize every convolution and fully connected layer with an orthonormal matrix
   (Saxe et al. 2014): the kernel, read as a fan_in x fan_out matrix, has orthonormal columns
   (or orthonormal rows when fan_in < fan_out).
2. For each of these layers in order from the input to the output: run a mini-batch forward,
   take the variance B of the layer's output over the batch (before its nonlinearity; the
   paper's Caffe layers are separate from their activations), and scale the layer's weights by
   sqrt(target / B) (the paper's W / sqrt(B) for target 1); repeat until |B - target| < tol
   or max_iterations scalings.

Biases are left as they are (zeros under Keras's defaults), so one scaling normally meets the
tolerance. The kernel is the only weight touched. Flat Functional and Sequential models of
Dense / convolution layers (those with a ``kernel`` and an ``activation``); a layer used at
several call sites is refused.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

TARGET, TOL, MAX_ITERATIONS = 1.0, 0.1, 10
"""The paper's T_var, Tol_var and T_max."""


def orthonormal(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A kernel of ``shape`` whose (prod(shape[:-1]) x shape[-1]) matrix has orthonormal
    columns, or rows when it is wide: the Q factor of a Gaussian matrix, signs fixed by R's
    diagonal so the draw is uniform over such matrices."""
    fan_out = int(shape[-1])
    fan_in = int(math.prod(shape[:-1]))
    tall = rng.standard_normal((max(fan_in, fan_out), min(fan_in, fan_out)))
    q, r = np.linalg.qr(tall)
    q = q * np.where(np.diag(r) < 0, -1.0, 1.0)
    matrix = q if fan_in >= fan_out else q.T
    return matrix.reshape(shape)


def weighted_layers(model: Any) -> list[Any]:
    """The layers LSUV initializes, in the model's (topological) layer order."""
    import keras

    layers = []
    for layer in model.layers:
        if isinstance(layer, keras.Model) and layer.weights:
            raise ValueError(f"lsuv: nested model {layer.name!r}; only flat models are supported")
        if getattr(layer, "kernel", None) is not None and hasattr(layer, "activation"):
            layers.append(layer)
    return layers


def lsuv(model: Any, batch: Any, target: float = TARGET, tol: float = TOL,
         max_iterations: int = MAX_ITERATIONS, seed: int | None = 0,
         training: bool = True) -> dict[str, dict[str, float]]:
    """Initialize ``model`` in place with LSUV on ``batch`` (an array, or a list of arrays in
    input order). Returns, per layer name, the number of scalings and the output variance
    before the first and after the last one."""
    import keras

    rng = np.random.default_rng(seed)
    layers = weighted_layers(model)
    for layer in layers:
        layer.kernel.assign(orthonormal(tuple(layer.kernel.shape), rng).astype(layer.kernel.dtype))
    report: dict[str, dict[str, float]] = {}
    for layer in layers:
        try:
            output = layer.output
        except (AttributeError, ValueError) as err:
            raise ValueError(f"lsuv: layer {layer.name!r} has no single output ({err})") from err
        upto = keras.Model(model.inputs[0] if len(model.inputs) == 1 else model.inputs, output)
        variance = initial = _output_variance(upto, layer, batch, training)
        scalings = 0
        while abs(variance - target) >= tol and scalings < max_iterations:
            if not (math.isfinite(variance) and variance > 0):
                raise ValueError(f"lsuv: layer {layer.name!r} output variance {variance!r} on the batch; "
                                 "cannot scale it to the target")
            kernel = np.asarray(keras.ops.convert_to_numpy(layer.kernel), dtype=np.float64)
            layer.kernel.assign((kernel * math.sqrt(target / variance)).astype(layer.kernel.dtype))
            scalings += 1
            variance = _output_variance(upto, layer, batch, training)
        report[layer.name] = {"scalings": scalings, "initial_var": initial, "final_var": variance}
    return report


def _output_variance(upto: Any, layer: Any, batch: Any, training: bool) -> float:
    """Variance over the batch and all elements of ``layer``'s output with its activation off."""
    import keras

    activation = layer.activation
    layer.activation = keras.activations.linear
    try:
        values = upto(batch, training=training)
    finally:
        layer.activation = activation
    return float(np.var(np.asarray(keras.ops.convert_to_numpy(values), dtype=np.float64)))
