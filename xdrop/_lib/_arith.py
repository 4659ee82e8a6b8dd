"""Exact output arithmetic: every constant rounded once, correctly, to the output dtype.

The stream decides *which* elements are kept; the output also needs constants
(the inverted-dropout scale, alpha dropout's ``a``, ``b``, ``c``). Each is an
exact real number -- a rational, or the square root of one -- rounded once,
half-even, to the output dtype, subnormals and overflow included (IEEE 754
round-to-nearest-even with unbounded exponent, then ``inf`` past the largest
finite value). Integer arithmetic only, so any implementation can reproduce it;
``docs/stream-spec.md`` states the rules and ``tests/spec_v1.py`` re-derives
them by another method.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # fractions (with decimal) is imported where a Fraction is made: not by import xdrop
    from fractions import Fraction

TWO32 = 1 << 32

# SELU's saturation value -lambda * alpha (Klambauer et al., "Self-Normalizing
# Neural Networks", 2017), the constant torch.nn.AlphaDropout uses; this binary64
# value is exact: the constants below are derived from it without rounding.
SELU_ALPHA_PRIME = -1.7580993408473766


@dataclass(frozen=True)
class FloatFormat:
    """A binary floating-point format: significand bits (with the implicit one), exponent range."""

    bits: int  # float16 11, bfloat16 8, float32 24, float64 53
    emin: int  # exponent of the smallest normal number
    emax: int  # exponent of the largest finite number

    @property
    def max(self) -> Fraction:
        from fractions import Fraction

        return Fraction(2**self.bits - 1) * Fraction(2) ** (self.emax - self.bits + 1)


def float_format(xp: ModuleType, dtype: Any) -> FloatFormat:
    """The :class:`FloatFormat` of a real floating dtype of namespace ``xp``, from its ``finfo``."""
    info = xp.finfo(dtype)
    _, e_eps = math.frexp(float(info.eps))  # eps = 2**(1 - bits) = 0.5 * 2**(2 - bits)
    _, e_tiny = math.frexp(float(info.smallest_normal))  # 2**emin = 0.5 * 2**(emin + 1)
    _, e_max = math.frexp(float(info.max))
    return FloatFormat(bits=2 - e_eps, emin=e_tiny - 1, emax=e_max - 1)


def _floor_log2(num: int, den: int) -> int:
    """floor(log2(num / den)) for positive integers, exactly."""
    e = num.bit_length() - den.bit_length()
    return e if (num << max(-e, 0)) >= (den << max(e, 0)) else e - 1


def _scaled(num: int, den: int, shift: int) -> tuple[int, int]:
    """``(num * 2**shift, den)`` as a pair of integers, for either sign of ``shift``."""
    return (num << shift, den) if shift >= 0 else (num, den << -shift)


def _finish(m: int, quantum_exp: int, fmt: FloatFormat, negative: bool) -> float:
    """The integer significand ``m`` times 2**quantum_exp, or inf past the largest finite value.

    After rounding, ``m`` has at most ``bits`` bits, or is exactly ``2**bits``
    (a carry), so the value is on the format's grid unless its exponent passes emax.
    """
    top = quantum_exp + m.bit_length() - 1
    out = math.inf if m and top > fmt.emax else math.ldexp(m, quantum_exp)
    return -out if negative else out


def round_rational(value: Fraction, fmt: FloatFormat) -> float:
    """``value`` rounded half-even to ``fmt`` (subnormals, overflow to inf), as an exact Python float.

    The quantum is ``2**Q`` with ``Q = max(floor(log2|value|), emin) - bits + 1``;
    the significand ``|value| / 2**Q`` is rounded half-even to an integer. A
    negative value that underflows gives ``-0.0``.
    """
    return round_ratio(abs(value.numerator), value.denominator, fmt, negative=value < 0)


def round_ratio(num: int, den: int, fmt: FloatFormat, *, negative: bool = False) -> float:
    """:func:`round_rational` of ``num / den`` (times -1 if ``negative``), integers ``num >= 0``, ``den > 0``."""
    if num == 0:
        return -0.0 if negative else 0.0
    quantum_exp = max(_floor_log2(num, den), fmt.emin) - (fmt.bits - 1)
    n, d = _scaled(num, den, -quantum_exp)
    m, r = divmod(n, d)
    if 2 * r > d or (2 * r == d and m % 2 == 1):
        m += 1
    return _finish(m, quantum_exp, fmt, negative)


def round_sqrt(square: Fraction, fmt: FloatFormat, *, negative: bool = False) -> float:
    """``sqrt(square)`` (times -1 if ``negative``) rounded half-even to ``fmt``, exactly.

    With ``E = floor(log2(sqrt(square))) = floor(floor(log2(square)) / 2)`` and
    the quantum ``2**Q``, ``Q = max(E, emin) - bits + 1``, the significand is
    the square root of ``s = square / 4**Q``: ``m = isqrt(floor(s))``, plus one
    when ``s > (m + 1/2)**2``, or when equal and ``m`` is odd.

    Examples
    --------
    >>> from fractions import Fraction
    >>> round_sqrt(Fraction(2), FloatFormat(53, -1022, 1023))  # the correctly rounded sqrt(2)
    1.4142135623730951
    """
    if square < 0:
        raise ValueError(f"square must be >= 0, got {square}")
    if square == 0:
        return -0.0 if negative else 0.0
    num, den = square.numerator, square.denominator
    quantum_exp = max(_floor_log2(num, den) // 2, fmt.emin) - (fmt.bits - 1)
    n, d = _scaled(num, den, -2 * quantum_exp)
    m = math.isqrt(n // d)
    half_up = (2 * m + 1) ** 2 * d  # compares 4 s with (2m + 1)**2
    if 4 * n > half_up or (4 * n == half_up and m % 2 == 1):
        m += 1
    return _finish(m, quantum_exp, fmt, negative)


@functools.lru_cache(maxsize=1024)
def inverted_scale(k: int, fmt: FloatFormat) -> float:
    """The inverted-dropout scale ``2**32 / K`` rounded once to ``fmt``; 0 for K = 0 (unused)."""
    return round_ratio(TWO32, k, fmt) if k else 0.0


@functools.lru_cache(maxsize=1024)
def alpha_constants(k: int, fmt: FloatFormat) -> tuple[float, float, float]:
    """Alpha dropout's ``(a, b, c)`` for keep count ``k``, each rounded once to ``fmt``.

    With ``q = k / 2**32`` and ``t = q * (1 + (1 - q) * alpha'**2)``, exact rationals:
    ``a = t**-1/2``, ``b = -(1 - q) * alpha' * t**-1/2 >= 0`` and
    ``c = q * alpha' * t**-1/2 < 0``, the exact reals, each rounded once.
    Kept elements become ``x * a + b``, dropped ones ``c`` (mean 0, variance 1
    for standard-normal input). ``k = 0`` (p = 1) gives ``+0`` for all three.

    Examples
    --------
    >>> alpha_constants(2**31, FloatFormat(53, -1022, 1023))  # p = 0.5
    (0.886404894665932, 0.7791939305180317, -0.7791939305180317)
    """
    if k == 0:
        return 0.0, 0.0, 0.0
    from fractions import Fraction

    q = Fraction(k, TWO32)
    alpha = Fraction(SELU_ALPHA_PRIME)
    t = q * (1 + (1 - q) * alpha**2)
    a = round_sqrt(1 / t, fmt)
    b = round_sqrt(((1 - q) * alpha) ** 2 / t, fmt)  # -(1 - q) alpha' >= 0
    c = round_sqrt((q * alpha) ** 2 / t, fmt, negative=True)
    return a, b, c
