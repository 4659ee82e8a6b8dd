"""Stream spec v1: golden vectors, the independent scalar spec, the scale."""

import json
import math
import random
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from spec_v1 import alpha_bits, decode, keep_bits, pack_hex, scale_bits, threshold

import xdrop
from xdrop._lib._arith import FloatFormat, alpha_constants, float_format, inverted_scale
from xdrop._lib._stream import TWO32, keep_count, keep_flat, scale_for

GOLDEN = json.loads((Path(__file__).parent / "data" / "golden_v1.json").read_text())


def test_golden_file_is_v1():
    assert GOLDEN["stream_version"] == xdrop.STREAM_VERSION == 1
    assert len(GOLDEN["cases"]) >= 10


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=lambda c: f"seed{c['seed']}-step{c['step']}-{c['shape']}")
def test_golden_vectors(backend, case):
    shape = tuple(case["shape"])
    p = float.fromhex(case["p"])
    mask = xdrop.keep_mask(shape, p, seed=case["seed"], step=case["step"], xp=backend.xp, device=backend.device)
    assert tuple(mask.shape) == shape and mask.dtype == backend.xp.bool
    bits = backend.to_numpy(mask).reshape(-1).tolist()
    assert pack_hex(bits) == case["keep"]


@pytest.mark.parametrize(
    "start, n",
    [(0, 13), (3, 10), (2**32 - 6, 12), (2**34 + 1, 9), (2**62 - 3, 7), (2**64 - 9, 9)],
)
def test_reference_matches_scalar_spec_at_any_index(backend, start, n):
    """Flat indices around 2**32, 2**34 and the end of the 64-bit range."""
    seed, step, p = 0xDEADBEEFCAFEF00D, 2**40 + 3, 0.5
    got = keep_flat(backend.xp, start, n, seed, step, keep_count(p), backend.device)
    assert backend.to_numpy(got).tolist() == keep_bits(seed, step, start, n, p)


def test_decisions_do_not_depend_on_chunking(numpy_ref):
    xp = numpy_ref.xp
    whole = keep_flat(xp, 0, 1001, 11, 2, keep_count(0.4), None)
    for cut in (1, 4, 5, 500, 1000):
        parts = [
            keep_flat(xp, 0, cut, 11, 2, keep_count(0.4), None),
            keep_flat(xp, cut, 1001 - cut, 11, 2, keep_count(0.4), None),
        ]
        assert np.array_equal(np.concatenate(parts), whole)


def test_reference_pieces_join_seamlessly(monkeypatch, numpy_ref):
    """The reference generates in pieces; a piece boundary must not show."""
    import xdrop._lib._stream as stream

    whole = keep_flat(numpy_ref.xp, 1, 97, 5, 0, keep_count(0.5), None)
    monkeypatch.setattr(stream, "PIECE_BLOCKS", 3)
    assert np.array_equal(keep_flat(numpy_ref.xp, 1, 97, 5, 0, keep_count(0.5), None), whole)


@pytest.mark.parametrize("p", [0.0, 2.0**-33, 2.0**-32, 0.1, 1 / 3, 0.5, 0.9, 1 - 2.0**-32, 1.0])
def test_threshold(p):
    k = keep_count(p)
    assert k == threshold(p)
    assert abs(Fraction(TWO32 - k, TWO32) - Fraction(p)) <= Fraction(1, 2 * TWO32)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("p", [0.0, 0.1, 1 / 3, 0.5, 0.9, 0.999])
def test_scale_times_effective_keep_is_one(numpy_ref, dtype, p):
    """The exact identity behind E[out] = x: one rounding of 1/keep, nothing more."""
    xp = numpy_ref.xp
    dt = getattr(xp, dtype)
    k = keep_count(p)
    scale = scale_for(k, xp, dt)
    assert float(np.asarray(scale, dtype=dtype)) == scale  # exactly representable
    bits = {"float16": 11, "float32": 24, "float64": 53}[dtype]
    assert abs(Fraction(scale) * Fraction(k, TWO32) - 1) <= Fraction(1, 2**bits)


def test_scale_overflows_float16_only_near_one(numpy_ref):
    xp = numpy_ref.xp
    assert math.isinf(scale_for(keep_count(1 - 2.0**-20), xp, xp.float16))
    assert math.isfinite(scale_for(keep_count(1 - 2.0**-20), xp, xp.float32))


# -- versioned stream, other random numbers ----------------------------------------------------------


def test_stream_version_is_the_current_specs():
    from xdrop._lib._stream import CURRENT, V1

    assert CURRENT is V1 and xdrop.STREAM_VERSION == V1.version == 1
    assert V1.tag == "xdrop-stream-v1"
    assert all((Path(__file__).parent / "data" / name).exists() for name in V1.golden)


