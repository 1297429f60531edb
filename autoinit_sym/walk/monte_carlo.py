"""Seeded, chunked Gaussian Monte Carlo through any callable.

Used where no tractable integral exists (recurrent layers, the probe for unknown
layers). Samples are drawn with ``keras.random`` and reduced with ``keras.ops``, so
the work runs on whatever backend and device Keras uses (a GPU when present); only
per-chunk sums come back to NumPy, where they are merged in float64.

    >>> stats = gaussian_statistics(lambda x: keras.ops.relu(x), [(8,)], [0.0], [1.0],
    ...                             samples=10_000, seed=0)
    >>> mean, var = stats[0]

Keras is imported on first use, so importing this module stays cheap.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Sequence

import keras
import numpy as np

from autoinit_sym.statistics.state import DiscreteValues

CHUNK_BYTES = 64 * 2**20
"""Bytes of one chunk's inputs plus outputs. The callable's own intermediates are a
small multiple of this, which keeps the extra peak memory well under 500 MB."""

FIRST_CHUNK_ROWS = 16
"""Size of the first chunk, which measures the output size before the rest is sized."""

PROGRESS_AFTER_S = 2.0
"""A ``keras.utils.Progbar`` appears once a run has taken longer than this."""


class RunningMoments:
    """Mean and variance of a growing set of values, merged chunk by chunk in float64
    (Chan et al.'s pairwise update, no cancellation from E[x^2] - E[x]^2)."""

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0

    def add(self, count: int, mean: float, m2: float) -> None:
        """Merge a chunk of ``count`` values with mean ``mean`` and centred sum of squares ``m2``."""
        total = self.count + count
        delta = mean - self.mean
        self.m2 += m2 + delta * delta * self.count * count / total
        self.mean += delta * count / total
        self.count = total

    @property
    def variance(self) -> float:
        return self.m2 / self.count if self.count else float("nan")


def _as_list(outputs: Any) -> list:
    if isinstance(outputs, (list, tuple)):
        return list(outputs)
    if isinstance(outputs, dict):
        return list(outputs.values())
    return [outputs]


def _per_sample_shapes(input_shapes: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
    shapes = []
    for shape in input_shapes:
        shape = tuple(shape)
        if any(d is None or int(d) < 1 for d in shape):
            raise ValueError(f"gaussian_statistics needs fully known per-sample input shapes "
                             f"(no batch dimension, no None), got {shape}")
        shapes.append(tuple(int(d) for d in shape))
    return shapes


def gaussian_statistics(fn: Callable[..., Any], input_shapes: Sequence[Sequence[int]],
                        means: Sequence[float], variances: Sequence[float], samples: int,
                        seed: int, chunk_size: int | None = None,
                        description: str = "Monte Carlo",
                        statistics: "OutputStatistics | None" = None,
                        discrete: Sequence[DiscreteValues | None] | None = None) -> list[tuple[float, float]]:
    """Mean and variance over all elements of each output of ``fn`` on Gaussian inputs.

    Input ``i`` is drawn iid N(means[i], variances[i]) with shape
    ``(batch,) + input_shapes[i]``, or where ``discrete[i]`` is given, uniform over its
    integers in its dtype (ids, masks; its mean and variance are then not used); ``fn(*inputs)`` returns a tensor or a list of
    tensors. ``samples`` batch rows are drawn in total, in chunks of ``chunk_size``
    rows (by default sized so a chunk's inputs and outputs take about
    :data:`CHUNK_BYTES`). The same arguments give identical results.

    Args:
        fn: callable on Keras tensors (put training mode etc. in the closure).
        input_shapes: per-sample shapes of the inputs, without the batch dimension.
        means, variances: statistics of each input (variances >= 0).
        samples: number of batch rows to draw (>= 1).
        seed: integer seed of the random stream.
        chunk_size: rows per call of ``fn``; None sizes chunks from the memory budget.
        description: label of the progress bar.
        statistics: an :class:`OutputStatistics` to accumulate into (to read its
            :meth:`~OutputStatistics.position_shared` afterwards); a fresh one by default.
        discrete: per input, the integer or boolean values to draw instead, or None.

    Returns:
        One ``(mean, var)`` pair per output of ``fn``, as Python floats.
    """
    shapes = _per_sample_shapes(input_shapes)
    if not (len(shapes) == len(means) == len(variances)):
        raise ValueError(f"gaussian_statistics got {len(shapes)} input shapes, {len(means)} means "
                         f"and {len(variances)} variances; they must match")
    if any(not (v >= 0 and math.isfinite(v)) for v in variances):
        raise ValueError(f"variances must be finite and >= 0, got {list(variances)}")
    samples = int(samples)
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    if chunk_size is not None and int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size}")

    discrete = list(discrete) if discrete is not None else [None] * len(shapes)
    if len(discrete) != len(shapes):
        raise ValueError(f"gaussian_statistics got {len(discrete)} discrete entries for {len(shapes)} inputs")
    seeds = np.random.SeedSequence(int(seed) & 0xFFFFFFFFFFFFFFFF)
    stds = [math.sqrt(float(v)) for v in variances]
    statistics = OutputStatistics() if statistics is None else statistics
    progress = Progress(samples, description)
    size = min(samples, int(chunk_size) if chunk_size else FIRST_CHUNK_ROWS)
    while progress.done < samples:
        size = min(size, samples - progress.done)
        chunk_seeds = seeds.spawn(1)[0].generate_state(len(shapes))  # stateless: no Keras variable per run
        inputs = [keras.random.normal((size,) + shape, mean=float(m), stddev=s, seed=int(chunk_seed))
                  if values is None else _uniform_integers((size,) + shape, values, int(chunk_seed))
                  for shape, m, s, chunk_seed, values in zip(shapes, means, stds, chunk_seeds, discrete)]
        outputs = statistics.add(fn(*inputs))
        progress.advance(size)
        if chunk_size is None:
            row_bytes = 4 * (sum(int(np.prod(s)) for s in shapes)
                             + sum(int(np.prod(y.shape[1:])) for y in outputs))
            size = max(1, CHUNK_BYTES // max(row_bytes, 1))
    return statistics.result()


def _uniform_integers(shape: tuple[int, ...], values: DiscreteValues, seed: int) -> Any:
    """A tensor of ``shape`` uniform over ``values``' integers, in its dtype."""
    drawn = keras.random.randint(shape, values.low, values.high, seed=seed, dtype="int32")
    return keras.ops.cast(drawn, values.dtype)


def batch_statistics(fn: Callable[..., Any], batches: Sequence[Sequence[Any]],
                     description: str = "Monte Carlo",
                     statistics: "OutputStatistics | None" = None) -> list[tuple[float, float]]:
    """Like :func:`gaussian_statistics`, over given input batches (e.g. samples of an
    upstream layer's output kept from an earlier run): ``fn(*batch)`` for each batch."""
    if not batches:
        raise ValueError("batch_statistics needs at least one batch")
    statistics = OutputStatistics() if statistics is None else statistics
    progress = Progress(sum(int(batch[0].shape[0]) for batch in batches), description)
    for batch in batches:
        statistics.add(fn(*batch))
        progress.advance(int(batch[0].shape[0]))
    return statistics.result()


class OutputStatistics:
    """Per-output running moments of the chunks a callable returns (sums on the device,
    merged in float64); with ``positions``, for outputs with position axes (batch,
    positions..., channels), also the moments of each (sample, channel)'s mean over its
    positions (read through :meth:`position_shared`)."""

    def __init__(self, positions: bool = False) -> None:
        self.track_positions = positions
        self.accumulators: list[RunningMoments] = []
        self.position_means: list[RunningMoments] = []
        self.positions: list[int] = []

    def add(self, outputs: Any) -> list[Any]:
        """Fold in one chunk's output(s); returns them as a list of float32 tensors."""
        outputs = [keras.ops.cast(y, "float32") for y in _as_list(outputs)]
        if not self.accumulators:
            self.accumulators = [RunningMoments() for _ in outputs]
            self.position_means = [RunningMoments() for _ in outputs]
            self.positions = [int(np.prod(y.shape[1:-1])) for y in outputs]
        for acc, means, y in zip(self.accumulators, self.position_means, outputs):
            _fold(acc, y)
            if self.track_positions and len(y.shape) > 2:
                _fold(means, keras.ops.mean(y, axis=tuple(range(1, len(y.shape) - 1))))
        return outputs

    def result(self) -> list[tuple[float, float]]:
        return [(float(acc.mean), float(acc.variance)) for acc in self.accumulators]

    def position_shared(self) -> list[float | None]:
        """Per output, the covariance between two distinct positions of a channel,
        averaged over position pairs: with P positions, the variance of a (sample,
        channel)'s position mean is var/P + (P-1)/P * shared, so shared =
        (P * Var(mean) - var) / (P - 1), clipped to [0, var]. Per-channel mean offsets
        count as shared. None for outputs without positions (batch, channels)."""
        if not self.track_positions:
            raise ValueError("position_shared needs OutputStatistics(positions=True)")
        out: list[float | None] = []
        for acc, means, positions in zip(self.accumulators, self.position_means, self.positions):
            if positions < 2:
                out.append(None)
                continue
            shared = (positions * means.variance - acc.variance) / (positions - 1)
            out.append(float(min(max(shared, 0.0), acc.variance)))
        return out


def _fold(acc: RunningMoments, y: Any) -> None:
    """Merge all elements of tensor ``y`` into ``acc``."""
    chunk_mean = keras.ops.mean(y)
    m2 = keras.ops.sum(keras.ops.square(y - chunk_mean))
    acc.add(int(np.prod(y.shape)), float(keras.ops.convert_to_numpy(chunk_mean)),
            float(keras.ops.convert_to_numpy(m2)))


class Progress:
    """A ``keras.utils.Progbar`` that appears once the run has taken PROGRESS_AFTER_S."""

    def __init__(self, total: int, description: str) -> None:
        self.total, self.description, self.done = total, description, 0
        self.started, self.bar = time.perf_counter(), None

    def advance(self, rows: int) -> None:
        self.done = min(self.total, self.done + rows)
        if (self.bar is None and self.done < self.total
                and time.perf_counter() - self.started > PROGRESS_AFTER_S):
            print(f"{self.description}: {self.total} samples")
            self.bar = keras.utils.Progbar(self.total, unit_name="sample")
        if self.bar is not None:
            self.bar.update(self.done, finalize=self.done >= self.total)


def gaussian_rows(rng: np.random.Generator, rows: int, shape: tuple, dtype: str, mean: float,
                  var: float, values: DiscreteValues | None = None) -> np.ndarray:
    """``rows`` samples of N(mean, var) with the per-sample ``shape`` (batch axis first, ignored),
    in ``dtype``. An integer or boolean input takes ``values`` (uniform over its integers:
    ``graph.input_values`` says which: ids below the vocabulary they index, masks of ones); without
    them a boolean input is all True and an integer one N(mean, var) rounded and clipped at 0."""
    size = (rows,) + tuple(int(d) for d in shape[1:])
    if values is None and "bool" in dtype:
        values = DiscreteValues(dtype, 1, 2)
    if values is not None and "float" not in dtype:
        return rng.integers(values.low, values.high, size).astype(dtype)
    values = rng.normal(mean, math.sqrt(var), size)
    if "int" in dtype:
        return np.clip(np.rint(values), 0, None).astype(dtype)
    return values.astype(dtype)
