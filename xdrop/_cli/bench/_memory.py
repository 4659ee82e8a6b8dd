"""The memory rows of ``python -m xdrop bench``: peak extra bytes of a call, bytes autograd saves."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import Any


def _peak_extra_numpy(fn: Callable[[], Any]) -> int:
    """Peak bytes allocated during ``fn()`` (NumPy reports its buffers to tracemalloc)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        out = fn()
        peak = tracemalloc.get_traced_memory()[1] - base
        del out
    finally:
        tracemalloc.stop()
    return peak


def _peak_extra_cuda(fn: Callable[[], Any], torch: Any) -> int:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = fn()
    torch.cuda.synchronize()
    peak = int(torch.cuda.max_memory_allocated() - base)
    del out
    return peak


def _saved_bytes(fn: Callable[[], Any], torch: Any) -> int:
    saved: list[Any] = []

    def pack(t: Any) -> Any:
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(t.numel() * t.element_size() for t in saved)
