"""Stream spec v1: how (seed, step, index, p) decide each element.

This module *is* stream v1 (``docs/stream-spec.md`` states it in words); the
golden vectors in ``tests/data/`` freeze its output. Changing any of it needs a
new stream version, never an edit of v1: a v2 gets its own module and
:class:`StreamSpec`, and ``CURRENT`` names the one the public functions use.

- key    = (seed mod 2**32, seed >> 32)                      seed in [0, 2**64)
- block  = index >> 2,  lane = index & 3                     index in [0, 2**64)
- counter = (block mod 2**32, block >> 32, step mod 2**32, step >> 32)
- word   = Philox4x32-10(counter, key)[lane]
- p      = float(p) (binary64), K = 2**32 - round_half_even(p * 2**32)
- keep   = word < K
- scale  = 2**32 / K, rounded once to the output dtype (``_arith``)
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ..random._philox import DEFAULT_ROUNDS, philox_rounds
from ..random._words import MASK32, add_with_carry, word_dtype
from ._arith import float_format, inverted_scale
from ._u64 import to_words

if TYPE_CHECKING:
    from fractions import Fraction


@dataclass(frozen=True)
class StreamSpec:
    """A stream version: what dropout caches and golden files record.

    ``version`` is the number users see (``xdrop.STREAM_VERSION``); ``module``
    holds its rules; ``golden`` names its golden files under ``tests/data/``.
    """

    version: int
    generator: str
    module: str
    golden: tuple[str, ...]

    @property
    def tag(self) -> str:
        """A short string naming the version, e.g. ``"xdrop-stream-v1"``, for reports and file names."""
        return f"xdrop-stream-v{self.version}"


V1 = StreamSpec(
    version=1, generator="philox4x32-10", module=__name__, golden=("golden_v1.json", "golden_outputs_v1.json")
)
# The stream the public functions draw from.
CURRENT = V1
STREAM_VERSION = CURRENT.version


def check_stream_version(version: object, name: str) -> None:
    """Refuse state made under another stream version (it would regenerate other masks)."""
    if version != STREAM_VERSION:
        raise ValueError(
            f"{name}={version!r}: it was made under stream version {version!r}, but this xdrop draws from "
            f"stream version {STREAM_VERSION}, so its mask cannot be regenerated here"
        )


TWO32 = 1 << 32
WORDS_PER_BLOCK = 4
# Blocks generated at once by the reference, to bound its temporaries.
PIECE_BLOCKS = 1 << 18


def key_words(seed: int) -> tuple[int, int]:
    """The Philox key of a 64-bit seed: (low word, high word)."""
    return to_words(seed)


# The K that keep every element (2**32) or none (0): no word needs drawing, so every kernel
# answers them without the generator. A set, not a function: kernels test it per call.
KEEP_ALL_OR_NONE = frozenset((0, TWO32))


def keep_count(p: float) -> int:
    """K: how many of the 2**32 word values keep an element (drop probability p).

    ``p * 2**32`` is exact in binary64, so the only rounding is the documented
    half-even rounding to an integer: p has a resolution of 2**-32.
    """
    return TWO32 - round(p * TWO32)


def effective_keep(p: float) -> float:
    """The keep probability the threshold really implements, K / 2**32."""
    return keep_count(p) / TWO32


def round_to_significand(value: Fraction, bits: int) -> float:
    """``value`` (>= 1) rounded half-even to ``bits`` significant bits, exponent unbounded."""
    from fractions import Fraction  # here: not imported by import xdrop

    exponent = (value.numerator // value.denominator).bit_length() - 1
    shift = bits - 1 - exponent
    scaled = value * Fraction(2) ** shift
    return float(Fraction(round(scaled)) / Fraction(2) ** shift)


def significand_bits(xp: ModuleType, dtype: Any) -> int:
    """Significant bits of a floating dtype, from its machine epsilon."""
    _, exponent = math.frexp(float(xp.finfo(dtype).eps))  # eps = 2**(1 - bits)
    return 2 - exponent


def scale_for(k: int, xp: ModuleType, dtype: Any) -> float:
    """The inverted-dropout scale 2**32 / K, correctly rounded to ``dtype``.

    Returned as a Python float that ``dtype`` represents exactly, so every
    backend's conversion of it is exact too. It is ``inf`` where the rounded
    value overflows ``dtype`` (float16 with K <= 65552, see ``docs/stream-spec.md``),
    and 0 for K = 0 (p = 1), where every element is dropped and the scale is unused.
    """
    return inverted_scale(k, float_format(xp, dtype))


def block_words(
    xp: ModuleType, first_block: int, n_blocks: int, seed: int, step: int, dev: Any
) -> tuple[Any, Any, Any, Any]:
    """The four Philox words of blocks ``first_block .. first_block + n_blocks - 1``."""
    wdtype = word_dtype(xp)
    j = xp.arange(n_blocks, dtype=wdtype, device=dev)
    c0, carry = add_with_carry(j, first_block & MASK32)
    c1 = carry + (first_block >> 32)
    # Words as 0-d arrays, not Python ints: JAX without x64 rejects ints >= 2**31 beside uint32 arrays.
    c2, c3, k0, k1 = (xp.asarray(w, dtype=wdtype, device=dev) for w in (*to_words(step), *key_words(seed)))
    return philox_rounds(c0, c1, c2, c3, k0, k1, DEFAULT_ROUNDS)


def _check_flat_range(start: int, n: int) -> None:
    if start < 0 or n < 0 or start + n > 1 << 64:
        raise ValueError(f"flat indices must lie in [0, 2**64), got start={start}, n={n}")


def word_pieces(xp: ModuleType, start: int, n: int, seed: int, step: int, dev: Any) -> Iterator[Any]:
    """The words ``word(i)`` of flat indices ``start .. start + n - 1``, in 1-d pieces of at most
    ``4 * PIECE_BLOCKS`` (to bound the reference's temporaries), in order."""
    stop = start + n
    block = start // WORDS_PER_BLOCK
    while block * WORDS_PER_BLOCK < stop:
        n_blocks = min(PIECE_BLOCKS, -(-stop // WORDS_PER_BLOCK) - block)
        words = xp.reshape(xp.stack(block_words(xp, block, n_blocks, seed, step, dev), axis=1), (-1,))
        lo = max(start - block * WORDS_PER_BLOCK, 0)
        hi = min(stop - block * WORDS_PER_BLOCK, n_blocks * WORDS_PER_BLOCK)
        yield words[lo:hi]
        block += n_blocks


def words_flat(xp: ModuleType, start: int, n: int, seed: int, step: int, dev: Any) -> Any:
    """``word(i)`` for flat indices ``start .. start + n - 1`` (1-d, in ``word_dtype(xp)``).

    The raw material of every variate: keep decisions compare it with K, and
    :mod:`xdrop.random._variates` turns it into uniform floats.
    """
    _check_flat_range(start, n)
    pieces = list(word_pieces(xp, start, n, seed, step, dev))
    if not pieces:
        return xp.zeros((0,), dtype=word_dtype(xp), device=dev)
    return pieces[0] if len(pieces) == 1 else xp.concat(pieces)


def keep_flat(xp: ModuleType, start: int, n: int, seed: int, step: int, k: int, dev: Any) -> Any:
    """Keep decisions (bool, length n) for flat indices ``start .. start + n - 1``.

    The pure-standard reference of the stream: every fast path must equal it.
    The spec defines indices in [0, 2**64) only; beyond that the counter would wrap.
    """
    _check_flat_range(start, n)
    if k in KEEP_ALL_OR_NONE or n == 0:
        return xp.full((n,), k == TWO32, dtype=xp.bool, device=dev)
    threshold = xp.asarray(k, dtype=word_dtype(xp), device=dev)  # k < 2**32 here
    pieces = [w < threshold for w in word_pieces(xp, start, n, seed, step, dev)]
    return pieces[0] if len(pieces) == 1 else xp.concat(pieces)
