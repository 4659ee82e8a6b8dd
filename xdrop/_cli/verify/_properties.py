"""The three properties, each a check of one loaded backend that returns a measured figure and a verdict.

Used by :mod:`xdrop.verify` (which runs them over the registry's backends) and
by the tests (the reference builders). A check never imports a library itself:
it reaches the backend through :class:`xdrop._testing._backends.Backend`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from ..._functional import _dropout, _variants
from ..._lib._stream import keep_count, round_to_significand, significand_bits
from ..._testing._backends import Backend
from ...random import philox4x32
from ._attention import check_attention
from ._cell import Cell, central_differences

# Random123 tests/kat_vectors, philox4x32 10 (counter, key, expected).
KAT_10 = (
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
)
# Three cases of tests/data/golden_v1.json (a test checks they are copied
# faithfully): (seed, step, shape, p as float.hex, keep bits as MSB-first hex).
GOLDEN_V1 = (
    (42, 0, (3, 5), "0x1.999999999999ap-4", "f7fe"),
    (4294967295, 4294967296, (37,), "0x1.3333333333333p-2", "b7b7ffa1d0"),
    (18446744073709551615, 18446744073709551615, (64,), "0x1.0000000000000p-1", "f45eb368e60f3e81"),
)
PROPERTIES = ("equivalence", "expectation", "gradient", "sharding", "attention")
Z_LIMIT = 5.0  # two-sided false-alarm rate 5.7e-7 per z-score
EXPECTATION_N = 2**16
EXPECTATION_PS = (0.1, 0.5, 0.9)
SEED = 2**63 + 1  # above 2**32 and 2**63, so both key words and the sign bit matter
# dx = fl(dout * fl(1/keep)): relative error (1+d1)(1+d2)-1 <= 2u + u**2, plus the reference's own
# rounding where longdouble is no wider than float64.
GRADIENT_UNITS = 2.01 if np.finfo(np.longdouble).nmant >= 63 else 3.01
CASES = [((), 0.5), ((1,), 0.5), ((7,), 0.1), ((3, 5), 1 / 3), ((2, 3, 4), 0.9), ((1000,), 0.5), ((4, 0), 0.5)]


# -- property 1: seeded equivalence ---------------------------------------------------------------


def round_to_bfloat16(a: np.ndarray) -> np.ndarray:
    """float32 values rounded half-even to bfloat16, returned as float32 (finite inputs)."""
    bits = np.array(a, dtype=np.float32).view(np.uint32)  # np.array keeps 0-d shapes
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)
    return rounded.view(np.float32)


def expected_dropout(x: np.ndarray, p: float, seed: int, step: int, dtype: str) -> np.ndarray:
    """The NumPy reference of ``dropout`` on ``x`` in ``dtype``, in NumPy.

    For bfloat16, which NumPy lacks, ``x`` holds bfloat16 values as float32:
    the product of two bfloat16 values is exact in float32, so rounding it once
    to bfloat16 is the correctly rounded bfloat16 product.
    """
    if dtype != "bfloat16":
        out: np.ndarray = _dropout.dropout(x.astype(dtype), p, seed=seed, step=step, impl="reference")
        return out
    keep = _dropout.keep_mask(x.shape, p, seed=seed, step=step, xp=np, impl="reference")
    k = keep_count(p)
    scale = round_to_significand(Fraction(2**32, k), 8) if k else 0.0  # bfloat16 has 8 significant bits
    return np.where(keep, round_to_bfloat16(x * np.float32(scale)), np.float32(0))


def _bits_differing(got: np.ndarray, want: np.ndarray) -> int:
    if got.dtype != want.dtype or got.shape != want.shape:
        return max(want.nbytes * 8, 1)
    diff = np.bitwise_xor(got.reshape(-1).view(np.uint8), want.reshape(-1).view(np.uint8))
    return int(np.unpackbits(diff).sum())


def _pack_hex(bits: np.ndarray) -> str:
    return np.packbits(bits.reshape(-1).astype(np.uint8)).tobytes().hex()


@dataclass
class BackendResult:
    """One backend's line of the matrix: its cells, or why it did not run (``skipped``)."""

    name: str
    cells: dict[str, Cell] = field(default_factory=dict)
    skipped: str | None = None
    device: str | None = None
    dtypes: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.cells.values())


