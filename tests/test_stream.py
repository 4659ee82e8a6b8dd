"""Stream spec v1: golden vectors, the independent scalar spec, the scale."""

import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from spec_v1 import keep_bits, pack_hex, threshold

import xdrop
from xdrop._stream import TWO32, keep_count, keep_flat, scale_for

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
    import xdrop._stream as stream

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
    from xdrop._stream import CURRENT, V1

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
