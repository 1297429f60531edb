"""Sample data given by the user: a few batches read into arrays per model input, and the
input statistics they imply.

``data`` may be a NumPy array (a model with one input), a list of arrays (input order, for a
model with several inputs), a dict of arrays by input name, a ``tf.data.Dataset`` or any
iterable of such batches; a batch that is an ``(x, y)`` or ``(x, y, weights)`` tuple
contributes its ``x``.
At most :data:`MAX_ROWS` rows are read: a few batches are enough for means and variances.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np

MAX_ROWS = 4096
"""Rows read from ``data`` at most (over all its batches)."""


def _is_array(value: Any) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype")


def _as_inputs(batch: Any, names: Sequence[str]) -> list[np.ndarray]:
    """One batch as one array per model input, in input order."""
    if isinstance(batch, Mapping):
        missing = [n for n in names if n not in batch]
        if missing:
            raise ValueError(f"a data batch by input name lacks {missing}; the model's inputs are {list(names)}")
        return [np.asarray(batch[n]) for n in names]
    if _is_array(batch):
        if len(names) != 1:
            raise ValueError(f"data given as one array, but the model has {len(names)} inputs {list(names)}; "
                             "give a list in input order or a dict by input name")
        return [np.asarray(batch)]
    if isinstance(batch, (list, tuple)):
        if len(names) > 1 and len(batch) == len(names) and all(_is_array(b) for b in batch):
            return [np.asarray(b) for b in batch]
        if 2 <= len(batch) <= 3:
            return _as_inputs(batch[0], names)  # (x, y) or (x, y, sample_weight)
    raise TypeError(f"cannot read a data batch of type {type(batch).__name__}; give a NumPy array, a list of "
                    "arrays in input order, a dict by input name, a tf.data.Dataset or an iterable of batches")


def _batches(data: Any, count: int) -> Iterable[Any]:
    """The batches of ``data`` for a model with ``count`` inputs: the value itself for an
    array, a dict, an ``(x, y)`` tuple or a list of ``count`` > 1 arrays; else its items."""
    if _is_array(data) or isinstance(data, Mapping):
        return [data]
    if isinstance(data, tuple) and 2 <= len(data) <= 3 and (_is_array(data[0]) or isinstance(data[0], Mapping)):
        return [data]
    if isinstance(data, (list, tuple)) and count > 1 and len(data) == count and all(_is_array(d) for d in data):
        return [tuple(data)]
    if hasattr(data, "as_numpy_iterator"):  # tf.data.Dataset
        return data.as_numpy_iterator()
    if isinstance(data, Iterable) and not isinstance(data, (str, bytes)):
        return data
    raise TypeError(f"data must be a NumPy array, a list of arrays in input order, a dict by input name, a "
                    f"tf.data.Dataset or an iterable of batches, got {type(data).__name__}")


def read_batches(data: Any, names: Sequence[str], max_rows: int = MAX_ROWS) -> list[list[np.ndarray]]:
    """Up to ``max_rows`` rows of ``data`` as batches, each a list of arrays in input order."""
    out: list[list[np.ndarray]] = []
    rows = 0
    for batch in _batches(data, len(names)):
        arrays = _as_inputs(batch, names)
        sizes = {a.shape[0] if a.ndim else 0 for a in arrays}
        if len(sizes) != 1 or 0 in sizes:
            raise ValueError(f"a data batch has inputs with different or zero row counts {sorted(sizes)}")
        take = min(sizes.pop(), max_rows - rows)
        out.append([a[:take] for a in arrays])
        rows += take
        if rows >= max_rows:
            break
    if not out:
        raise ValueError("data holds no batch")
    return out


def data_statistics(batches: Sequence[Sequence[np.ndarray]]) -> tuple[list[float], list[float]]:
    """Per input, the mean and variance over every element of every batch (float64); a
    non-finite value or a constant input is an error naming the input's position."""
    means, variances = [], []
    for index in range(len(batches[0])):
        values = np.concatenate([np.asarray(b[index], dtype=np.float64).ravel() for b in batches])
        if not np.all(np.isfinite(values)):
            raise ValueError(f"data for input {index} holds non-finite values")
        mean, var = float(values.mean()), float(values.var())
        if not var > 0:
            raise ValueError(f"data for input {index} is constant ({mean!r}): its variance is 0")
        means.append(mean)
        variances.append(var)
    return means, variances
