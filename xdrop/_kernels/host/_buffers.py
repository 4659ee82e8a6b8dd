"""Host (CPU) fast paths on NumPy buffers: blocked NumPy and the compiled C kernel.

Both work on flat ranges of a C-contiguous buffer, so one driver splits a call
into per-thread ranges (NumPy ufuncs and the extension's calls release the GIL) and the
torch CPU path reuses them zero-copy through ``Tensor.numpy()``.

The NumPy engine generates Philox words for a piece of ``PIECE`` elements at a
time in preallocated ``uint64`` buffers (one 64-bit multiply gives both halves
of a 32x32-bit product), so its temporaries are a few hundred KiB whatever the
size of the array: no full-size uint32/uint64/float64 temporary.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading

# queue's C core: the queue module imports heapq (~10 ms of a fresh import xdrop).
from _queue import Empty, SimpleQueue
from collections.abc import Callable
from typing import Any

import numpy as np

from ..._lib._stream import KEEP_ALL_OR_NONE
from ..._lib._u64 import to_words
from ...random._philox import PHILOX_M0, PHILOX_M1, PHILOX_W0, PHILOX_W1
from ...random._words import MASK32
from . import _native

# The host engines, by the impl names that select them.
ENGINES = ("blocked", "compiled")
# Elements per piece of the NumPy engine: its ~10 buffers (~200 KiB) stay in L2.
PIECE = 1 << 14
# Below this many elements a call stays on the calling thread.
PARALLEL_MIN = 1 << 17
# Ranges handed to threads start at multiples of this (whole Philox blocks and C chunks).
ALIGN = 128
# Ranges per thread of a large call: a cancelled call waits for at most one range per thread.
_RANGES_PER_WORKER = 4

_M0, _M1, _LO = np.uint64(PHILOX_M0), np.uint64(PHILOX_M1), np.uint64(MASK32)
_S32 = np.uint64(32)
_pool_lock = threading.Lock()
# Calls waiting for a pool thread; the pool's threads, started on the first large call.
_calls: SimpleQueue[_Call] | None = None


def _workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


class _Call:
    """One ``run_ranges`` call: its ranges, which of them are taken or done, and a cancel flag.

    Any thread (the caller or a pool thread) takes a range from ``todo``, marks it
    taken, runs it unless the call is cancelled and marks it done. Only plain
    attribute and list-item stores and C-level queue operations touch the shared
    state: no lock that an exception raised in the caller (a Ctrl-C) could leave
    held, so a pool thread can never block on the caller.
    """

    def __init__(self, body: Callable[[int, int], None], ranges: list[tuple[int, int]]) -> None:
        self.body = body  # holds the arrays the ranges write: none is freed while a range runs
        self.ranges = ranges
        self.todo: SimpleQueue[int] = SimpleQueue()
        for i in range(len(ranges)):
            self.todo.put(i)
        self.state = [_QUEUED] * len(ranges)
        self.cancelled = False
        self.errors: list[BaseException] = []
        self.wake: SimpleQueue[None] = SimpleQueue()

    def work(self, caller: bool) -> None:
        """Run ranges until none is left; a pool thread records an error, the caller raises it."""
        while True:
            try:
                i = self.todo.get_nowait()
            except Empty:
                return
            self.state[i] = _TAKEN
            try:
                if not self.cancelled:  # read after marking: a cancelling caller waits for this range
                    _quiet(self.body, *self.ranges[i])
            except BaseException as exc:
                self.cancelled = True
                if caller:
                    raise
                self.errors.append(exc)
            finally:
                self.state[i] = _DONE
                self.wake.put(None)

    def settled(self) -> bool:
        """Every range done; once cancelled, no range running (those not taken never run)."""
        if self.cancelled:
            return _TAKEN not in self.state
        return all(s == _DONE for s in self.state)


_QUEUED, _TAKEN, _DONE = 0, 1, 2


def _serve(calls: SimpleQueue[_Call]) -> None:
    while True:
        calls.get().work(caller=False)


def _pool() -> SimpleQueue[_Call]:
    """The pool's queue of calls, starting its threads on first use.

    Daemon threads: idle ones never hold up the interpreter's exit, and a call
    never waits for a particular thread (the caller takes the ranges no thread took).
    """
    global _calls
    with _pool_lock:
        if _calls is None:
            _calls = SimpleQueue()
            for i in range(_workers() - 1):
                threading.Thread(target=_serve, args=(_calls,), name=f"xdrop-{i}", daemon=True).start()
        return _calls


def _forget_pool_in_child() -> None:
    """After ``fork``: the inherited pool has no threads (work sent to it would wait
    forever) and its lock may be held by a parent thread, so start both afresh."""
    global _calls, _pool_lock
    _calls = None
    _pool_lock = threading.Lock()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_forget_pool_in_child)


def _quiet(body: Callable[[int, int], None], lo: int, hi: int) -> None:
    with np.errstate(all="ignore"):
        body(lo, hi)


def run_ranges(n: int, body: Callable[[int, int], None]) -> None:
    """``body(lo, hi)`` over a partition of ``[0, n)``, on several threads when ``n`` is large.

    Floating-point warnings are off in ``body`` (NumPy's error state is per
    thread): a product such as ``-0 * inf`` (float16 at p near 1) is the
    specified result, as in torch, which never warns either.

    No range is running when this returns or raises, also when a signal handler
    raises (Ctrl-C) while the call runs: the other threads stop taking ranges and
    the call waits for the ones they run, then raises the interrupt.
    """
    pieces = min(_RANGES_PER_WORKER * _workers(), n // (PARALLEL_MIN // 2)) if n >= PARALLEL_MIN else 1
    if pieces <= 1 or _workers() == 1:
        _quiet(body, 0, n)
        return
    edges = [min(n, (n * i // pieces) // ALIGN * ALIGN) for i in range(pieces)] + [n]
    call = _Call(body, [(lo, hi) for lo, hi in itertools.pairwise(edges) if hi > lo])
    raised: BaseException | None = None
    started = False
    # One loop in one frame: an exception (a Ctrl-C, a second one during the wait) is caught by a
    # store with no call before it, where no signal handler runs, and the loop goes back to waiting.
    while True:
        try:
            if not started:
                started = True
                calls = _pool()
                for _ in range(min(_workers() - 1, len(call.ranges) - 1)):
                    calls.put(call)
                call.work(caller=True)  # the calling thread takes ranges rather than wait idle
            if raised is not None:
                call.cancelled = True
            while not call.settled():
                with contextlib.suppress(Empty):
                    call.wake.get(timeout=0.01)  # a missed wake-up costs at most the timeout
            break
        except BaseException as exc:
            raised = raised or exc
    if raised is not None:
        raise raised
    if call.errors:
        raise call.errors[0]


class _Scratch:
    """Buffers of the NumPy engine for one piece of up to ``PIECE`` elements."""

    def __init__(self) -> None:
        nb = PIECE // 4 + 1  # +1: a piece that starts mid-block spans one more block
        self.q0, self.q2, self.c1, self.c3, self.p0, self.p1 = (np.empty(nb, np.uint64) for _ in range(6))
        self.words = np.empty((nb, 4), np.uint32)
        self.flags = np.empty(4 * nb, np.bool_)


def _philox_words(s: _Scratch, block0: int, nb: int, seed: int, step: int) -> np.ndarray:
    """Words of Philox blocks ``block0 .. block0 + nb - 1``, shape (nb, 4): element order."""
    q0, q2, c1, c3, p0, p1 = (a[:nb] for a in (s.q0, s.q2, s.c1, s.c3, s.p0, s.p1))
    np.add(np.arange(nb, dtype=np.uint64), np.uint64(block0), out=p0)  # block < 2**62: no overflow
    np.bitwise_and(p0, _LO, out=q0)
    np.right_shift(p0, _S32, out=c1)
    step_lo, step_hi = to_words(step)
    q2.fill(step_lo)
    c3.fill(step_hi)
    k0, k1 = to_words(seed)
    for r in range(10):
        if r:
            k0, k1 = (k0 + PHILOX_W0) & MASK32, (k1 + PHILOX_W1) & MASK32
        np.multiply(q0, _M0, out=p0)  # exact: both factors < 2**32
        np.multiply(q2, _M1, out=p1)
        np.right_shift(p1, _S32, out=q0)  # c0 = hi(c2 * M1) ^ c1 ^ k0
        np.bitwise_xor(q0, c1, out=q0)
        np.bitwise_xor(q0, np.uint64(k0), out=q0)
        np.right_shift(p0, _S32, out=q2)  # c2 = hi(c0 * M0) ^ c3 ^ k1
        np.bitwise_xor(q2, c3, out=q2)
        np.bitwise_xor(q2, np.uint64(k1), out=q2)
        np.bitwise_and(p1, _LO, out=c1)  # c1 = lo(c2 * M1)
        np.bitwise_and(p0, _LO, out=c3)  # c3 = lo(c0 * M0)
    words = s.words[:nb]
    for lane, w in enumerate((q0, c1, q2, c3)):
        np.copyto(words[:, lane], w, casting="unsafe")  # values < 2**32: exact
    return words


def _numpy_flags(s: _Scratch, first: int, n: int, seed: int, step: int, k: int, keep: bool) -> np.ndarray:
    """Keep (or drop) flags of flat indices ``first .. first + n - 1``, n <= PIECE, 0 < k < 2**32."""
    block0 = first // 4
    nb = -(-(first + n) // 4) - block0
    words = _philox_words(s, block0, nb, seed, step)
    flags = s.flags[: 4 * nb].reshape(nb, 4)
    (np.less if keep else np.greater_equal)(words, np.uint32(k), out=flags)
    lo = first - 4 * block0
    return s.flags[lo : lo + n]


def _mask_numpy(out: np.ndarray, start: int, seed: int, step: int, k: int) -> None:
    def body(lo: int, hi: int) -> None:
        s = _Scratch()
        for i in range(lo, hi, PIECE):
            j = min(i + PIECE, hi)
            out[i:j] = _numpy_flags(s, start + i, j - i, seed, step, k, True)

    run_ranges(out.shape[0], body)


def _mask_c(lib: Any, out: np.ndarray, start: int, seed: int, step: int, k: int) -> None:
    ptr = out.ctypes.data

    def body(lo: int, hi: int) -> None:
        lib.xd_mask(start + lo, hi - lo, seed, step, k, ptr + lo)

    run_ranges(out.shape[0], body)


def mask_into(out: np.ndarray, start: int, seed: int, step: int, k: int, engine: str) -> None:
    """Keep flags of flat indices ``start ..`` into the contiguous 1-d bool ``out``."""
    if k in KEEP_ALL_OR_NONE:
        out.fill(k != 0)
        return
    lib = _native.library() if engine == "compiled" else None
    if lib is not None:
        _mask_c(lib, out, start, seed, step, k)
    else:
        _mask_numpy(out, start, seed, step, k)


def _dropout_numpy(src: np.ndarray, dst: np.ndarray, seed: int, step: int, k: int, scale: Any, start: int) -> None:
    def body(lo: int, hi: int) -> None:
        s = _Scratch()
        for i in range(lo, hi, PIECE):
            j = min(i + PIECE, hi)
            drop = _numpy_flags(s, start + i, j - i, seed, step, k, False)
            np.multiply(src[i:j], scale, out=dst[i:j])
            np.copyto(dst[i:j], 0, where=drop)  # +0, also where x is NaN or inf

    run_ranges(src.shape[0], body)


def _dropout_c(
    lib: Any, src: np.ndarray, dst: np.ndarray, seed: int, step: int, k: int, scale: Any, start: int
) -> None:
    fn = lib.xd_dropout_f32 if src.dtype == np.float32 else lib.xd_dropout_f64
    size = src.dtype.itemsize
    sp, dp, sc = src.ctypes.data, dst.ctypes.data, float(scale)

    def body(lo: int, hi: int) -> None:
        fn(sp + lo * size, dp + lo * size, start + lo, hi - lo, seed, step, k, sc)

    run_ranges(src.shape[0], body)


def _dropout_c_mask(
    lib: Any, src: np.ndarray, dst: np.ndarray, seed: int, step: int, k: int, scale: Any, start: int
) -> None:
    """Other dtypes (float16): the C mask a piece at a time, the product in NumPy."""

    def body(lo: int, hi: int) -> None:
        drop = np.empty(min(PIECE, hi - lo), np.bool_)
        for i in range(lo, hi, PIECE):
            j = min(i + PIECE, hi)
            d = drop[: j - i]
            lib.xd_mask(start + i, j - i, seed, step, k, d.ctypes.data)
            np.logical_not(d, out=d)
            np.multiply(src[i:j], scale, out=dst[i:j])
            np.copyto(dst[i:j], 0, where=d)

    run_ranges(src.shape[0], body)


def dropout_into(
    src: np.ndarray, dst: np.ndarray, seed: int, step: int, k: int, scale: float, engine: str, start: int = 0
) -> None:
    """``dst = where(keep, src * scale, 0)`` over flat indices ``start ..`` of contiguous 1-d ``src``/``dst``."""
    factor = src.dtype.type(scale)  # exact: scale_for rounds to the dtype
    if k == 0:
        dst.fill(0)
    elif k == 1 << 32:
        run_ranges(src.shape[0], lambda lo, hi: np.multiply(src[lo:hi], factor, out=dst[lo:hi]))
    elif (lib := _native.library() if engine == "compiled" else None) is not None:
        if src.dtype in (np.float32, np.float64):
            _dropout_c(lib, src, dst, seed, step, k, factor, start)
        else:
            _dropout_c_mask(lib, src, dst, seed, step, k, factor, start)
    else:
        _dropout_numpy(src, dst, seed, step, k, factor, start)


def dropout_array(
    x: np.ndarray, seed: int, step: int, k: int, scale: float, engine: str, out: Any = None, start: int = 0
) -> Any:
    """Dropout of a NumPy array into a new C-contiguous array (or ``out``, a NumPy view of one).

    ``start`` is the flat global index of ``x``'s first element (a contiguous block of a larger array).
    """
    src = x if x.flags.c_contiguous else x.copy(order="C")  # a copy only for strided views
    dst = np.empty(src.shape, src.dtype) if out is None else out
    if src.size:
        dropout_into(src.reshape(-1), dst.reshape(-1), seed, step, k, scale, engine, start)
    return dst


def default_engine() -> str:
    """``"compiled"`` when the compiled kernel is available, else ``"blocked"``."""
    return "compiled" if _native.library() is not None else "blocked"
