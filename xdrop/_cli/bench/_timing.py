"""How ``python -m xdrop bench`` times a call: timeit's auto-range, the median of samples, one row per case."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MIN_REPEATS, MAX_REPEATS, BUDGET_S = 3, 25, 0.6
# A sample runs a case enough times back to back to last SAMPLE_S (timeit's auto-range): one call of
# a 64-element dropout lasts microseconds, close to the timer's own cost and to a cold cache's.
SAMPLE_S, MAX_CALLS = 2e-3, 1 << 14


@dataclass
class Row:
    backend: str
    size: int
    dtype: str
    direction: str  # forward | backward
    name: str
    median_s: float  # per call
    repeats: int  # samples
    calls: int = 1  # calls per sample

    @property
    def ns_per_element(self) -> float:
        return self.median_s / self.size * 1e9

    def gb_per_s(self, itemsize: int) -> float:
        return 2 * self.size * itemsize / self.median_s / 1e9  # one read and one write per element


def _sample(fn: Callable[[], Any], sync: Callable[[], None], calls: int) -> float:
    """Wall time of ``calls`` back-to-back calls of ``fn``, then ``sync`` (a device's queue drained)."""
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    sync()
    return time.perf_counter() - t0


def _timer(fn: Callable[[], Any], sync: Callable[[], None], quick: bool) -> tuple[float, int, int]:
    """(median time per call, samples, calls per sample) of ``fn`` after one warm-up call.

    The calls per sample double until a sample lasts :data:`SAMPLE_S`; ``sync``
    waits for a device at the end of each sample, so queued kernels are counted.
    """
    fn()
    sync()
    calls = 1
    while calls < MAX_CALLS and _sample(fn, sync, calls) < SAMPLE_S:
        calls *= 2
    times: list[float] = []
    budget = 0.1 if quick else BUDGET_S
    start = time.perf_counter()
    while len(times) < (2 if quick else MIN_REPEATS) or (
        len(times) < MAX_REPEATS and time.perf_counter() - start < budget
    ):
        times.append(_sample(fn, sync, calls) / calls)
    return statistics.median(times), len(times), calls
