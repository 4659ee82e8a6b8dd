"""An independent, scalar, pure-Python statement of stream spec v1.

It shares no code with xdrop: Python's unbounded ints give the 64-bit product
directly (no limbs), so agreement with the library checks the library's
arithmetic strategies, not a copy of them. Slow; for a few thousand elements.
"""

from __future__ import annotations

from fractions import Fraction

M32 = (1 << 32) - 1


def philox4x32(ctr: tuple[int, ...], key: tuple[int, ...], rounds: int = 10) -> tuple[int, ...]:
    c0, c1, c2, c3 = ctr
    k0, k1 = key
    for r in range(rounds):
        if r > 0:
            k0, k1 = (k0 + 0x9E3779B9) & M32, (k1 + 0xBB67AE85) & M32
        prod0, prod1 = 0xD2511F53 * c0, 0xCD9E8D57 * c2
        c0, c1, c2, c3 = (prod1 >> 32) ^ c1 ^ k0, prod1 & M32, (prod0 >> 32) ^ c3 ^ k1, prod0 & M32
    return c0, c1, c2, c3


def threshold(p: float) -> int:
    return (1 << 32) - round(Fraction(p) * (1 << 32))


def keep(seed: int, step: int, index: int, p: float) -> bool:
    block, lane = divmod(index, 4)
    ctr = (block & M32, block >> 32, step & M32, step >> 32)
    word = philox4x32(ctr, (seed & M32, seed >> 32))[lane]
    return word < threshold(p)


def keep_bits(seed: int, step: int, start: int, n: int, p: float) -> list[bool]:
    return [keep(seed, step, i, p) for i in range(start, start + n)]


def pack_hex(bits: list[bool]) -> str:
    """Bits in flat order, 8 to a byte, most significant bit first, as hex."""
    out = bytearray()
    for i in range(0, len(bits), 8):
        byte = 0
        for j, b in enumerate(bits[i : i + 8]):
            byte |= int(b) << (7 - j)
        out.append(byte)
    return out.hex()
