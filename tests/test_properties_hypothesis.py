"""Property-based tests (hypothesis) of the three properties, on every backend.

Every expected value comes from the independent scalar spec (``spec_v1``) and
from exact rational arithmetic, never from xdrop itself: the keep decisions, the
threshold K, the correctly rounded scale and the product ``x * scale`` (one IEEE
multiplication in the output dtype). The examples are drawn deterministically
(the ``xdrop`` hypothesis profile in conftest.py: ``derandomize=True``).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from helpers import SIGNIFICAND_BITS, TWO32, assert_same_bits, correctly_rounded, expected_dropout, spec_scale
from hypothesis import given, settings
from hypothesis import strategies as st
from spec_v1 import keep_bits, threshold

import xdrop
from xdrop._lib._stream import keep_count, scale_for

U64 = st.integers(0, 2**64 - 1)
MAX_ELEMENTS = 64  # the scalar spec costs ~30 us per element


def p_with_keep_count(k: int) -> float:
    """The p whose threshold is exactly K = k (exact in binary64)."""
    return (TWO32 - k) / TWO32


# p values at the edges of the 32-bit resolution and of float16's scale range:
# the smallest subnormal, halfway ties of the rounding to 2**-32, and the K where
# 2**32 / K crosses float16's largest finite value (65504; overflow from 65520).
SPECIAL_P = [
    0.0,
    5e-324,
    2.0**-1022,
    2.0**-33,
    3 * 2.0**-33,
    2.0**-32,
    0.5,
    1 - 2.0**-53,
    1 - 2.0**-33,
    1 - 2.0**-32,
    1.0,
    *(p_with_keep_count(k) for k in (1, 2, 3, 65535, 65536, 65537, 65552, 65553, 65569)),
]
PS = st.one_of(st.sampled_from(SPECIAL_P), st.floats(0.0, 1.0))


def dtypes_of(backend) -> list[str]:
    return list(backend.dtypes)  # the dtypes this backend has


# -- inputs ---------------------------------------------------------------------------------------


@st.composite
def views(draw, backend, dtype: str):
    """A possibly non-contiguous view of a random base array, on the backend and as NumPy.

    Returns (x on the backend, the same values as a contiguous NumPy array
    (float32 carrying bfloat16), the view's shape).
    """
    ndim = draw(st.integers(0, 4))
    base_shape = tuple(draw(st.lists(st.integers(0, 6), min_size=ndim, max_size=ndim)))
    steps = draw(st.lists(st.sampled_from([1, 1, 2, -1, -2]), min_size=ndim, max_size=ndim))
    transpose = draw(st.booleans())
    np_dtype = "float32" if dtype == "bfloat16" else dtype
    exponent = draw(st.integers(-20, 14)) if dtype in ("float16", "bfloat16") else draw(st.integers(-60, 60))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    base = (rng.standard_normal(base_shape) * 2.0**exponent).astype(np_dtype)
    if dtype == "bfloat16":
        base = (base.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)  # exact bfloat16 values
    index = (*(slice(None, None, s) for s in steps), Ellipsis)  # "...": a 0-d view stays an array
    axes = tuple(reversed(range(ndim)))
    view_np = base[index]
    if transpose:
        view_np = view_np.transpose(axes)
    shape = view_np.shape
    if math.prod(shape) > MAX_ELEMENTS:
        from hypothesis import reject

        reject()

    xb = backend.asarray(base)
    if dtype == "bfloat16":
        import torch

        xb = xb.to(torch.bfloat16)
    if backend.name.startswith("torch"):
        # torch has no negative strides: flip (a copy) then a positive-step slice.
        for axis, s in enumerate(steps):
            if s < 0:
                xb = backend.xp.flip(xb, axis=axis)
        view_b = xb[(*(slice(None, None, abs(s)) for s in steps), Ellipsis)]
    else:
        view_b = xb[index]
    if transpose:
        view_b = backend.xp.permute_dims(view_b, axes)
    return view_b, np.array(view_np, order="C"), shape


@st.composite
def noise_shapes(draw, shape):
    return tuple(draw(st.sampled_from([None, d, 1])) if d != 1 else 1 for d in shape)


def resolved(noise_shape, shape):
    return tuple(d if n is None else n for n, d in zip(noise_shape, shape, strict=True))


def to_numpy(backend, a) -> np.ndarray:
    return backend.to_numpy(a)


# -- property 1: the same bits everywhere, equal to the spec -----------------------------------------


@settings(max_examples=60)
@given(data=st.data(), p=PS, seed=U64, step=U64)
def test_dropout_is_the_spec_on_any_view(backend, data, p, seed, step):
    dtype = data.draw(st.sampled_from(dtypes_of(backend)), label="dtype")
    x, x_np, shape = data.draw(views(backend, dtype), label="x")
    noise = data.draw(st.one_of(st.none(), noise_shapes(shape)), label="noise_shape")
    mask_shape = shape if noise is None else resolved(noise, shape)
    before = to_numpy(backend, x).copy()
    with np.errstate(over="ignore", invalid="ignore"):
        out = xdrop.dropout(x, p, seed=seed, step=step, noise_shape=noise)
        reference = xdrop.dropout(x, p, seed=seed, step=step, noise_shape=noise, impl="reference")
    want = expected_dropout(x_np, p, seed, step, mask_shape, dtype)
    assert_same_bits(to_numpy(backend, out), want)
    assert_same_bits(to_numpy(backend, reference), want)
    assert_same_bits(to_numpy(backend, x), before)  # x untouched
    assert type(out) is type(x) and out.dtype == x.dtype


# -- property 2: the expectation identity, exact by construction --------------------------------------


@settings(max_examples=80)
@given(data=st.data(), p=PS)
def test_scale_is_the_correctly_rounded_inverse_keep(backend, data, p):
    """scale = round(2**32 / K) in the dtype, so scale * K / 2**32 = 1 within one rounding."""
    dtype = data.draw(st.sampled_from(dtypes_of(backend)), label="dtype")
    k = keep_count(p)
    assert k == threshold(p)
    assert abs(Fraction(TWO32 - k, TWO32) - Fraction(p)) <= Fraction(1, 2 * TWO32)
    xdt = backend.xp.bfloat16 if dtype == "bfloat16" else getattr(backend.xp, dtype)
    scale = scale_for(k, backend.xp, xdt)
    assert scale == spec_scale(p, dtype)
    if k and math.isfinite(scale):
        assert abs(Fraction(scale) * Fraction(k, TWO32) - 1) <= Fraction(1, 2 ** SIGNIFICAND_BITS[dtype])
    # The scale a real call applies: dropout(ones) holds exactly `scale` where kept, +0 elsewhere.
    ones = backend.asarray(np.ones(16, dtype="float32" if dtype == "bfloat16" else dtype))
    if dtype == "bfloat16":
        ones = ones.to(backend.xp.bfloat16)
    got = to_numpy(backend, xdrop.dropout(ones, p, seed=3, step=4)).astype("float64")
    keep = np.array(keep_bits(3, 4, 0, 16, p))
    assert np.all(got[keep] == scale)
    assert np.all(got[~keep] == 0) and not np.signbit(got[~keep]).any()


# -- property 3: the gradient identity ------------------------------------------------------------


@settings(max_examples=40)
@given(data=st.data(), p=PS, seed=U64, step=U64)
def test_backward_is_dropout_of_dout(backend, data, p, seed, step):
    dtype = data.draw(st.sampled_from(dtypes_of(backend)), label="dtype")
    x, x_np, shape = data.draw(views(backend, dtype), label="x")
    dout_np = np.array(x_np.reshape(-1)[::-1].reshape(shape) * x_np.dtype.type(-0.5), order="C")
    dout = backend.asarray(dout_np)
    if dtype == "bfloat16":
        dout = dout.to(backend.xp.bfloat16)
    noise = data.draw(st.one_of(st.none(), noise_shapes(shape)), label="noise_shape")
    mask_shape = shape if noise is None else resolved(noise, shape)
    with np.errstate(over="ignore", invalid="ignore"):
        _, cache = xdrop.dropout_forward(x, p, seed=seed, step=step, noise_shape=noise)
        dx = xdrop.dropout_backward(dout, cache)
        again = xdrop.dropout(dout, p, seed=seed, step=step, noise_shape=noise)
    assert_same_bits(to_numpy(backend, dx), to_numpy(backend, again))
    assert_same_bits(to_numpy(backend, dx), expected_dropout(dout_np, p, seed, step, mask_shape, dtype))
    if backend.name.startswith("torch"):
        xg = x.detach().clone().requires_grad_()
        xdrop.dropout(xg, p, seed=seed, step=step, noise_shape=noise).backward(dout)
        assert_same_bits(to_numpy(backend, xg.grad), to_numpy(backend, dx))


def test_the_independent_rounding_agrees_with_numpy_where_numpy_rounds_once():
    """A check of this file's own oracle: for float64, Python's float(Fraction) is correctly rounded."""
    for k in (1, 3, 65537, 2**31 + 1, 2**32 - 1, 2**32):
        assert correctly_rounded(Fraction(TWO32, k), "float64") == float(Fraction(TWO32, k))
    assert correctly_rounded(Fraction(65520), "float16") == math.inf  # halfway past 65504 rounds to even: inf
    assert correctly_rounded(Fraction(65519), "float16") == 65504.0


@pytest.mark.parametrize("p", SPECIAL_P)
def test_special_p_threshold_against_exact_rounding(p):
    """K = 2**32 - round_half_even(p * 2**32), p * 2**32 taken exactly."""
    exact = Fraction(p) * TWO32
    floor = exact.numerator // exact.denominator
    frac = exact - floor
    rounded = floor + (1 if frac > Fraction(1, 2) or (frac == Fraction(1, 2) and floor % 2) else 0)
    assert keep_count(p) == TWO32 - rounded


def test_autograd_gradient_is_zero_where_dropped_even_when_the_float16_scale_overflows(torch_backend):
    """Found by the property above: where(keep, x * inf, 0) gave dropped elements NaN gradients."""
    import torch

    p = p_with_keep_count(3)  # scale 2**32 / 3 overflows float16
    x = torch.ones(64, dtype=torch.float16, device=torch_backend.device, requires_grad=True)
    out = xdrop.dropout(x, p, seed=1)
    out.backward(torch.ones_like(out))
    _, cache = xdrop.dropout_forward(x.detach(), p, seed=1)
    dx = xdrop.dropout_backward(torch.ones_like(out), cache)
    assert torch.isinf(out).sum() == torch.isinf(dx).sum() < 64
    assert torch.equal(x.grad, dx)
