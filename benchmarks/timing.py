"""The timer the benchmarks share: best wall time of repeated calls (the least disturbed by other load)."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_time(function: Callable[[], object], repeats: int) -> float:
    """Shortest wall time, in seconds, of ``repeats`` calls of ``function``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)
