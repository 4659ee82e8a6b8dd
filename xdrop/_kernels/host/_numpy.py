"""NumPy arrays through the host kernels: one C call for a small contiguous array, row-major order otherwise."""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from ..._lib._stream import KEEP_ALL_OR_NONE
from . import _buffers as _host
from . import _native

Kernel = Callable[[Any, ModuleType, int, int, int, float], Any]

# Below this many elements a C-contiguous float32/float64 NumPy array calls the C kernel
# directly: one extension call, no range splitting, no closures (the per-call cost is the point).
SMALL = _host.PARALLEL_MIN
# Up to this many elements the kernel takes the arrays themselves and runs with the GIL held
# (microseconds); above, it takes addresses and releases the GIL (their cost is then negligible).
BY_ARRAY_MAX = 1 << 12
_C_FUNCTIONS = {np.dtype(np.float32): "xd_dropout_f32", np.dtype(np.float64): "xd_dropout_f64"}


def _address(a: np.ndarray) -> int:
    """The address of ``a``'s first element."""
    address: int = a.__array_interface__["data"][0]
    return address


def contiguous_into(a: np.ndarray, out: np.ndarray, seed: int, step: int, k: int, scale: float, engine: str) -> Any:
    """Dropout of the C-contiguous ``a`` into ``out`` (C-contiguous, a's shape and dtype, not overlapping it)."""
    if a.size < SMALL and engine == "compiled" and k not in KEEP_ALL_OR_NONE and a.dtype in _C_FUNCTIONS:
        lib = _native.library()
        if lib is not None:
            by_array = lib.array_dropout.get(a.dtype.char) if a.size <= BY_ARRAY_MAX else None
            if by_array is not None:  # the arrays themselves: no addresses to fetch
                by_array(a, out, seed, step, k, scale)
                return out
            fn = getattr(lib, _C_FUNCTIONS[a.dtype])
            fn(_address(a), _address(out), 0, a.size, seed, step, k, scale)
            return out
    return _host.dropout_array(a, seed, step, k, scale, engine, out=out)


def numpy_kernel(engine: str) -> Kernel:
    def kernel(x: Any, xp: ModuleType, seed: int, step: int, k: int, scale: float) -> Any:
        a = x if type(x) is np.ndarray else np.asarray(x)
        if a.flags.c_contiguous:
            return contiguous_into(a, np.empty(a.shape, a.dtype), seed, step, k, scale, engine)
        return _strided_numpy(a, seed, step, k, scale, engine)

    return kernel


@functools.cache
def auto_kernel() -> Kernel:
    """The kernel ``impl="auto"`` selects for NumPy arrays (the host engine's), found once.

    What :func:`xdrop._kernels.select` returns for a NumPy array and ``"auto"``, without asking for
    the array's namespace: :func:`xdrop._functional._dropout.dropout`'s NumPy path calls it directly.
    """
    return numpy_kernel(_host.default_engine())


def host_dropout_into(x: np.ndarray, out: np.ndarray, seed: int, step: int, k: int, scale: float) -> Any:
    """Dropout of the C-contiguous ``x`` into ``out`` (C-contiguous, x's shape and dtype, not overlapping x)
    by the default host engine: what ``impl="auto"`` runs, without the allocation."""
    return contiguous_into(x, out, seed, step, k, scale, _host.default_engine())


def _strided_numpy(x: np.ndarray, seed: int, step: int, k: int, scale: float, engine: str) -> np.ndarray:
    """Dropout of a non-C-contiguous array into an array of the same layout (``empty_like``).

    The keep decisions are drawn in row-major order (a bool per element, a
    quarter of a float32 copy) and applied through NumPy's strided loops, so
    the bits equal those of the C-contiguous input.
    """
    out = np.empty_like(x)  # order="K": F-order and permuted layouts are kept
    keep = np.empty(x.size, np.bool_)
    _host.mask_into(keep, 0, seed, step, k, engine)
    with np.errstate(all="ignore"):  # -0 * inf at p near 1 in float16 is the specified result
        np.multiply(x, x.dtype.type(scale), out=out)
    np.copyto(out, 0, where=~keep.reshape(x.shape))  # +0, also where x is NaN or inf
    return out
