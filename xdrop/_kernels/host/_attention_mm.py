"""Attention with the host kernel's own products (``Kernels.attention_mm``): parts, threads and buffers.

torch's CPU attention (:mod:`xdrop._kernels.torch._attention`) runs the
compiled routine through :func:`forward` and :func:`backward`, on NumPy views
of its tensors: q ``(N, L, E)``, k ``(N, S, E)``, v ``(N, S, Ev)`` float32,
C-contiguous. ``fixed`` is what every attention call of the routine ends with
(``L, S, scale, bias, so, si, sl, ss, inner, causal, seed, step, k, a,
shared``; see ``_philox_module.c``). The problems and their query rows are cut
into parts (:func:`parts`) that ``threads`` threads take in turn: the team of
the OpenMP runtime whose ``GOMP_parallel`` is at address ``parallel``, or,
where that is 0, the calling thread and a pool of Python threads (the routine
releases the GIL). JAX calls the same routine from XLA custom calls
(``src/xla_attention.c``, which cuts the parts the same way in C).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from functools import partial
from itertools import pairwise
from typing import Any

import numpy as np

__all__ = ["backward", "cpu_threads", "forward", "in_parallel", "join", "parts", "pool"]

# Calls per thread: the threads share them out as they finish, so one slowed by another process on its
# core takes fewer.
MM_CALLS_PER_THREAD = 4


def cpu_threads() -> int:
    """The cores this process may run on (its affinity where the platform tells it, else the CPU count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def parts(n: int, length: int, threads: int, backward: bool) -> list[tuple[int, int, int, int]]:
    """``(n0, n1, i0, i1)``: about ``MM_CALLS_PER_THREAD`` calls per thread, runs of whole problems where
    there are enough problems, else each problem's rows in parts. In the backward, rows are split only
    where there are fewer problems than threads (each such part adds into its own ``dk`` and ``dv``)."""
    threads = max(1, threads)
    want = threads * MM_CALLS_PER_THREAD
    if n >= (threads if backward else want):
        count = min(n, want)
        cuts = [n * t // count for t in range(count + 1)]
        return [(a, b, 0, length) for a, b in pairwise(cuts) if b > a]
    per = -(-(threads if backward else want) // n)
    cuts = [length * t // per for t in range(per + 1)]
    return [(i, i + 1, a, b) for i in range(n) for a, b in pairwise(cuts) if b > a]


def _run(
    kernel: Any,
    addresses: tuple[int, ...],
    table: Sequence[tuple[int, ...]],
    fixed: tuple[Any, ...],
    threads: int,
    parallel: int,
) -> None:
    """The parts (``(n0, n1, i0, i1, dk address, dv address)``) through the routine in one call where
    ``parallel`` is set (or one thread suffices), else one call per part on :func:`in_parallel`'s threads."""
    rows = np.array(table, dtype=np.int64)
    if parallel or threads <= 1 or len(table) == 1:
        kernel(*addresses, rows.ctypes.data, len(table), parallel, threads, *fixed)
        return
    step = rows.strides[0]
    calls = [partial(kernel, *addresses, rows.ctypes.data + j * step, 1, 0, 1, *fixed) for j in range(len(table))]
    in_parallel(calls, threads)


def forward(
    kernel: Any, q: Any, k: Any, v: Any, out: Any, lse: Any, fixed: tuple[Any, ...], threads: int, parallel: int
) -> None:
    """Fill ``out`` ``(N, L, Ev)`` and ``lse`` ``(N, L)`` (float32, C-contiguous) with the routine."""
    n, length, e = q.shape
    addresses = (q.ctypes.data, k.ctypes.data, v.ctypes.data, 0, out.ctypes.data, lse.ctypes.data, 0, e, v.shape[2])
    table = [(*part, 0, 0) for part in parts(n, length, threads, backward=False)]
    _run(kernel, addresses, table, fixed, threads, parallel)


def backward(
    kernel: Any, q: Any, k: Any, v: Any, grads: tuple[Any, ...], fixed: tuple[Any, ...], threads: int, parallel: int
) -> None:
    """``grads = (dout, lse, dq, dk, dv)``: write ``dq``, add into ``dk`` and ``dv`` (float32, C-contiguous).
    Where a problem's rows are split into parts, each part adds into its own ``dk``, ``dv``, summed after."""
    dout, lse, dq, dk, dv = grads
    n, length, e = q.shape
    cuts = parts(n, length, threads, backward=True)
    split = len(cuts) > n
    if split:
        dks = np.zeros((len(cuts), *dk.shape[1:]), np.float32)
        dvs = np.zeros((len(cuts), *dv.shape[1:]), np.float32)
    table = []
    for j, part in enumerate(cuts):
        gk, gv = (dks[j], dvs[j]) if split else (dk[part[0]], dv[part[0]])
        table.append((*part, gk.ctypes.data, gv.ctypes.data))
    addresses = (q.ctypes.data, k.ctypes.data, v.ctypes.data, dout.ctypes.data, 0, lse.ctypes.data, dq.ctypes.data)
    _run(kernel, (*addresses, e, v.shape[2]), table, fixed, threads, parallel)
    if split:
        for j, part in enumerate(cuts):
            dk[part[0]] += dks[j]
            dv[part[0]] += dvs[j]


# Thread pools by (process, size): a forked child (a DataLoader worker) inherits the dict, not the threads.
_pools: dict[tuple[int, int], Any] = {}
_pools_lock = threading.Lock()


def pool(threads: int) -> Any:
    """This process's pool of ``threads - 1`` threads (the calling thread is the last one)."""
    key = (os.getpid(), threads)
    with _pools_lock:
        if key not in _pools:
            from concurrent.futures import ThreadPoolExecutor

            _pools[key] = ThreadPoolExecutor(threads - 1, thread_name_prefix="xdrop-attention")
        return _pools[key]


def join(futures: list[Any]) -> None:
    """Wait for every future, then raise the first error (a Ctrl-C included).

    The calls write the caller's arrays through their addresses: the caller must not
    unwind (and free them) while one still runs, so an interrupt waits for the rest first.
    """
    from concurrent.futures import wait

    interrupted: BaseException | None = None
    while True:
        try:
            wait(futures)
            break
        except KeyboardInterrupt as exc:
            interrupted = exc
    for future in futures:
        future.result()
    if interrupted is not None:
        raise interrupted


def in_parallel(calls: Sequence[Callable[[], Any]], threads: int) -> None:
    """Run the calls on the calling thread and ``threads - 1`` pool threads, each taking the next call not
    yet taken until none is left (a thread slowed by another process on its core, or by an OpenMP
    runtime's threads still spinning after their last operation, takes fewer); return when all are done.
    """
    threads = min(threads, len(calls))
    if threads <= 1:
        for call in calls:
            call()
        return
    order = iter(range(len(calls)))  # next() on it is atomic under the GIL
    failed: list[BaseException] = []

    def work() -> None:
        for i in order:
            if failed:
                return
            try:
                calls[i]()
            except BaseException as exc:
                failed.append(exc)
                raise

    workers = pool(threads)
    futures = [workers.submit(work) for _ in range(threads - 1)]
    try:
        work()
    finally:
        join(futures)