def test_backward_refuses_a_cache_of_another_stream_version(numpy_ref):
    import dataclasses

    x = np.ones(6)
    out, cache = xdrop.dropout_forward(x, 0.5, seed=3)
    assert cache.stream_version == 1
    other = dataclasses.replace(cache, stream_version=2)
    with pytest.raises(ValueError, match=r"cache.stream_version=2.*stream version 1"):
        xdrop.dropout_backward(x, other)
    assert np.array_equal(xdrop.dropout_backward(x, cache), out)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("start", [0, 3, 2**33 + 1])
def test_uniforms_match_the_scalar_spec(backend, dtype, start):
    """Exact constructions: the same bits on every backend, equal to the scalar statement."""
    from spec_v1 import uniform32, uniform64

    from xdrop.random._variates import uniform_flat

    if dtype not in backend.dtypes:
        pytest.skip(f"{backend.name} has no {dtype} here")
    seed, step, n = 0xDEADBEEF12345678, 7, 11
    with backend.scope():
        got = backend.to_numpy(
            uniform_flat(backend.xp, start, n, seed, step, getattr(backend.xp, dtype), backend.device)
        )
    spec = uniform32 if dtype == "float32" else uniform64
    assert got.dtype == np.dtype(dtype)
    assert [Fraction(float(u)) for u in got] == [spec(seed, step, i) for i in range(start, start + n)]
    assert ((got >= 0) & (got < 1)).all()


# -- output constants: the library's integer arithmetic against the scalar spec's bisection ----------

FORMAT_OF = {
    "float16": FloatFormat(11, -14, 15),
    "bfloat16": FloatFormat(8, -126, 127),
    "float32": FloatFormat(24, -126, 127),
    "float64": FloatFormat(53, -1022, 1023),
}
# K values at the edges (1, the float16 overflow boundary, 2**32 - 1) and a seeded sample.
EDGE_KS = [1, 2, 3, 65551, 65552, 65553, 2**31, 2**32 - 1, 2**32]
SAMPLE_KS = EDGE_KS + random.Random(20261127).sample(range(1, 2**32), 150)


def spec_float(bits: int, fmt: str) -> float:
    sign, mag = decode(bits, fmt)
    value = math.inf if mag == "inf" else float(mag)
    return -value if sign else value


@pytest.mark.parametrize("dtype", list(FORMAT_OF))
def test_float_format_reads_finfo(dtype, backend):
    if dtype not in backend.dtypes:
        pytest.skip(f"{backend.name} has no {dtype} here")
    assert float_format(backend.xp, getattr(backend.xp, dtype)) == FORMAT_OF[dtype]


@pytest.mark.parametrize("dtype", list(FORMAT_OF))
def test_constants_equal_the_scalar_spec(dtype):
    """scale, a, b, c for 159 K values: two independent correct roundings agree, bit for bit (signs too)."""
    fmt = FORMAT_OF[dtype]
    for k in SAMPLE_KS:
        want = [spec_float(b, dtype) for b in (scale_bits(k, dtype), *alpha_bits(k, dtype))]
        got = [inverted_scale(k, fmt), *alpha_constants(k, fmt)]
        assert [math.copysign(1, v) for v in got] == [math.copysign(1, v) for v in want]
        assert got == want, f"K={k}"


def test_float16_scale_overflows_exactly_at_k_65552(numpy_ref):
    assert math.isinf(scale_for(65552, numpy_ref.xp, numpy_ref.xp.float16))
    assert scale_for(65553, numpy_ref.xp, numpy_ref.xp.float16) == 65504.0
    assert Fraction(TWO32, 65552) > 65520 > Fraction(TWO32, 65553)  # 65520: midpoint of 65504 and 2**16


def test_float16_subnormal_constant_is_rounded_once(numpy_ref):
    """The issue's case: c at K = 1 is a float16 subnormal; two roundings gave 0x80de."""
    out = xdrop.alpha_dropout(np.zeros(4, np.float16), 1 - 2**-32, seed=0)
    assert out.view(np.uint16).tolist() == [0x80DF] * 4
    assert alpha_bits(1, "float16")[2] == 0x80DF


def test_no_add_rule_reads_the_rounded_b(numpy_ref):
    """At K = 2**32 - 1, b underflows in float16: a kept -0 stays -0 (it became +0 when b was tested in binary64)."""
    x = np.full(64, -0.0, np.float16)
    assert alpha_constants(2**32 - 1, FORMAT_OF["float16"])[1] == 0.0
    out = xdrop.alpha_dropout(x, 2.0**-32, seed=0)
    kept = np.array(keep_bits(0, 0, 0, 64, 2.0**-32))
    assert kept.any() and (np.signbit(out[kept]) & (out[kept] == 0)).all()


def test_p_is_converted_to_binary64_first():
    third = Fraction(1, 3)
    assert keep_count(float(third)) == threshold(float(third))
    out = xdrop.dropout(np.ones(64), third, seed=5)
    assert np.array_equal(out, xdrop.dropout(np.ones(64), float(third), seed=5))
