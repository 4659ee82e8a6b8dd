"""The reference kernel: stream spec v1 in standard array operations only."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from .._lib._compat import device, size
from .._lib._stream import keep_flat


def reference(x: Any, xp: ModuleType, seed: int, step: int, k: int, scale: float) -> Any:
    """``where(keep, x * scale, 0)`` with the reference keep decisions."""
    n = size(x)
    if n is None:  # lazy arrays of unknown size are handled by their own kernel
        raise ValueError("x must have a known shape")
    keep = xp.reshape(keep_flat(xp, 0, n, seed, step, k, device(x)), x.shape)
    return xp.where(keep, x * scale, xp.zeros_like(x))
