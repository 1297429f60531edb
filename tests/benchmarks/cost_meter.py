"""Wall time and peak extra resident memory of a call."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable

_STATM = Path("/proc/self/statm")


def resident_bytes() -> int | None:
    """Current resident set size of this process (Linux /proc), or None elsewhere."""
    try:
        pages = int(_STATM.read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    import resource

    return pages * resource.getpagesize()


class PeakResidentMemory:
    """Context manager sampling RSS every ``interval`` s; ``extra_bytes`` = peak - start.

    RSS includes what TensorFlow allocates in C++, which tracemalloc would not see."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.start: int | None = None
        self.peak: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            now = resident_bytes()
            if now is not None and (self.peak is None or now > self.peak):
                self.peak = now
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakResidentMemory":
        self.start = resident_bytes()
        self.peak = self.start
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        now = resident_bytes()
        if now is not None and self.peak is not None:
            self.peak = max(self.peak, now)

    @property
    def extra_bytes(self) -> int | None:
        if self.start is None or self.peak is None:
            return None
        return self.peak - self.start


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call."""
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def best_time(call: Callable[[], Any], repeats: int) -> float:
    """The fastest of ``repeats`` calls, in seconds (the least disturbed by other processes)."""
    return min(timed(call)[0] for _ in range(max(1, repeats)))
