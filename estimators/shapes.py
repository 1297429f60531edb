"""Shape helpers the families share: axes, element counts, identical inputs, concatenation sizes."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

DEFAULT_TIMESTEPS = 16
"""The size AutoInit assumes, with a warning, for every unknown non-batch axis of the model's inputs
when ``input_shapes`` / ``sequence_length`` do not state it (``walk.loading.input_sizes``); every
call's shapes are re-inferred from it. Recurrent and attention rules fall back on it for a sequence
axis still unknown (a call whose shapes could not be traced)."""


def positive_axes(axis: int | Sequence[int], rank: int) -> list[int]:
    """``axis`` (an int or several, negative counting from the end) as non-negative indices."""
    return [a % rank for a in ([axis] if isinstance(axis, int) else axis)]


def elements_along(shape: Sequence[int | None], axes: Sequence[int]) -> int | None:
    """Number of elements spanned by ``axes`` of ``shape`` (None if one of them is unknown)."""
    dims = [shape[a] for a in axes]
    return None if any(d is None for d in dims) else int(np.prod(dims))


def identical_inputs(node: Any, count: int) -> list[list[int]]:
    """Indices of the inputs grouped by identity of their tensor (one group per distinct tensor)."""
    tensors = list(node.arguments.keras_tensors) if node is not None else []
    if len(tensors) != count:
        return [[i] for i in range(count)]
    groups: dict[int, list[int]] = {}
    for index, tensor in enumerate(tensors):
        groups.setdefault(id(tensor), []).append(index)
    return list(groups.values())


def concat_weights(shapes: Sequence[Sequence[int | None]], axis: int, count: int) -> list[float]:
    """Each input's size along ``axis`` (equal weights where a size is unknown)."""
    sizes = [shape[axis] if shape is not None and len(shape) > 0 else None for shape in shapes]
    if len(sizes) != count or any(s is None for s in sizes):
        return [1.0] * count
    return [float(s) for s in sizes]


def consuming_nodes(operation: Any, node: Any) -> list[Any]:
    """The nodes (calls) that take an output of ``node``, a call of ``operation``, as an input."""
    if node is None:
        return []
    outputs = {id(t) for t in node.outputs}
    return [n for n in operation._outbound_nodes if any(id(t) in outputs for t in n.arguments.keras_tensors)]


def producing_node(tensor: Any) -> Any:
    """The node (call) that made the Keras tensor ``tensor``, or None for an input."""
    history = getattr(tensor, "_keras_history", None)
    if history is None or history.operation is None:
        return None
    nodes = history.operation._inbound_nodes
    return nodes[history.node_index] if history.node_index < len(nodes) else None


def bernoulli_rate(state: Any) -> float | None:
    """P(x = 1) for a record (``TensorState``) of a tensor holding only 0 and 1 (a mask): mean f with
    variance f (1 - f); None for any other record."""
    f, var = state.mean, state.var
    if not 0.0 <= f <= 1.0 or abs(var - f * (1.0 - f)) > 1e-9 + 1e-3 * f * (1.0 - f):
        return None
    return f
