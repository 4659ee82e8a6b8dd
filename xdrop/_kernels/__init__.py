"""Dropout kernels: the pure-standard reference and, per backend, fast paths.

A dropout kernel takes ``(x, xp, seed, step, k, scale)`` and returns
``where(keep, x * scale, 0)`` with the keep decisions of stream spec v1 over
the flat row-major indices of ``x``. A mask kernel takes
``(xp, start, n, seed, step, k, device)`` and returns the keep decisions of
flat indices ``start .. start + n - 1`` as a 1-d bool array. Every fast path
must equal the reference bit for bit; the tests compare them on the same inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from .._compat import is_dask_namespace, is_jax_namespace
from .._stream import keep_flat
from ._reference import reference

Kernel = Callable[[Any, ModuleType, int, int, int, float], Any]
MaskKernel = Callable[[ModuleType, int, int, int, int, int, Any], Any]

IMPLS = ("auto", "reference")


def check_impl(impl: str) -> str:
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got impl={impl!r}")
    return impl


def select(xp: ModuleType, x: Any, impl: str) -> Kernel:
    """The dropout kernel for ``x`` in namespace ``xp``: ``impl="reference"`` forces the reference."""
    check_impl(impl)
    if is_dask_namespace(xp):  # lazy: each chunk runs the NumPy kernels of impl
        from ._dask import dask_dropout

        return dask_dropout(impl)
    if is_jax_namespace(xp) and impl == "auto":
        from ._jax import jax_dropout

        return jax_dropout
    return reference


def select_mask(xp: ModuleType, impl: str) -> MaskKernel:
    """The mask kernel for namespace ``xp``: ``impl="reference"`` forces the reference."""
    check_impl(impl)
    if is_dask_namespace(xp):
        from ._dask import dask_mask

        return dask_mask(impl)
    if is_jax_namespace(xp) and impl == "auto":
        from ._jax import jax_mask

        return jax_mask
    return keep_flat
