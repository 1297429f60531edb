"""Copies of variables' old values for the all-or-nothing write, in memory up to a budget and
on disk beyond it.

A write pass keeps every overwritten variable's old value until it has succeeded. Holding them
all in memory would cost the size of every variable redrawn (a whole model); here the copies
fill :data:`MEMORY_BUDGET` bytes of memory, and the rest go to one temporary file, written and
read back chunk by chunk with ``os.pwrite``/``os.preadv`` (not a memory map, whose written pages
would stay resident in the process). The file is deleted when the :class:`Backup` closes.
"""
from __future__ import annotations

import os
import tempfile
from typing import IO, Callable, Sequence

import numpy as np

from autoinit_sym.walk.drawing import RowSource

MEMORY_BUDGET = 16 << 20
"""Bytes of old values kept in memory; the copies beyond it go to a temporary file."""


class Copy(RowSource):
    """One variable's old values (``shape``, ``dtype``), in memory or at ``offset`` in the
    backup file, read back by rows."""

    def __init__(self, backup: "Backup", shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.backup, self.shape, self.dtype = backup, shape, np.dtype(dtype)
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * self.dtype.itemsize
        size = self.length * self.row_bytes
        self.memory = np.empty(size, dtype=np.uint8) if backup.reserve_memory(size) else None
        self.offset = None if self.memory is not None else backup.reserve_file(size)

    def put(self, start: int, values: np.ndarray) -> None:
        """Store ``values`` as rows from ``start`` on."""
        raw = np.ascontiguousarray(values, dtype=self.dtype).reshape(-1).view(np.uint8)
        at = start * self.row_bytes
        if self.memory is not None:
            self.memory[at:at + raw.size] = raw
        else:
            self.backup.write(self.offset + at, raw)

    def rows(self, start: int, stop: int) -> np.ndarray:
        a, b = start * self.row_bytes, stop * self.row_bytes
        if self.memory is not None:
            raw = self.memory[a:b].copy()
        else:
            raw = np.empty(b - a, dtype=np.uint8)
            self.backup.read(self.offset + a, raw)
        return raw.view(self.dtype).reshape((stop - start,) + self.shape[1:])


class Backup:
    """The old values of one write pass (:class:`Copy` per variable); a context manager that
    deletes its temporary file on exit."""

    def __init__(self, memory_budget: int | None = None) -> None:
        self.memory_left = MEMORY_BUDGET if memory_budget is None else memory_budget
        self.file: IO[bytes] | None = None
        self.file_size = 0

    def reserve_memory(self, size: int) -> bool:
        if size > self.memory_left:
            return False
        self.memory_left -= size
        return True

    def reserve_file(self, size: int) -> int:
        if self.file is None:
            self.file = tempfile.TemporaryFile(prefix="autoinit_sym_backup_")
        offset, self.file_size = self.file_size, self.file_size + size
        return offset

    def write(self, offset: int, raw: np.ndarray) -> None:
        view = memoryview(raw)
        while view.nbytes:
            done = os.pwrite(self.file.fileno(), view, offset)
            view, offset = view[done:], offset + done

    def read(self, offset: int, out: np.ndarray) -> None:
        view = memoryview(out)
        while view.nbytes:
            done = os.preadv(self.file.fileno(), [view], offset)
            if done == 0:
                raise OSError("the backup file of the old weights ended early")
            view, offset = view[done:], offset + done

    def copy(self, shape: Sequence[int], dtype: np.dtype,
             read: Callable[[int, int], np.ndarray]) -> Copy:
        """A copy of a variable of ``shape`` and ``dtype`` whose rows ``a .. b`` ``read(a, b)``
        returns, taken chunk by chunk."""
        copy = Copy(self, tuple(int(d) for d in shape), dtype)
        for a, b in copy.chunks():
            copy.put(a, read(a, b))
        return copy

    def __enter__(self) -> "Backup":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
