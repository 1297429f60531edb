"""Weight samplers that draw any part of a variable on its own: counter-based streams, in place.

Every weight is drawn with mean 0 and the requested standard deviation ``std``:

- ``truncated_normal``: N(0, s^2) truncated at +-2 s, with s = std / 0.87962566
  (the standard deviation of a standard normal truncated at +-2);
- ``untruncated_normal``: N(0, std^2);
- ``uniform``: U(-std*sqrt(3), std*sqrt(3));
- ``orthogonal``: a (semi-)orthogonal matrix of shape (prod(shape[:-1]), shape[-1])
  scaled by std * sqrt(max(rows, cols)), so every entry has mean square std^2.

The first three are element-wise streams over the variable's values in C order, cut into
blocks of :data:`BLOCK` elements; block ``b`` comes from its own generator
``numpy.random.default_rng([seed, b])``. Any range of elements (a chunk of rows, a device's
shard) is therefore drawn without the rest, and the values depend neither on the chunking
nor on the number of threads. The orthogonal matrix is global: its Gaussian matrix is the
same stream, factored in place (LAPACK ``geqrf``/``orgqr`` on one Fortran-ordered buffer in
the draw precision), its columns' signs fixed as Keras does (``q * sign(diag(r))``) and scaled
in place, so it costs one buffer of the variable's size.

Draws are made in float64 for float64 variables and in float32 otherwise (the writer casts to
narrower dtypes chunk by chunk).
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
from scipy.linalg import lapack
from threadpoolctl import threadpool_limits

TRUNCATED_STD = 0.87962566103423978
"""Standard deviation of N(0, 1) truncated to [-2, 2]."""
BLOCK = 1 << 20
"""Elements per independently seeded block of a stream."""
CHUNK_BYTES = 8 << 20
"""Bytes of draw precision per chunk of rows read from a :class:`RowSource`."""
STREAMS = ("truncated_normal", "untruncated_normal", "uniform")
LAPACK_THREADS = 1
"""Threads of the orthogonal factorization. OpenBLAS's worker threads spin while they wait: on
cores other processes keep busy, its QR of a 10000 x 5000 float32 matrix took 301 s on two
threads and 37 s on one (TensorFlow's ``tf.linalg.qr``: 97 s), measured on a 2-core machine."""


def matrix_shape(shape: Sequence[int]) -> tuple[int, int]:
    """(rows, cols) of the matrix a variable of ``shape`` is viewed as: (prod(shape[:-1]), shape[-1])."""
    if len(shape) < 2:
        return (int(np.prod(shape, dtype=np.int64)), 1)
    return (int(np.prod(shape[:-1], dtype=np.int64)), int(shape[-1]))


def draw_dtype(dtype: object) -> np.dtype:
    """The precision values for a variable of ``dtype`` are drawn in: float64 or float32."""
    return np.dtype(np.float64) if str(dtype) == "float64" else np.dtype(np.float32)


def _fill_block(distribution: str, seed: int, index: int, out: np.ndarray) -> None:
    """Block ``index`` of the standard stream of ``distribution`` into ``out`` (BLOCK elements):
    N(0, 1) (redrawing values outside +-2 for the truncated normal) or U(-1, 1)."""
    rng = np.random.default_rng([seed, index])
    if distribution == "uniform":  # 2u - 1: no intermediate leaves [-1, 1]
        rng.random(out=out, dtype=out.dtype)
        out *= out.dtype.type(2.0)
        out -= out.dtype.type(1.0)
        return
    rng.standard_normal(out=out, dtype=out.dtype)
    if distribution != "truncated_normal":
        return
    outside = np.flatnonzero(np.abs(out) > 2.0)
    while outside.size:
        redrawn = rng.standard_normal(outside.size, dtype=out.dtype)
        out[outside] = redrawn
        outside = outside[np.abs(redrawn) > 2.0]


def stream_scale(distribution: str, std: float) -> float:
    """Factor from the standard stream (:func:`_fill_block`) to mean 0, standard deviation ``std``."""
    if distribution == "truncated_normal":
        return std / TRUNCATED_STD
    if distribution == "untruncated_normal":
        return std
    if distribution == "uniform":
        return std * math.sqrt(3.0)
    raise ValueError(f"unknown distribution {distribution!r}")


def standard_stream(distribution: str, seed: int, start: int, out: np.ndarray) -> None:
    """Elements ``start .. start + out.size`` of the standard stream into the flat ``out``:
    whole blocks straight into ``out``, the partial ones at either end through one spare
    block; blocks run on all cores."""
    stop = start + out.size

    def fill(index: int) -> None:
        lo, hi = index * BLOCK, (index + 1) * BLOCK
        if lo >= start and hi <= stop:
            _fill_block(distribution, seed, index, out[lo - start:hi - start])
            return
        spare = np.empty(BLOCK, dtype=out.dtype)
        _fill_block(distribution, seed, index, spare)
        a, b = max(lo, start), min(hi, stop)
        out[a - start:b - start] = spare[a - lo:b - lo]

    blocks = range(start // BLOCK, -(-stop // BLOCK))
    if len(blocks) > 1 and (os.cpu_count() or 1) > 1:
        with ThreadPoolExecutor(max_workers=min(len(blocks), os.cpu_count() or 1)) as pool:
            list(pool.map(fill, blocks))
    else:
        for index in blocks:
            fill(index)


def orthogonal(std: float, shape: Sequence[int], seed: int, dtype: np.dtype) -> np.ndarray:
    """The orthogonal draw for ``shape`` in ``dtype`` (float32 or float64) as its (rows, cols)
    matrix (:func:`matrix_shape`), as Keras's ``Orthogonal``: Q of the QR factorization of a (max(r, c), min(r, c)) standard normal matrix
    (the stream, in Fortran order), columns times sign(diag(R)), transposed when r < c, times
    gain std * sqrt(max(r, c)). Factored in place; the result is in Fortran order or a
    transposed view of it (C order)."""
    rows, cols = matrix_shape(shape)
    tall, narrow = max(rows, cols), min(rows, cols)
    matrix = np.empty((tall, narrow), dtype=dtype, order="F")
    if matrix.size == 0:
        return matrix if rows >= cols else matrix.T
    standard_stream("untruncated_normal", seed, 0, matrix.T.reshape(-1))  # a view: F order is C of the transpose
    geqrf, orgqr = lapack.get_lapack_funcs(("geqrf", "orgqr"), (matrix,))
    with threadpool_limits(LAPACK_THREADS, user_api="blas"):
        lwork = int(geqrf(matrix, lwork=-1, overwrite_a=1)[2][0].real)  # a query: no copy, no change
        factored, tau, _, info = geqrf(matrix, lwork=max(lwork, 1), overwrite_a=1)
        _lapack_ok("geqrf", info, factored, matrix)
        signs = np.where(np.diagonal(factored) < 0, -1.0, 1.0).astype(dtype)
        lwork = int(orgqr(factored, tau, lwork=-1, overwrite_a=1)[1][0].real)
        q, _, info = orgqr(factored, tau, lwork=max(lwork, narrow), overwrite_a=1)
        _lapack_ok("orgqr", info, q, matrix)
    q *= signs * dtype.type(std * math.sqrt(tall))
    return q if rows >= cols else q.T


def _lapack_ok(name: str, info: int, result: np.ndarray, buffer: np.ndarray) -> None:
    if info != 0:
        raise RuntimeError(f"LAPACK {name} failed (info={info}) drawing an orthogonal matrix")
    if not np.shares_memory(result, buffer):
        raise RuntimeError(f"LAPACK {name} copied its input instead of working in place")


class RowSource:
    """Values of one variable read by rows of the leading axis (a scalar is one row), or by the
    block of a device's shard (:meth:`block`), never all at once."""

    shape: tuple[int, ...]
    dtype: np.dtype

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start .. stop`` of the leading axis, shape ``(stop - start,) + shape[1:]``."""
        raise NotImplementedError

    @property
    def length(self) -> int:
        """Rows along the leading axis."""
        return int(self.shape[0]) if self.shape else 1

    def chunks(self) -> list[tuple[int, int]]:
        """Row ranges of about :data:`CHUNK_BYTES` each (at least one row)."""
        row_bytes = max(1, int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize)
        step = max(1, CHUNK_BYTES // row_bytes)
        return [(a, min(a + step, self.length)) for a in range(0, self.length, step)]

    def block(self, index: tuple[slice, ...]) -> np.ndarray:
        """The values at ``index`` (one slice per axis, as ``jax.make_array_from_callback``
        passes a shard's), filled chunk of rows by chunk of rows."""
        if not self.shape:
            return self.rows(0, 1).reshape(())
        index = tuple(index) + (slice(None),) * (len(self.shape) - len(index))
        ranges = [range(*s.indices(n)) for s, n in zip(index, self.shape)]
        if ranges[0].step != 1:
            raise ValueError(f"shard index {index} has a step along the leading axis; shards are contiguous")
        first, last = ranges[0].start, max(ranges[0].start, ranges[0].stop)
        out = np.empty(tuple(len(r) for r in ranges), dtype=self.dtype)
        rest = (slice(None),) + index[1:]
        for a, b in self.chunks():
            a, b = max(a, first), min(b, last)
            if a < b:
                out[a - first:b - first] = self.rows(a, b)[rest]
        return out


class Draw(RowSource):
    """The draw of ``distribution`` with standard deviation ``std`` for a variable of ``shape``
    with seed ``seed``, in :func:`draw_dtype` of ``dtype``. Stream distributions are drawn row
    range by row range on request; the orthogonal matrix once, at construction."""

    def __init__(self, distribution: str, std: float, shape: Sequence[int], seed: int, dtype: object) -> None:
        self.distribution, self.std, self.seed = distribution, float(std), int(seed)
        self.shape = tuple(int(d) for d in shape)
        self.dtype = draw_dtype(dtype)
        self.matrix = None
        if distribution == "orthogonal":
            self.matrix = orthogonal(self.std, self.shape, self.seed, self.dtype)
        elif distribution not in STREAMS:
            raise ValueError(f"unknown distribution {distribution!r}")

    def rows(self, start: int, stop: int) -> np.ndarray:
        row = int(np.prod(self.shape[1:], dtype=np.int64))
        if self.matrix is not None:  # a leading-axis row is row / cols matrix rows
            per = row // self.matrix.shape[1] if len(self.shape) > 1 else 1
            return np.ascontiguousarray(self.matrix[start * per:stop * per]).reshape((stop - start,) + self.shape[1:])
        out = np.empty((stop - start) * row, dtype=self.dtype)
        standard_stream(self.distribution, self.seed, start * row, out)
        out *= self.dtype.type(stream_scale(self.distribution, self.std))
        return out.reshape((stop - start,) + self.shape[1:])

    def full(self) -> np.ndarray:
        """Every value, shape ``shape``."""
        return self.rows(0, self.length).reshape(self.shape)
