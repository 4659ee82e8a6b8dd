"""Exact 32-bit word arithmetic on any standard namespace.

Philox needs the high and low halves of a 32x32-bit product, 32-bit wrapping
addition and XOR. Namespaces differ in what they can do with unsigned words:
NumPy, CuPy, JAX (without x64) and array-api-strict have full ``uint32``
arithmetic, while PyTorch has a ``uint32`` dtype but no shift, add or compare
on it. So a word is held either as ``uint32`` or as an ``int64`` in
``[0, 2**32)``, chosen per namespace by :func:`word_dtype`.

Every operation here is written so that *no intermediate reaches 2**32*: the
product is split into 16-bit limbs, whose partial products are below 2**32. The
same code is therefore exact in both representations, never wraps a signed
integer, and never needs a 64-bit type (which JAX lacks without its x64 flag).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from .._lib._compat import is_torch_namespace

MASK16 = 0xFFFF
MASK32 = 0xFFFFFFFF

Word = Any  # an array of words, or a Python int in [0, 2**32)


def word_dtype(xp: ModuleType) -> Any:
    """The dtype that holds 32-bit words in ``xp``: ``uint32``, or ``int64`` for torch."""
    # torch: "rshift_cpu" / "lt_cpu" not implemented for 'UInt32' (torch 2.13).
    if is_torch_namespace(xp):
        return xp.int64
    return xp.uint32


def mulhilo(a: Word, m: int) -> tuple[Word, Word]:
    """High and low 32-bit halves of ``a * m`` for words ``a`` and constant ``m``.

    Schoolbook multiplication on 16-bit limbs: each partial product is below
    2**32, and the final high word is the true high half, also below 2**32.
    """
    m_lo, m_hi = m & MASK16, m >> 16
    a_lo, a_hi = a & MASK16, a >> 16
    ll = a_lo * m_lo
    lh = a_lo * m_hi
    hl = a_hi * m_lo
    hh = a_hi * m_hi
    mid = (ll >> 16) + (lh & MASK16) + (hl & MASK16)  # < 3 * 2**16
    lo = ((mid & MASK16) << 16) | (ll & MASK16)
    hi = hh + (lh >> 16) + (hl >> 16) + (mid >> 16)
    return hi, lo


def add_with_carry(a: Word, b: Word) -> tuple[Word, Word]:
    """``(a + b) mod 2**32`` and the carry out (0 or 1), on 16-bit limbs."""
    low = (a & MASK16) + (b & MASK16)
    high = (a >> 16) + (b >> 16) + (low >> 16)  # < 2**17 + 1
    return ((high & MASK16) << 16) | (low & MASK16), high >> 16
