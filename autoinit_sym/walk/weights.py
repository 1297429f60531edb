"""The scheduled weights: seeds, checks, and one chunked, all-or-nothing write pass.

The distributions (``truncated_normal``, ``untruncated_normal``, ``uniform``, ``orthogonal``,
each with mean 0 and standard deviation ``std``) are drawn by ``walk.drawing``: counter-based
streams that draw any chunk of rows on its own, and an in-place orthogonal factorization. The
layer's initializer attribute is replaced by the equivalent Keras initializer so that a saved
config describes the weights. The ``i``-th weight the walk schedules is drawn with seed
:func:`weight_seed` ``(seed_for, i)``: keyed by its position in the walk, never by a layer
name, from a base seed per initialization (:func:`base_seed`).

Before anything is written, every scale is checked in the dtype it will live in
(:func:`check_scales`): the variable's dtype, or the owner layer's compute dtype where that is
narrower (mixed precision). The write pass (:func:`write_pending`) is all or nothing, and
writes chunk by chunk (``walk.assignment``), keeping the old values in memory up to a budget
and in a temporary file beyond it (``walk.backup``): its extra memory stays near the size of
the largest variable (its orthogonal matrix) rather than the model's.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import keras
import ml_dtypes
import numpy as np

from autoinit_sym.walk.assignment import ArraySource, numpy_dtype, read_rows, shape_of, write
from autoinit_sym.walk.backup import Backup
from autoinit_sym.walk.drawing import TRUNCATED_STD, Draw, RowSource, matrix_shape

logger = logging.getLogger("autoinit_sym")

NORMAL_BOUND = 10.0
"""Largest |z| an untruncated normal draw is taken to reach (P(|z| > 10) = 1.5e-23 per draw)."""
NEAR_RANGE = 100.0
"""A scale within this factor of its dtype's largest value or smallest normal is warned about."""


@dataclass
class PendingWeight:
    """A weight to redraw once the walk succeeds: zero mean, standard deviation ``stddev``."""

    layer: Any
    variable: Any            # keras.Variable
    stddev: float
    attr: str | None = None  # initializer attribute on the layer to update, e.g. "kernel_initializer"
    fan_in: float | None = None
    kept: tuple[tuple[str, int], np.ndarray] | None = None
    """A draw kept by :func:`draw` (``keep=True``) for the write, with its (distribution, seed)."""


def base_seed(seed: int | None) -> int:
    """The base seed of one initialization's weight draws: ``seed``, or when it is None a fresh
    one from Keras's seeding. A ``keras.random.SeedGenerator`` created without a seed takes its
    state from Python's ``random``, as Keras's unseeded initializers do, so that
    ``keras.utils.set_random_seed`` makes the draws reproducible."""
    if seed is not None:
        return seed
    return int(keras.ops.convert_to_numpy(keras.random.SeedGenerator().state)[0])


def weight_seed(seed_for: Callable[..., int], index: int) -> int:
    """The seed of the ``index``-th weight the walk schedules (its position in ``context.pending``):
    ``seed_for("weight", index, weights=True)``. The one place that fixes the seed convention, so
    that estimators which run a layer with its pending weights (recurrent Monte Carlo) and the write
    pass draw exactly the same values."""
    return seed_for("weight", index, weights=True)


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
        return keras.initializers.Orthogonal(gain=std * math.sqrt(max(matrix_shape(shape))), seed=seed)
    raise ValueError(f"unknown distribution {distribution!r}")


def sample(distribution: str, std: float, shape: tuple[int, ...], seed: int,
           dtype: str = "float32") -> np.ndarray:
    """Every value of the draw of ``distribution`` for ``shape`` (``walk.drawing.Draw``), in
    float64 for float64 and float32 otherwise."""
    return Draw(distribution, std, shape, seed, dtype).full()


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


def draw(pending: PendingWeight, distribution: str, seed: int, keep: bool = False) -> np.ndarray:
    """The values ``pending`` is written with for ``distribution`` and ``seed`` (:func:`weight_seed`):
    its variable's shape and dtype. With ``keep``, the values are kept on ``pending`` and a later
    call with the same distribution and seed (the write) returns them instead of drawing again."""
    if pending.kept is not None and pending.kept[0] == (distribution, seed):
        return pending.kept[1]
    values = sample(distribution, pending.stddev, shape_of(pending.variable), seed, pending.variable.dtype)
    if keep:
        pending.kept = ((distribution, seed), values)
    return values


