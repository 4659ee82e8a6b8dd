"""From the stream's 32-bit words to other random numbers: the home of new variates.

Dropout needs only ``word(i) < K``. A variant that needs other random numbers
(uniform floats, and from them anything built with exact arithmetic) takes
them from here, so every backend gets the same bits. The constructions use only
shifts, integer-to-float conversions of values below 2**24 or 2**53 and
multiplications by powers of two, all exact in IEEE arithmetic, so no library's
rounding can differ (``docs/stream-spec.md``, "Other random numbers"):

- float32: ``u(i) = (word(i) >> 8) * 2**-24``, in [0, 1) on a grid of 2**-24;
- float64: ``u(i) = ((word(2i) >> 5) * 2**26 + (word(2i + 1) >> 6)) * 2**-53``,
  in [0, 1) on a grid of 2**-53 (NumPy's ``random_standard_uniform`` construction).

A variant must draw them with a ``step`` (or seed) of its own, not the one its
keep decisions use: a float32 uniform at index i is a function of the same
word as the keep decision at index i.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from .._lib._stream import words_flat


def uniform_from_words32(xp: ModuleType, words: Any) -> Any:
    """float32 uniforms in [0, 1) from 32-bit words: ``(w >> 8) * 2**-24``, exactly."""
    return xp.astype(words >> 8, xp.float32) * (2.0**-24)


def uniform_from_words64(xp: ModuleType, high: Any, low: Any) -> Any:
    """float64 uniforms in [0, 1) from word pairs: ``((high >> 5) * 2**26 + (low >> 6)) * 2**-53``, exactly."""
    top = xp.astype(high >> 5, xp.float64) * float(1 << 26)  # < 2**53: exact
    return (top + xp.astype(low >> 6, xp.float64)) * (2.0**-53)


def uniform_flat(xp: ModuleType, start: int, n: int, seed: int, step: int, dtype: Any, dev: Any) -> Any:
    """Uniforms ``u(i)`` in [0, 1) for flat indices ``start .. start + n - 1``, float32 or float64.

    Examples
    --------
    >>> import numpy as np
    >>> from xdrop.random._variates import uniform_flat
    >>> uniform_flat(np, 0, 3, 7, 0, np.float32, None)
    array([0.9545971 , 0.7501522 , 0.11417735], dtype=float32)
    """
    if dtype == xp.float32:
        return uniform_from_words32(xp, words_flat(xp, start, n, seed, step, dev))
    if dtype == xp.float64:
        words = words_flat(xp, 2 * start, 2 * n, seed, step, dev)
        return uniform_from_words64(xp, words[0::2], words[1::2])
    raise TypeError(f"dtype must be float32 or float64, got dtype={dtype}")
