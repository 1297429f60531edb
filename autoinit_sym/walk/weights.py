"""Drawing the scheduled weights: four distributions, one constraint, one write pass.

Every weight is drawn with mean 0 and the requested standard deviation ``std``:

- ``truncated_normal``: N(0, s^2) truncated at +-2 s, with s = std / 0.87962566
  (the standard deviation of a standard normal truncated at +-2);
- ``untruncated_normal``: N(0, std^2);
- ``uniform``: U(-std*sqrt(3), std*sqrt(3));
- ``orthogonal``: a (semi-)orthogonal matrix of shape (prod(shape[:-1]), shape[-1])
  scaled by std * sqrt(max(rows, cols)), so every entry has mean square std^2.

Samples are drawn with NumPy (seeded generators per variable, normal draws in blocks of
2^20 elements on all cores) and assigned;
the layer's initializer attribute is replaced by the equivalent Keras initializer
so that a saved config describes the weights.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import keras
import numpy as np

TRUNCATED_STD = 0.87962566103423978
"""Standard deviation of N(0, 1) truncated to [-2, 2]."""


@dataclass
class PendingWeight:
    """A weight to redraw once the walk succeeds: zero mean, standard deviation ``stddev``."""

    layer: Any
    variable: Any            # keras.Variable
    stddev: float
    attr: str | None = None  # initializer attribute on the layer to update, e.g. "kernel_initializer"
    fan_in: float | None = None


def keras_initializer(distribution: str, std: float, shape: tuple[int, ...], seed: int) -> Any:
    """The Keras initializer drawing ``distribution`` with mean 0 and standard deviation ``std``."""
    if distribution == "truncated_normal":
        return keras.initializers.TruncatedNormal(stddev=std / TRUNCATED_STD, seed=seed)
    if distribution == "untruncated_normal":
        return keras.initializers.RandomNormal(stddev=std, seed=seed)
    if distribution == "uniform":
        limit = std * math.sqrt(3.0)
        return keras.initializers.RandomUniform(-limit, limit, seed=seed)
    if distribution == "orthogonal":
        return keras.initializers.Orthogonal(gain=std * math.sqrt(max(_matrix_shape(shape))), seed=seed)
    raise ValueError(f"unknown distribution {distribution!r}")


def _matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) < 2:
        return (int(np.prod(shape)), 1)
    return (int(np.prod(shape[:-1])), int(shape[-1]))


BLOCK = 1 << 20
"""Elements per independently seeded block of a normal draw (the blocks are drawn in parallel)."""


def _normal_block(seed: int, index: int, out: np.ndarray, truncate: bool) -> None:
    """Fill ``out`` with N(0, 1) values (redrawing those outside +-2 when ``truncate``) from
    the generator of block ``index`` of ``seed``: the values do not depend on how many
    threads draw the blocks."""
    rng = np.random.default_rng([seed, index])
    rng.standard_normal(out=out, dtype=out.dtype)
    outside = np.flatnonzero(np.abs(out) > 2.0) if truncate else np.empty(0, dtype=np.intp)
    while outside.size:
        redrawn = rng.standard_normal(outside.size, dtype=out.dtype)
        out[outside] = redrawn
        outside = outside[np.abs(redrawn) > 2.0]


def standard_normal(shape: tuple[int, ...], seed: int, dtype: np.dtype, truncate: bool) -> np.ndarray:
    """N(0, 1) values of ``shape`` (truncated to +-2 when ``truncate``), drawn in blocks of
    :data:`BLOCK` elements, each from its own seeded generator, on all cores."""
    values = np.empty(int(np.prod(shape, dtype=np.int64)), dtype=dtype)
    blocks = [(i, values[start:start + BLOCK]) for i, start in enumerate(range(0, values.size, BLOCK))]
    if len(blocks) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(len(blocks), os.cpu_count() or 1)) as pool:
            list(pool.map(lambda block: _normal_block(seed, block[0], block[1], truncate), blocks))
    else:
        for index, out in blocks:
            _normal_block(seed, index, out, truncate)
    return values.reshape(shape)


def sample(distribution: str, std: float, shape: tuple[int, ...], seed: int,
           dtype: str = "float32") -> np.ndarray:
    """Weights of ``shape`` drawn from ``distribution`` (see the module docstring).

    Normal draws are made directly in ``dtype`` when it is float32/float64 (NumPy's
    ziggurat, :func:`standard_normal`), redrawing only the values outside +-2 for the
    truncated normal."""
    draw_dtype = np.dtype(dtype) if np.dtype(dtype) in (np.float32, np.float64) else np.dtype(np.float32)
    if distribution in ("truncated_normal", "untruncated_normal"):
        truncate = distribution == "truncated_normal"
        values = standard_normal(shape, seed, draw_dtype, truncate)
        values *= draw_dtype.type(std / TRUNCATED_STD if truncate else std)
        return values
    rng = np.random.default_rng(seed)
    if distribution == "uniform":
        values = rng.random(shape, dtype=draw_dtype)
        values -= draw_dtype.type(0.5)
        values *= draw_dtype.type(2.0 * std * math.sqrt(3.0))
        return values
    if distribution == "orthogonal":
        rows, cols = _matrix_shape(shape)
        q, r = np.linalg.qr(rng.standard_normal((max(rows, cols), min(rows, cols))))
        q *= np.sign(np.diag(r))
        matrix = q if rows >= cols else q.T
        return (matrix * (std * math.sqrt(max(rows, cols)))).reshape(shape).astype(draw_dtype)
    raise ValueError(f"unknown distribution {distribution!r}")


@keras.saving.register_keras_serializable(package="autoinit_sym")
class ZeroMeanFixedScale(keras.constraints.Constraint):
    """Kernel constraint w -> (w - mean(w)) * std / rms(w - mean(w)): the weights keep
    zero empirical mean and standard deviation ``std`` through training.

    Registered as ``autoinit_sym>ZeroMeanFixedScale``; import ``autoinit_sym.walk.weights``
    (or ``autoinit_sym.AutoInit``) before loading a saved model that uses it."""

    def __init__(self, std: float) -> None:
        self.std = float(std)

    def __call__(self, w: Any) -> Any:
        ops = keras.ops
        centred = w - ops.mean(w)
        scale = ops.sqrt(ops.mean(ops.square(centred)))
        return centred * (self.std / ops.maximum(scale, keras.config.epsilon()))

    def get_config(self) -> dict:
        return {"std": self.std}


def _seed(pending: Any, seed_for: Callable[..., int]) -> int:
    return seed_for(pending.layer.name, pending.variable.path)


def draw(pending: Any, distribution: str, seed_for: Callable[..., int]) -> np.ndarray:
    """The values a :class:`PendingWeight` will be written with: its
    variable's shape and dtype, seeded by ``seed_for(owner name, variable path)``.
    The one place that fixes the seed convention, so that estimators which run a
    layer with its pending weights (recurrent Monte Carlo) see exactly these values."""
    variable = pending.variable
    shape = tuple(int(d) for d in variable.shape)
    return sample(distribution, pending.stddev, shape, _seed(pending, seed_for), variable.dtype)


def write_pending(pending: Iterable[Any], distribution: str, constrain: bool,
                  seed_for: Callable[..., int]) -> None:
    """Draw (:func:`draw`) and assign every :class:`PendingWeight`; update
    the owners' initializer (and, with ``constrain``, constraint) attributes to match."""
    for item in pending:
        variable = item.variable
        shape = tuple(int(d) for d in variable.shape)
        seed = _seed(item, seed_for)
        variable.assign(draw(item, distribution, seed_for))
        if item.attr is not None:
            setattr(item.layer, item.attr, keras_initializer(distribution, item.stddev, shape, seed))
        if constrain:
            constraint = ZeroMeanFixedScale(item.stddev)
            variable.constraint = constraint
            if item.attr is not None and item.attr.endswith("_initializer"):
                setattr(item.layer, item.attr[: -len("_initializer")] + "_constraint", constraint)