def source(pending: PendingWeight, distribution: str, seed: int) -> RowSource:
    """What the write pass assigns to ``pending``: the same values as :func:`draw`, but read
    chunk by chunk (``walk.drawing.Draw``) unless they were kept."""
    if pending.kept is not None and pending.kept[0] == (distribution, seed):
        return ArraySource(pending.kept[1])
    return Draw(distribution, pending.stddev, shape_of(pending.variable), seed, pending.variable.dtype)


def largest_draw(distribution: str, std: float, shape: tuple[int, ...]) -> float:
    """The largest magnitude a draw of ``distribution`` with standard deviation ``std`` reaches
    (see the module docstring; :data:`NORMAL_BOUND` standard deviations for the untruncated
    normal, the orthogonal gain for orthogonal matrices, whose entries are at most 1)."""
    if distribution == "truncated_normal":
        return 2.0 * std / TRUNCATED_STD
    if distribution == "untruncated_normal":
        return NORMAL_BOUND * std
    if distribution == "uniform":
        return math.sqrt(3.0) * std
    if distribution == "orthogonal":
        return std * math.sqrt(max(matrix_shape(shape)))
    raise ValueError(f"unknown distribution {distribution!r}")


def _storage(pending: PendingWeight) -> tuple[str, Any]:
    """The dtype a weight's values must fit, and its limits (``ml_dtypes.finfo``): the variable's
    dtype, or the owner's compute dtype where that is a narrower float (mixed precision)."""
    name = str(keras.backend.standardize_dtype(pending.variable.dtype))
    try:
        limits = ml_dtypes.finfo(np.dtype(name))
    except (TypeError, ValueError):
        raise ValueError(f"weight {pending.variable.path!r} of layer {pending.layer.name!r} has dtype "
                         f"{name}, not a floating-point type; no weights were written") from None
    compute = getattr(pending.layer, "compute_dtype", None)
    if compute is not None and keras.backend.is_float_dtype(compute):
        compute = str(keras.backend.standardize_dtype(compute))
        narrower = ml_dtypes.finfo(np.dtype(compute))
        if float(narrower.max) < float(limits.max) or float(narrower.tiny) > float(limits.tiny):
            return f"{compute} (the compute dtype of layer {pending.layer.name!r})", narrower
    return name, limits


def scale_problem(pending: PendingWeight, distribution: str) -> tuple[str, bool]:
    """Why ``pending``'s draws would not be representable in its dtype (:func:`_storage`), or
    "" when they are; and whether its scale lies within :data:`NEAR_RANGE` of the dtype's limits.

    Not representable: a non-finite or non-positive standard deviation, draws above the dtype's
    largest value (:func:`largest_draw`), or a standard deviation below its smallest normal
    number (draws that round to zero or lose their precision)."""
    dtype, limits = _storage(pending)
    std, top, tiny = float(pending.stddev), float(limits.max), float(limits.tiny)
    if not (math.isfinite(std) and std > 0.0):
        return f"its standard deviation is {std!r}", False
    largest = largest_draw(distribution, std, tuple(int(d) for d in pending.variable.shape))
    if largest > top:
        return (f"its standard deviation {std:.3g} gives {distribution} draws up to {largest:.3g}, "
                f"above the {dtype} maximum {top:.3g}"), False
    if std < tiny:
        return (f"its standard deviation {std:.3g} is below the smallest normal {dtype} number "
                f"{tiny:.3g}: its draws would round to zero"), False
    return "", largest * NEAR_RANGE > top or std < tiny * NEAR_RANGE


