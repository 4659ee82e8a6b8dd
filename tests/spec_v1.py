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


def word(seed: int, step: int, index: int) -> int:
    block, lane = divmod(index, 4)
    ctr = (block & M32, block >> 32, step & M32, step >> 32)
    return philox4x32(ctr, (seed & M32, seed >> 32))[lane]


def keep(seed: int, step: int, index: int, p: float) -> bool:
    return word(seed, step, index) < threshold(p)


def uniform32(seed: int, step: int, index: int) -> Fraction:
    """The float32 uniform of "Other random numbers": the top 24 bits of word(i), over 2**24."""
    return Fraction(word(seed, step, index) // 256, 1 << 24)


def uniform64(seed: int, step: int, index: int) -> Fraction:
    """The float64 uniform: 27 bits of word(2i) above 26 bits of word(2i + 1), over 2**53."""
    high, low = word(seed, step, 2 * index) // 32, word(seed, step, 2 * index + 1) // 64
    return Fraction(high * (1 << 26) + low, 1 << 53)


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


# -- outputs: docs/stream-spec.md, "The output" -----------------------------------------------------
#
# Values are (sign, magnitude): sign 0 or 1, magnitude a Fraction, INF, or NAN.
# Rounding searches the bit patterns of the format (bisection over the ordered
# positive patterns, exact comparisons), a different method from the library's
# integer significand arithmetic.

INF, NAN = "inf", "nan"
# name: (significand bits with the implicit one, exponent bits)
FORMATS = {"float16": (11, 5), "bfloat16": (8, 8), "float32": (24, 8), "float64": (53, 11)}
ALPHA_PRIME = Fraction(-1.7580993408473766)


def _params(fmt: str) -> tuple[int, int, int]:
    p, ebits = FORMATS[fmt]
    return p - 1, ebits, (1 << (ebits - 1)) - 1  # fraction bits, exponent bits, bias


def decode(bits: int, fmt: str) -> tuple[int, object]:
    frac_bits, ebits, bias = _params(fmt)
    sign = bits >> (frac_bits + ebits)
    e = (bits >> frac_bits) & ((1 << ebits) - 1)
    f = bits & ((1 << frac_bits) - 1)
    if e == (1 << ebits) - 1:
        return sign, (NAN if f else INF)
    if e == 0:
        return sign, Fraction(f, 1 << frac_bits) * Fraction(2) ** (1 - bias)
    return sign, (1 + Fraction(f, 1 << frac_bits)) * Fraction(2) ** (e - bias)


def _inf_pattern(fmt: str) -> int:
    frac_bits, ebits, _ = _params(fmt)
    return ((1 << ebits) - 1) << frac_bits


def _pattern_value(b: int, fmt: str) -> Fraction:
    """Value of a positive pattern; the infinity pattern stands for 2**(emax + 1), as IEEE rounding treats it."""
    if b == _inf_pattern(fmt):
        return Fraction(2) ** (_params(fmt)[2] + 1)
    mag = decode(b, fmt)[1]
    assert isinstance(mag, Fraction)
    return mag


def round_magnitude(cmp, fmt: str) -> int:
    """The pattern nearest to a positive real r (ties to even), given cmp(y) = sign(y - r)."""
    lo, hi = 0, _inf_pattern(fmt)  # invariant: value(lo) <= r < value(hi), or r >= value(hi) = "infinity"
    if cmp(_pattern_value(hi, fmt)) <= 0:
        return hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if cmp(_pattern_value(mid, fmt)) <= 0:
            lo = mid
        else:
            hi = mid
    if cmp(_pattern_value(lo, fmt)) == 0:
        return lo
    c = cmp((_pattern_value(lo, fmt) + _pattern_value(hi, fmt)) / 2)
    if c > 0:
        return lo
    if c < 0:
        return hi
    return lo if lo % 2 == 0 else hi


def _sign_bit(fmt: str) -> int:
    frac_bits, ebits, _ = _params(fmt)
    return 1 << (frac_bits + ebits)


def encode_rational(sign: int, mag: Fraction, fmt: str) -> int:
    """sign * mag rounded once to fmt (mag >= 0)."""
    b = round_magnitude(lambda y: (y > mag) - (y < mag), fmt) if mag else 0
    return b | (_sign_bit(fmt) if sign else 0)


def encode_sqrt(sign: int, square: Fraction, fmt: str) -> int:
    """sign * sqrt(square) rounded once to fmt: compares y**2 with square, exactly."""
    b = round_magnitude(lambda y: (y * y > square) - (y * y < square), fmt) if square else 0
    return b | (_sign_bit(fmt) if sign else 0)


NAN_BITS = {"float16": 0x7E00, "bfloat16": 0x7FC0, "float32": 0x7FC00000, "float64": 0x7FF8000000000000}


def is_nan(bits: int, fmt: str) -> bool:
    return decode(bits, fmt)[1] == NAN


def multiply(x: int, y: int, fmt: str) -> int:
    """IEEE x * y rounded once; any NaN result is NAN_BITS (the spec leaves sign and payload open)."""
    (sx, mx), (sy, my) = decode(x, fmt), decode(y, fmt)
    sign = sx ^ sy
    if NAN in (mx, my) or (mx == 0 and my == INF) or (mx == INF and my == 0):
        return NAN_BITS[fmt]
    if INF in (mx, my):
        return _inf_pattern(fmt) | (_sign_bit(fmt) if sign else 0)
    assert isinstance(mx, Fraction) and isinstance(my, Fraction)
    return encode_rational(sign, mx * my, fmt)


def add(x: int, y: int, fmt: str) -> int:
    """IEEE x + y rounded once (round to nearest: an exact zero sum is +0 unless both are -0)."""
    (sx, mx), (sy, my) = decode(x, fmt), decode(y, fmt)
    if NAN in (mx, my) or (mx == INF and my == INF and sx != sy):
        return NAN_BITS[fmt]
    if mx == INF:
        return x
    if my == INF:
        return y
    assert isinstance(mx, Fraction) and isinstance(my, Fraction)
    total = (-mx if sx else mx) + (-my if sy else my)
    if total == 0:
        return _sign_bit(fmt) if (sx and sy) else 0
    return encode_rational(int(total < 0), abs(total), fmt)


def scale_bits(k: int, fmt: str) -> int:
    """2**32 / K rounded once (K > 0)."""
    return encode_rational(0, Fraction(1 << 32, k), fmt)


def alpha_bits(k: int, fmt: str) -> tuple[int, int, int]:
    """(a, b, c): t**-1/2, -(1 - q) alpha' t**-1/2, q alpha' t**-1/2, each rounded once; +0 for K = 0."""
    if k == 0:
        return 0, 0, 0
    q = Fraction(k, 1 << 32)
    t = q * (1 + (1 - q) * ALPHA_PRIME**2)
    a = encode_sqrt(0, 1 / t, fmt)
    b = encode_sqrt(0, ((1 - q) * ALPHA_PRIME) ** 2 / t, fmt)
    c = encode_sqrt(1, (q * ALPHA_PRIME) ** 2 / t, fmt)
    return a, b, c


ONE_BITS = {f: encode_rational(0, Fraction(1), f) for f in FORMATS}


def noise_index(index: int, shape: tuple[int, ...], noise_shape: tuple[int, ...]) -> int:
    """The flat index in noise_shape that element ``index`` of shape reads (size-1 axes read 0)."""
    coords = []
    for d in reversed(shape):
        index, r = divmod(index, d)
        coords.append(r)
    flat = 0
    for c, n in zip(reversed(coords), noise_shape, strict=True):
        flat = flat * n + (c if n != 1 else 0)
    return flat


def noise_shape_of(function: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The noise shapes of the dropout family's table."""
    spatial = {"dropout1d": 1, "dropout2d": 2, "dropout3d": 3}
    if function in spatial:
        s = spatial[function]
        return shape[: len(shape) - s] + (1,) * s
    if function == "feature_alpha_dropout":
        return shape[:2] + (1,) * (len(shape) - 2)
    if function == "drop_path":
        return shape[:1] + (1,) * (len(shape) - 1)
    return shape


def flush(bits: int, fmt: str) -> int:
    """A subnormal becomes the zero of its sign (what flush-to-zero hardware modes do)."""
    frac_bits, ebits, _ = _params(fmt)
    if (bits >> frac_bits) & ((1 << ebits) - 1) == 0:
        return bits & _sign_bit(fmt)
    return bits


def outputs(
    xbits: list[int],
    shape: tuple[int, ...],
    noise_shape: tuple[int, ...],
    seed: int,
    step: int,
    p: float,
    fmt: str,
    kind: str,
    flush_subnormals: bool = False,
) -> list[int]:
    """Output bits of one call. kind: "inverted" (x * scale), "unscaled" (x), "alpha" (x * a + b, c),
    or the backward passes "grad_inverted", "grad_unscaled", "grad_alpha" (dout * factor, +0).

    ``flush_subnormals``: the documented deviation of backends that flush
    subnormal operands and results of arithmetic to zero (XLA on CPU).
    """

    def ftz(b: int) -> int:
        return flush(b, fmt) if flush_subnormals else b

    k = threshold(p)
    n_noise = 1
    for d in noise_shape:
        n_noise *= d
    kept = keep_bits(seed, step, 0, n_noise, p)
    a, b, c = alpha_bits(k, fmt)
    factor = {"inverted": scale_bits(k, fmt) if k else 0, "unscaled": ONE_BITS[fmt], "alpha": a}[
        kind.removeprefix("grad_")
    ]
    out = []
    for i, x in enumerate(xbits):
        keep_i = kept[noise_index(i, shape, noise_shape)]
        if kind == "alpha":
            if keep_i:
                y = ftz(multiply(ftz(x), a, fmt))
                out.append(y if decode(b, fmt)[1] == 0 else ftz(add(y, b, fmt)))  # no add when b is 0 in fmt
            else:
                out.append(c)
        else:
            out.append(ftz(multiply(ftz(x), factor, fmt)) if keep_i else 0)
    return out
