"""Dropout kernels: the pure-standard reference and, per backend, fast paths.

A kernel takes ``(x, xp, seed, step, k, scale)`` and returns
``where(keep, x * scale, 0)`` with the keep decisions of stream spec v1 over
the flat row-major indices of ``x``. Every fast path must equal
:func:`reference` bit for bit; the tests compare them on the same inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from ._reference import reference

Kernel = Callable[[Any, ModuleType, int, int, int, float], Any]

IMPLS = ("auto", "reference")


def select(xp: ModuleType, x: Any, impl: str) -> Kernel:
    """The kernel for ``x`` in namespace ``xp``: ``impl="reference"`` forces the reference."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got impl={impl!r}")
    return reference