def check_equivalence(b: Backend) -> Cell:
    """Bits differing from the NumPy reference in every dtype; golden vectors; Random123 KAT."""
    differing = total = 0
    rng = np.random.default_rng(0)
    for dtype in b.dtypes:
        for shape, p in CASES:
            x = rng.standard_normal(shape).astype("float32" if dtype == "bfloat16" else dtype)
            xb = b.asarray(x, dtype)
            x_seen = b.to_numpy(xb)  # bfloat16: the rounded input, as float32
            want = expected_dropout(x_seen, p, SEED, 5, dtype)
            differing += _bits_differing(b.to_numpy(_dropout.dropout(xb, p, seed=SEED, step=5)), want)
            total += want.size * (16 if dtype == "bfloat16" else want.itemsize * 8)
    golden_bad = 0
    for seed, step, shape, p_hex, keep_hex in GOLDEN_V1:
        mask = _dropout.keep_mask(shape, float.fromhex(p_hex), seed=seed, step=step, xp=b.xp, device=b.device)
        golden_bad += _pack_hex(b.to_numpy(mask)) != keep_hex
    kat_bad = 0
    for ctr, key, want_words in KAT_10:
        words = philox4x32([b.from_numpy(np.asarray([c], dtype=np.uint32)) for c in ctr], key)
        got_words = tuple(int(b.to_numpy(b.xp.astype(w, b.xp.int64))[0]) for w in words)
        kat_bad += got_words != want_words
    n_golden, n_kat = len(GOLDEN_V1), len(KAT_10)
    return Cell(
        differing == 0 and golden_bad == 0 and kat_bad == 0,
        f"{differing}/{total} bits differ; golden {n_golden - golden_bad}/{n_golden}; KAT {n_kat - kat_bad}/{n_kat}",
        {"differing_bits": differing, "total_bits": total, "golden_failures": golden_bad, "kat_failures": kat_bad},
    )


# -- property 2: the 1/p expectation --------------------------------------------------------------


def _half_ulps_at_one(value: Fraction, dtype: str, b: Backend) -> float:
    """|value - 1| in units of the dtype's rounding error bound 2**-bits."""
    bits = 8 if dtype == "bfloat16" else significand_bits(b.xp, getattr(b.xp, dtype))
    return float(abs(value - 1) * 2**bits)


def check_expectation(b: Backend, n: int = EXPECTATION_N) -> Cell:
    """E[out] = x: a z-score of the kept fraction, and the exact identity scale * keep = 1.

    ``out = dropout(ones)`` takes the values 0 and ``scale``; its mean has
    expectation ``scale * keep``. The z-score tests the draws against that (a
    biased threshold fails it); ``|scale * keep - 1|`` must be at most one
    rounding of the dtype (a scale that is not 1/keep fails it). Together:
    E[out] = x up to one rounding. Worst over dtypes and p.
    """
    worst_z = worst_identity = 0.0
    for dtype in b.dtypes:
        ones = b.asarray(np.ones(n, dtype="float32" if dtype == "bfloat16" else dtype), dtype)
        for p in EXPECTATION_PS:
            keep = keep_count(p) / 2**32
            out = b.to_numpy(_dropout.dropout(ones, p, seed=12345, step=int(p * 10))).astype(np.float64)
            scale = float(out.max())
            z = (float(out.mean()) / scale - keep) / math.sqrt(keep * (1 - keep) / n) if scale > 0 else math.inf
            worst_z = max(worst_z, abs(z))
            identity = _half_ulps_at_one(Fraction(scale) * Fraction(keep_count(p), 2**32), dtype, b)
            worst_identity = max(worst_identity, identity)
    ok = worst_z < Z_LIMIT and worst_identity <= 1.0
    return Cell(
        ok,
        f"|z|max={worst_z:.2f}; |s*keep-1|={worst_identity:.2f} u",
        {"max_abs_z": worst_z, "identity_error_units": worst_identity, "n": n, "p": list(EXPECTATION_PS)},
    )


# -- property 3: the gradient identity ------------------------------------------------------------


def _finite_difference_error(b: Backend) -> float:
    """max relative |dropout_backward - central differences| in float64 on a 3x4 input."""
    rng = np.random.default_rng(2)
    x, dout = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    _out, cache = _dropout.dropout_forward(b.asarray(x), 0.5, seed=9, step=1)
    dx = b.to_numpy(_dropout.dropout_backward(b.asarray(dout), cache))
    numeric = central_differences(lambda a: b.to_numpy(_dropout.dropout(b.asarray(a), 0.5, seed=9, step=1)), x, dout)
    return float(np.max(np.abs(numeric - dx) / np.maximum(np.abs(dx), 1.0)))


