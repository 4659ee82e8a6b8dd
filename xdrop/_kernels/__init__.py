"""Dropout kernels: the pure-standard reference and, per backend, fast paths.

A dropout kernel takes ``(x, xp, seed, step, k, scale)`` and returns
``where(keep, x * scale, 0)`` with the keep decisions of stream spec v1 over
the flat row-major indices of ``x``. A mask kernel takes
``(xp, start, n, seed, step, k, device)`` and returns the keep decisions of
flat indices ``start .. start + n - 1`` as a 1-d bool array. Every fast path
must equal the reference bit for bit; the tests compare them on the same inputs.

``impl`` chooses: ``"auto"`` the fastest available for the array,
``"reference"`` the pure-standard one, ``"blocked"`` the blocked NumPy host
kernel, ``"compiled"`` the compiled C host kernel (both for NumPy arrays and
torch CPU tensors), ``"cuda"`` the CUDA kernels: Triton for torch CUDA tensors
when triton loads, else the NVRTC kernel through CuPy (always for CuPy arrays).
Dask runs the host kernel ``impl`` names on each chunk.

The choice is made by one object per array library (:mod:`._select`); it
depends only on the array's type, device kind and ``impl``, so it is cached:
a call pays one dict lookup, not the checks. This package is the face the
public functions call (``_kernels.select``, ...); its modules import one
another, never the package.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._lib._values import IMPLS, check_impl
from ._engines import HOST_IMPLS, MaskKernel
from ._reference import reference
from ._select import (
    FIRST_SEEN,
    LIBRARIES,
    Library,
    block_mask,
    library_of,
    refuse_traced,
    select,
    select_block,
    select_mask,
)
from .host._numpy import BY_ARRAY_MAX, SMALL, Kernel, auto_kernel, host_dropout_into

__all__ = [
    "BY_ARRAY_MAX",
    "HOST_IMPLS",
    "IMPLS",
    "LIBRARIES",
    "SMALL",
    "Kernel",
    "Library",
    "MaskKernel",
    "auto_kernel",
    "block_mask",
    "check_impl",
    "host_dropout_into",
    "library_of",
    "reference",
    "refuse_traced",
    "select",
    "select_block",
    "select_mask",
    "torch_dropout",
]


# The operator's entry point, ``_kernels/torch/_ops.py``'s ``dropout``, once torch has been seen: a list
# read per call, where an import statement would cost about 250 ns of a 64-element call's 4 us.
_TORCH_OPERATOR: list[Callable[..., Any]] = []


def torch_dropout(
    x: Any, seed: int, step: int, k: int, noise_shape: tuple[int, ...], a: float, b: float, c: float, impl: str
) -> Any:
    """The dropout family on a torch tensor: one autograd path, the registered operator under compile."""
    if not _TORCH_OPERATOR:  # a tensor reached here without library_of (which registers the operator)
        _register_torch_operator()
    return _TORCH_OPERATOR[0](x, seed, step, k, noise_shape, a, b, c, impl)


def _register_torch_operator() -> None:
    """Import the operator's module when torch is first seen, before a call uses it or takes a Generator's step.

    An import statement, not a look-up in ``sys.modules``: the statement waits while another
    thread runs the module, where the look-up would find it half-initialised; and
    torch.compile, when the first call is traced, runs the import rather than guarding on
    ``sys.modules`` (a guard that the import itself then breaks). ``library_of`` runs this
    before it caches torch's library, so a thread that finds the library finds the operator.
    """
    from .torch import _ops as _torch_ops

    if not _TORCH_OPERATOR:
        _TORCH_OPERATOR.append(_torch_ops.dropout)


FIRST_SEEN["torch"] = _register_torch_operator