def check_scales(pending: Sequence[PendingWeight], distribution: str,
                 explain: Callable[[PendingWeight], str] | None = None) -> None:
    """Raise a ValueError naming the first weight whose draws would not be representable
    (:func:`scale_problem`); ``explain(pending)`` adds the statistic that caused its scale
    (or ""). Scales near their dtype's limits are logged as warnings (``autoinit_sym`` logger)."""
    for item in pending:
        problem, near = scale_problem(item, distribution)
        where = f"weight {item.variable.path!r} of layer {item.layer.name!r}"
        if problem:
            raise ValueError(f"cannot write {where}: {problem}{_because(item, explain)}; "
                             "no weights were written")
        if near:
            dtype, limits = _storage(item)
            logger.warning("%s: standard deviation %.3g is within a factor %g of the %s range "
                           "(%.3g to %.3g)%s", where, item.stddev, NEAR_RANGE, dtype,
                           float(limits.tiny), float(limits.max), _because(item, explain))


def _because(item: PendingWeight, explain: Callable[[PendingWeight], str] | None) -> str:
    reason = explain(item) if explain is not None else ""
    return f" ({reason})" if reason else ""


_MISSING = object()


class _Undo:
    """What a write pass changed, to put back: copies of overwritten variables' old values
    (``walk.backup``) and the old values of replaced attributes, restored in reverse order."""

    def __init__(self, backup: Backup) -> None:
        self.backup = backup
        self.steps: list[Callable[[], None]] = []
        self.kept: set[tuple[int, str]] = set()

    def assign(self, variable: Any, values: RowSource) -> None:
        """Copy ``variable``'s old value, then write ``values`` into it (``walk.assignment``)."""
        old = self.backup.copy(shape_of(variable), numpy_dtype(variable),
                               lambda a, b: read_rows(variable, a, b))
        self.steps.append(lambda: write(variable, old))
        write(variable, values)

    def setattr(self, owner: Any, name: str, value: Any) -> None:
        if (id(owner), name) not in self.kept:
            self.kept.add((id(owner), name))
            old = getattr(owner, name, _MISSING)
            self.steps.append(lambda: delattr(owner, name) if old is _MISSING else setattr(owner, name, old))
        setattr(owner, name, value)

    def restore(self) -> None:
        for step in reversed(self.steps):
            step()


def write_pending(pending: Iterable[PendingWeight], distribution: str, constrain: bool,
                  seed_for: Callable[..., int], explain: Callable[[PendingWeight], str] | None = None,
                  resets: Sequence[tuple[Any, Any]] = ()) -> None:
    """Draw (:func:`source`: the values of :func:`draw`, the ``i``-th with seed
    :func:`weight_seed` ``(seed_for, i)``) and assign every :class:`PendingWeight`; update the
    owners' initializer (and, with ``constrain``, constraint) attributes to match; then assign
    each ``(variable, value)`` of ``resets`` (e.g. an optimizer's fresh state).

    All or nothing: every scale is checked first (:func:`check_scales`, with ``explain``), so a
    scale that does not fit its dtype writes nothing. During the pass, each variable's old value
    is copied just before it is overwritten (in memory up to ``walk.backup.MEMORY_BUDGET``, in a
    temporary file beyond it, deleted afterwards); on any exception (KeyboardInterrupt and
    MemoryError included) every overwritten variable and every replaced attribute is put back
    before the exception propagates.

    Peak extra memory: the in-memory copies' budget, one chunk (``walk.drawing.CHUNK_BYTES``) of
    the draw and of the old value, and for the orthogonal distribution the one matrix being
    written (its variable's size in float32, or float64 for float64 variables); on JAX, one
    new array besides the variable's current one. Draws kept by the walk (recurrent kernels,
    which its Monte Carlo already drew) stay in memory until they are written."""
    items = list(pending)
    check_scales(items, distribution, explain)
    with Backup() as backup:
        undo = _Undo(backup)
        try:
            for index, item in enumerate(items):
                seed = weight_seed(seed_for, index)
                undo.assign(item.variable, source(item, distribution, seed))
                if item.attr is not None:
                    undo.setattr(item.layer, item.attr,
                                 keras_initializer(distribution, item.stddev, shape_of(item.variable), seed))
                if constrain:
                    constraint = ZeroMeanFixedScale(item.stddev)
                    undo.setattr(item.variable, "constraint", constraint)
                    if item.attr is not None and item.attr.endswith("_initializer"):
                        undo.setattr(item.layer, item.attr[: -len("_initializer")] + "_constraint", constraint)
            for variable, value in resets:
                undo.assign(variable, ArraySource(keras.ops.convert_to_numpy(value)))
        except BaseException:
            undo.restore()
            raise