def check_gradient(b: Backend) -> Cell:
    """dx = dout * mask / keep: backward == dropout(dout) bit for bit, == the formula, == autograd.

    In every dtype: bits differing between ``dropout_backward`` and dropout of
    ``dout`` (must be 0), and between autograd and ``dropout_backward`` where
    the library differentiates (must be 0); the error against
    ``dout * mask / keep`` computed in extended precision, in units of the dtype's
    rounding (at most 2: the scale's rounding and the product's); finite
    differences in float64 (relative error below 1e-6).
    """
    rng = np.random.default_rng(1)
    p, seed, step = 0.3, 77, 2
    x32, dout32 = rng.standard_normal((64, 33)), rng.standard_normal((64, 33))
    mask = _dropout.keep_mask(x32.shape, p, seed=seed, step=step, xp=np, impl="reference")
    differing = autograd_differing = 0
    worst_units = 0.0
    for dtype in b.dtypes:
        x = b.asarray(x32.astype("float32" if dtype == "bfloat16" else dtype), dtype)
        dout = b.asarray(dout32.astype("float32" if dtype == "bfloat16" else dtype), dtype)
        _out, cache = _dropout.dropout_forward(x, p, seed=seed, step=step)
        dx = _dropout.dropout_backward(dout, cache)
        dx_np = b.to_numpy(dx)
        differing += _bits_differing(dx_np, b.to_numpy(_dropout.dropout(dout, p, seed=seed, step=step)))
        # longdouble: on x86 its 64-bit significand makes the reference's own rounding negligible
        exact = b.to_numpy(dout).astype(np.longdouble) * mask * 2**32 / keep_count(p)
        bits = 8 if dtype == "bfloat16" else significand_bits(b.xp, getattr(b.xp, dtype))
        tiny = float(b.xp.finfo(getattr(b.xp, "float32" if dtype == "bfloat16" else dtype)).smallest_normal)
        err = np.abs(dx_np.astype(np.longdouble) - exact) / np.maximum(np.abs(exact), tiny)
        worst_units = max(worst_units, float(err.max()) * 2**bits)
        if b.autograd is not None:
            grad = b.autograd(x, dout, p, seed, step)
            autograd_differing += _bits_differing(b.to_numpy(grad), dx_np)
    fd = _finite_difference_error(b)
    ok = differing == 0 and autograd_differing == 0 and worst_units <= GRADIENT_UNITS and fd < 1e-6
    figure = f"bwd vs dropout(dout) {differing} bits; err {worst_units:.2f} u; fd {fd:.0e}"
    if b.autograd is not None:
        figure += f"; autograd {autograd_differing} bits"
    return Cell(
        ok,
        figure,
        {
            "differing_bits": differing,
            "autograd_differing_bits": autograd_differing if b.autograd is not None else None,
            "max_error_units": worst_units,
            "finite_difference_error": fd,
        },
    )


def check_sharding(b: Backend) -> Cell:
    """The sharding law: a block drawn with global_shape/global_start is the whole array's block."""
    return Cell(*check_law(b.from_numpy, b.to_numpy))


def check_law(from_numpy: Callable[[np.ndarray], Any], to_numpy: Callable[[Any], np.ndarray]) -> tuple[bool, str]:
    """Tiles of arrays, each drawn as a block of the whole, against NumPy's whole-array result.

    Returns ``(passed, figure)``: the figure counts the tiles whose bits differ.
    """
    rng = np.random.default_rng(0)
    seed, step, p = 2**63 + 1, 5, 0.3
    bad = total = 0
    cases: list[tuple[Callable[..., Any], tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = [
        (_dropout.dropout, (7, 9), (3, 4), (2, 7)),
        (_dropout.dropout, (8, 5), (1, 7), (5,)),
        (_variants.dropout1d, (6, 3, 4), (2, 4), (3,)),
    ]
    for fn, shape, rows, cols in cases:
        x = rng.standard_normal(shape).astype(np.float32)
        whole = fn(x, p, seed=seed, step=step)
        r0 = 0
        for r in rows:
            c0 = 0
            for c in cols:
                where = (slice(r0, r0 + r), slice(c0, c0 + c))
                tile = from_numpy(np.ascontiguousarray(x[where]))
                start = (r0, c0, *(0,) * (len(shape) - 2))
                got = to_numpy(fn(tile, p, seed=seed, step=step, global_shape=shape, global_start=start))
                bad += np.ascontiguousarray(got).tobytes() != np.ascontiguousarray(whole[where]).tobytes()
                total += 1
                c0 += c
            r0 += r
    return bad == 0, f"{total - bad}/{total} blocks equal the whole array's block"


CHECKS: dict[str, Callable[[Backend], Cell]] = {
    "equivalence": check_equivalence,
    "expectation": check_expectation,
    "gradient": check_gradient,
    "sharding": check_sharding,
    "attention": check_attention,
}
