"""Writing values into Keras variables chunk by chunk, and reading them back, on every backend.

A :class:`~autoinit_sym.walk.drawing.RowSource` is written without ever holding the whole
variable's new values in host memory:

- TensorFlow: in-place slice assignment (``ResourceStridedSliceAssign``) into the
  ``tf.Variable``, rows read back with ``ResourceGather``, neither of which reads the whole
  variable. Both put the variable in TensorFlow's copy-on-read mode (every later read would
  copy it), so each is followed by ``DisableCopyOnRead``. A ``tf.distribute`` variable
  (``MirroredVariable`` ...) is written into each of its local copies, so every replica holds
  the same values;
- PyTorch: in-place ``copy_`` into rows of the parameter, without gradient tracking;
- JAX (immutable arrays): one new array built shard by shard with
  ``jax.make_array_from_callback`` on the variable's own sharding, so every shard is drawn
  on the host for the device where it lives and the sharding is unchanged; then assigned.
"""
from __future__ import annotations

from typing import Any

import keras
import ml_dtypes  # noqa: F401  (registers bfloat16 etc. with NumPy)
import numpy as np

from autoinit_sym.walk.drawing import RowSource


class ArraySource(RowSource):
    """A RowSource over an array already in memory (a kept draw, an optimizer's fresh state)."""

    def __init__(self, values: Any) -> None:
        self.values = np.asarray(values)
        self.shape, self.dtype = self.values.shape, self.values.dtype

    def rows(self, start: int, stop: int) -> np.ndarray:
        return self.values.reshape((self.length,) + self.shape[1:])[start:stop]


def shape_of(variable: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in variable.shape)


def numpy_dtype(variable: Any) -> np.dtype:
    """The NumPy dtype of ``variable``'s values (``ml_dtypes`` for bfloat16)."""
    return np.dtype(keras.backend.standardize_dtype(variable.dtype))


def _tf_copies(variable: Any) -> list[Any]:
    """The ``tf.Variable`` s holding ``variable``'s values: one, or each local copy of a
    distributed variable."""
    value = variable.value
    strategy = getattr(value, "distribute_strategy", None)
    if strategy is not None and hasattr(value, "values"):
        return list(strategy.experimental_local_results(value))
    return [value]


def read_rows(variable: Any, start: int, stop: int) -> np.ndarray:
    """Rows ``start .. stop`` of ``variable``'s leading axis (a scalar is one row) as NumPy."""
    backend = keras.backend.backend()
    whole = not shape_of(variable)
    if backend == "tensorflow":
        import tensorflow as tf

        copy = _tf_copies(variable)[0]
        if whole:
            values = copy.read_value().numpy()
        else:
            values = tf.raw_ops.ResourceGather(resource=copy.handle, indices=tf.range(start, stop),
                                               dtype=copy.dtype).numpy()
            tf.raw_ops.DisableCopyOnRead(resource=copy.handle)
    elif backend == "torch":
        import torch

        tensor = variable.value.detach()
        tensor = (tensor if whole else tensor[start:stop]).cpu()
        values = tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16) if tensor.dtype == torch.bfloat16 \
            else tensor.numpy()
    else:
        values = np.asarray(variable.value if whole else variable.value[start:stop])
    return np.array(values, copy=True).reshape((stop - start,) + shape_of(variable)[1:])


def write(variable: Any, source: RowSource) -> None:
    """Assign ``source`` (of ``variable``'s shape) to ``variable``, chunk by chunk where the
    backend writes in place (see the module docstring); ValueError when the shapes differ."""
    shape = shape_of(variable)
    if tuple(source.shape) != shape:
        raise ValueError(f"cannot assign values of shape {tuple(source.shape)} to variable "
                         f"{variable.path!r} of shape {shape}")
    backend = keras.backend.backend()
    dtype = numpy_dtype(variable)
    if backend == "jax":
        import jax

        value = variable.value
        variable.assign(jax.make_array_from_callback(
            shape, value.sharding, lambda index: source.block(index).astype(dtype, copy=False)))
        return
    if backend == "torch":
        import torch

        target = variable.value
        with torch.no_grad():
            for a, b in source.chunks():
                rows = source.rows(a, b)
                if rows.dtype == ml_dtypes.bfloat16:
                    chunk = torch.from_numpy(rows.view(np.int16)).view(torch.bfloat16)
                else:
                    chunk = torch.from_numpy(np.ascontiguousarray(rows))
                if shape:
                    target[a:b].copy_(chunk)
                else:
                    target.copy_(chunk.reshape(()))
        return
    import tensorflow as tf

    copies = _tf_copies(variable)
    try:
        for a, b in source.chunks():
            chunk = tf.cast(tf.convert_to_tensor(source.rows(a, b).astype(dtype, copy=False)), copies[0].dtype)
            for copy in copies:
                if shape:
                    tf.raw_ops.ResourceStridedSliceAssign(ref=copy.handle, begin=[a], end=[b], strides=[1],
                                                          value=chunk)
                else:
                    copy.assign(tf.reshape(chunk, ()))
    finally:
        for copy in copies:
            tf.raw_ops.DisableCopyOnRead(resource=copy.handle)
