"""Unsigned 64-bit values (seeds, steps) in the forms frameworks store them.

torch has no unsigned 64-bit dtype, so its buffers and ``(seed, step)`` tensors
hold the value's bits as an ``int64`` (two's complement); JAX and Keras hold it
as a ``uint32`` pair ``(low, high)``, which their default 32-bit integers
carry without ``jax_enable_x64``. Plain Python ints here: each framework makes
its own array of them.
"""

from __future__ import annotations

U64 = 1 << 64
MASK64 = U64 - 1
MASK32 = (1 << 32) - 1


def to_int64(value: int) -> int:
    """A value in ``[0, 2**64)`` as the int64 with the same bits.

    Examples
    --------
    >>> to_int64(2**64 - 1), to_int64(5)
    (-1, 5)
    """
    return value - U64 if value >= 1 << 63 else value


def from_int64(value: int) -> int:
    """The value in ``[0, 2**64)`` whose bits an int64 (or any int, taken mod 2**64) holds.

    Examples
    --------
    >>> from_int64(-1)
    18446744073709551615
    """
    return value & MASK64


def next_u64(value: int) -> int:
    """``value + 1``, wrapping from ``2**64 - 1`` to 0 (a step counter's increment)."""
    return (value + 1) & MASK64


def to_words(value: int) -> tuple[int, int]:
    """A value in ``[0, 2**64)`` as its 32-bit words ``(low, high)``.

    Examples
    --------
    >>> to_words(2**32 + 5)
    (5, 1)
    """
    return value & MASK32, value >> 32


def from_words(low: int, high: int) -> int:
    """The value whose 32-bit words are ``(low, high)``."""
    return low | high << 32
