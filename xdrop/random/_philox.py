"""Philox4x32 (Salmon et al., SC'11), written with standard array operations."""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any

from .._lib._compat import array_namespace, device, is_array_api_obj, numpy_namespace
from .._lib._values import check_dtype, check_integer, check_sequence
from ._words import MASK32, Word, add_with_carry, mulhilo, word_dtype

# Multipliers and Weyl key increments of Philox4x32 (Random123, philox.h).
PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85

DEFAULT_ROUNDS = 10
MAX_ROUNDS = 16


def philox_rounds(
    c0: Word, c1: Word, c2: Word, c3: Word, k0: Word, k1: Word, rounds: int
) -> tuple[Word, Word, Word, Word]:
    """Run ``rounds`` Philox4x32 rounds on words (arrays or Python ints).

    Words are ``uint32`` arrays, ``int64`` arrays holding values in
    ``[0, 2**32)`` (see :mod:`xdrop.random._words`), or Python ints.
    """
    for r in range(rounds):
        if r:
            k0 = add_with_carry(k0, PHILOX_W0)[0]
            k1 = add_with_carry(k1, PHILOX_W1)[0]
        hi0, lo0 = mulhilo(c0, PHILOX_M0)
        hi1, lo1 = mulhilo(c2, PHILOX_M1)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def _words_in(xp: ModuleType, name: str, values: Any, length: int, dev: Any) -> list[Any]:
    check_sequence(values, name, length, "uint32 arrays or ints")
    wdtype = word_dtype(xp)
    words = []
    for i, v in enumerate(values):
        if is_array_api_obj(v):
            check_dtype(v, xp.uint32, "uint32", f"{name}[{i}]")
            words.append(xp.astype(v, wdtype))
        else:
            word = check_integer(v, f"{name}[{i}]", 0, MASK32, "an integer in [0, 2**32) or a uint32 array")
            words.append(xp.asarray(word, dtype=wdtype, device=dev))
    return words


def philox4x32(
    counter: Sequence[Any], key: Sequence[Any], *, rounds: int = DEFAULT_ROUNDS
) -> tuple[Any, Any, Any, Any]:
    """Philox4x32 block function: four 32-bit words from a counter and a key.

    Parameters
    ----------
    counter : sequence of 4 uint32 arrays or Python ints
        The counter words ``(c0, c1, c2, c3)``.
    key : sequence of 2 uint32 arrays or Python ints
        The key words ``(k0, k1)``. Counter and key broadcast together.
    rounds : int, optional
        Number of rounds, 10 by default (Random123's ``philox4x32_10``);
        7 is the smallest the Philox authors found Crush-resistant.

    Returns
    -------
    tuple of 4 arrays
        ``uint32`` arrays of the broadcast shape, in the namespace and on the
        device of the array inputs (NumPy when every input is a Python int).

    Examples
    --------
    The first Random123 known-answer vector:

    >>> from xdrop.random import philox4x32
    >>> [f"{int(w):08x}" for w in philox4x32((0, 0, 0, 0), (0, 0))]
    ['6627e8d5', 'e169c58d', 'bc57ac4c', '9b00dbd8']
    """
    rounds = check_integer(rounds, "rounds", 1, MAX_ROUNDS)
    arrays = (
        [v for v in (*counter, *key) if is_array_api_obj(v)]
        if isinstance(counter, Sequence) and isinstance(key, Sequence)
        else []
    )
    xp = array_namespace(*arrays) if arrays else numpy_namespace()
    dev = device(arrays[0]) if arrays else None
    c = _words_in(xp, "counter", counter, 4, dev)
    k = _words_in(xp, "key", key, 2, dev)
    try:
        c0, c1, c2, c3, k0, k1 = xp.broadcast_arrays(*c, *k)
    except (ValueError, RuntimeError):  # NumPy raises ValueError, torch RuntimeError
        shapes = [tuple(w.shape) for w in (*c, *k)]
        raise ValueError(
            f"counter and key words must broadcast together, got shapes {shapes[:4]} and {shapes[4:]}"
        ) from None
    out = philox_rounds(c0, c1, c2, c3, k0, k1, rounds)
    # asarray: NumPy turns 0-d results into scalars; the contract is arrays.
    return tuple(xp.asarray(xp.astype(w, xp.uint32)) for w in out)
