"""The three properties on every backend, plus the API's contract."""

import math
from fractions import Fraction

import numpy as np
import pytest
from conftest import FLOAT_DTYPES
from helpers import expected_dropout, input_on, random_input
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from spec_v1 import keep_bits

import xdrop
from xdrop import verify
from xdrop._lib._stream import keep_count

SHAPES = [(), (0,), (1,), (7,), (3, 5), (2, 3, 4), (1, 1, 9), (4, 0, 2), (1025,)]
PS = [0.0, 0.1, 1 / 3, 0.5, 0.9, 1.0]
DTYPES = ["float32", "float64"]


# -- property 1: seeded equivalence ---------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("p", PS)
def test_same_bits_on_every_backend(backend, float_dtype, shape, p):
    """Every dtype the backend has; bfloat16 against NumPy's exact float32 product rounded once."""
    x, x_np = input_on(backend, shape, float_dtype)
    out = xdrop.dropout(x, p, seed=7, step=3)
    assert out.dtype == x.dtype and tuple(out.shape) == shape
    ref = verify.expected_dropout(x_np, p, 7, 3, float_dtype)
    got = backend.to_numpy(out)
    assert got.dtype == ref.dtype and got.shape == ref.shape
    assert got.tobytes() == ref.tobytes()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.25, 0.5, 0.8])
def test_equals_independent_scalar_spec(backend, dtype, p):
    x_np = random_input((6, 11), dtype, seed=1)
    got = backend.to_numpy(xdrop.dropout(backend.asarray(x_np), p, seed=2**63 + 5, step=2**33))
    assert got.tobytes() == expected_dropout(x_np, p, 2**63 + 5, 2**33).tobytes()


@settings(max_examples=20, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    shape=st.lists(st.integers(0, 9), max_size=3).map(tuple),
    p=st.one_of(st.floats(0, 1), st.sampled_from([0.0, 2.0**-32, 0.5, 1 - 2.0**-32, 1.0])),
    seed=st.integers(0, 2**64 - 1),
    step=st.integers(0, 2**64 - 1),
)
def test_any_shape_p_seed_step(backend, float_dtype, shape, p, seed, step):
    """Generated cases (derandomized, so the same ones every run): the backend's bits equal
    the NumPy reference's, and the reference's decisions equal the independent scalar spec."""
    x, x_np = input_on(backend, shape, float_dtype, seed=len(shape))
    got = backend.to_numpy(xdrop.dropout(x, p, seed=seed, step=step))
    assert got.tobytes() == verify.expected_dropout(x_np, p, seed, step, float_dtype).tobytes()
    mask = xdrop.keep_mask(shape, p, seed=seed, step=step, xp=np, impl="reference")
    assert mask.reshape(-1).tolist() == keep_bits(seed, step, 0, math.prod(shape), p)


@pytest.mark.parametrize("p", [0.5, 0.3])
def test_bfloat16_is_torchs_own_product(torch_backend, p):
    """Independent of the NumPy emulation: torch's bfloat16 multiply by torch's rounding of 1/keep.

    1/keep is 2 and 1.4285714...: neither is near a bfloat16 tie, so rounding
    it from float64 (twice, through float32) gives the correctly rounded scale.
    """
    import torch

    dev = torch_backend.device
    x = torch.randn(64, generator=torch.Generator().manual_seed(0)).to(device=dev, dtype=torch.bfloat16)
    out = xdrop.dropout(x, p, seed=9)
    assert out.dtype == torch.bfloat16
    keep = xdrop.keep_mask((64,), p, seed=9, xp=torch, device=dev)
    scale = torch.tensor(2**32 / keep_count(p), dtype=torch.float64).to(torch.bfloat16)
    assert torch.equal(out, torch.where(keep, x * scale.to(dev), torch.zeros_like(x)))


def test_non_contiguous_views(backend):
    base = random_input((8, 10), "float32")
    view = base[::2, 1::3]
    out = backend.to_numpy(xdrop.dropout(backend.asarray(view), 0.5, seed=4))
    assert out.tobytes() == xdrop.dropout(np.ascontiguousarray(view), 0.5, seed=4).tobytes()
    transposed = backend.to_numpy(xdrop.dropout(backend.xp.permute_dims(backend.asarray(base), (1, 0)), 0.5, seed=4))
    assert transposed.tobytes() == xdrop.dropout(np.ascontiguousarray(base.T), 0.5, seed=4).tobytes()


def test_preserves_namespace_device_dtype_shape(backend):
    x = backend.asarray(random_input((3, 4), "float32"))
    out = xdrop.dropout(x, 0.5, seed=1)
    assert type(out) is type(x)
    assert out.dtype == x.dtype and tuple(out.shape) == tuple(x.shape)
    from array_api_compat import device

    assert device(out) == device(x)


def test_dropped_elements_are_exact_zeros_even_for_nan_and_inf(backend):
    x_np = np.array([np.nan, np.inf, -np.inf, -1.0] * 16, dtype="float32")
    out = backend.to_numpy(xdrop.dropout(backend.asarray(x_np), 0.5, seed=3))
    keep = xdrop.keep_mask((64,), 0.5, seed=3, xp=np)
    assert 0 < keep.sum() < 64
    dropped = out[~keep]
    assert np.all(dropped == 0) and not np.signbit(dropped).any()
    np.testing.assert_array_equal(out[keep], x_np[keep] * 2)


def test_p_zero_keeps_everything_and_p_one_drops_everything(backend):
    x_np = random_input((50,), "float64")
    x = backend.asarray(x_np)
    assert backend.to_numpy(xdrop.dropout(x, 0.0, seed=1)).tobytes() == x_np.tobytes()
    assert not backend.to_numpy(xdrop.dropout(x, 1.0, seed=1)).any()


def test_input_is_never_modified(backend):
    x_np = random_input((40,), "float32")
    x = backend.asarray(x_np.copy())
    xdrop.dropout(x, 0.5, seed=1)
    _out, cache = xdrop.dropout_forward(x, 0.5, seed=1)
    xdrop.dropout_backward(x, cache)
    assert backend.to_numpy(x).tobytes() == x_np.tobytes()


def test_training_false_is_the_identity(backend):
    x = backend.asarray(random_input((5,), "float32"))
    assert xdrop.dropout(x, 0.5, seed=1, training=False) is x


def test_steps_and_seeds_give_different_masks(numpy_ref):
    masks = {xdrop.keep_mask((256,), 0.5, seed=s, step=t, xp=np).tobytes() for s in range(3) for t in range(3)}
    assert len(masks) == 9


def test_generator_advances_and_matches_explicit_steps():
    gen = xdrop.Generator(11, step=5)
    x = np.ones(32)
    outs = [xdrop.dropout(x, 0.5, seed=gen) for _ in range(3)]
    assert gen.step == 8
    for i, out in enumerate(outs):
        assert out.tobytes() == xdrop.dropout(x, 0.5, seed=11, step=5 + i).tobytes()
    _, cache = xdrop.dropout_forward(x, 0.5, seed=gen)
    assert (cache.seed, cache.step, gen.step) == (11, 8, 9)


def test_seed_none_draws_fresh_masks():
    x = np.ones(1024)
    assert xdrop.dropout(x, 0.5).tobytes() != xdrop.dropout(x, 0.5).tobytes()


def test_no_global_random_state_is_touched():
    state = np.random.get_state()[1].copy()
    xdrop.dropout(np.ones(10), 0.5, seed=1)
    xdrop.dropout(np.ones(10), 0.5)
    assert np.array_equal(np.random.get_state()[1], state)


# -- property 2: the 1/p expectation --------------------------------------------------------------


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_expectation_is_x(backend, float_dtype, p):
    """E[dropout(ones)] = 1 up to one rounding of the dtype, on real draws.

    ``out`` takes the values 0 and ``scale`` (read from the output, not from
    the library); its mean over n = 2**16 draws must be ``scale * keep``
    within 5 standard errors (two-sided false-alarm rate 5.7e-7 per seed; the
    seeds are fixed, so the outcome is deterministic), and ``scale * keep``
    must be 1 within the dtype's rounding bound 2**-bits. In float32/float64
    that bound is far below the standard error, so the mean is also 1 within
    5 standard errors directly.
    """
    n = 2**16
    ones = backend.asarray(np.ones(n, "float32" if float_dtype == "bfloat16" else float_dtype), float_dtype)
    keep = keep_count(p) / 2**32
    bits = {"float16": 11, "bfloat16": 8, "float32": 24, "float64": 53}[float_dtype]
    for seed in (1, 2):
        out = backend.to_numpy(xdrop.dropout(ones, p, seed=seed, step=17)).astype(np.float64)
        scale = out.max()
        stderr = math.sqrt(keep * (1 - keep) / n)
        assert abs(out.mean() / scale - keep) < 5 * stderr
        assert abs(Fraction(float(scale)) * Fraction(keep_count(p), 2**32) - 1) <= Fraction(1, 2**bits)
        if bits >= 24:
            assert abs(out.mean() - 1.0) < 5 * stderr / keep


def test_kept_fraction_matches_effective_keep(numpy_ref):
    """Binomial count of kept elements within 5 sigma (false-alarm rate 5.7e-7 per p)."""
    n = 2**20
    for p in (0.05, 0.3, 0.7):
        kept = int(xdrop.keep_mask((n,), p, seed=99, xp=np).sum())
        keep = keep_count(p) / 2**32
        assert abs(kept - n * keep) < 5 * math.sqrt(n * keep * (1 - keep))


# -- property 3: the gradient identity ------------------------------------------------------------


def test_backward_is_dropout_of_dout(backend, float_dtype):
    x, _ = input_on(backend, (9, 7), float_dtype, seed=1)
    dout, _ = input_on(backend, (9, 7), float_dtype, seed=2)
    out, cache = xdrop.dropout_forward(x, 0.3, seed=5, step=2)
    dx = xdrop.dropout_backward(dout, cache)
    again = xdrop.dropout(dout, 0.3, seed=5, step=2)
    assert backend.to_numpy(dx).tobytes() == backend.to_numpy(again).tobytes()
    # dx = dout * mask / keep, with the mask that zeroed out
    zero = backend.to_numpy(out) == 0
    assert np.all(backend.to_numpy(dx)[zero] == 0)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_torch_autograd_equals_backward(torch_backend, dtype):
    """Torch autograd through xdrop.dropout (JAX's: test_jax.py)."""
    import torch

    x, _ = input_on(torch_backend, (4, 6), dtype)
    x.requires_grad_()
    dout, _ = input_on(torch_backend, (4, 6), dtype, seed=3)
    xdrop.dropout(x, 0.4, seed=8, step=1).backward(dout)
    _, cache = xdrop.dropout_forward(x.detach(), 0.4, seed=8, step=1)
    assert torch.equal(x.grad, xdrop.dropout_backward(dout, cache))


def test_finite_differences_agree_in_float64(numpy_ref):
    x = random_input((5, 4), "float64")
    dout = random_input((5, 4), "float64", seed=1)
    _, cache = xdrop.dropout_forward(x, 0.5, seed=3)
    dx = xdrop.dropout_backward(dout, cache)
    num = verify.central_differences(lambda a: xdrop.dropout(a, 0.5, seed=3), x, dout)
    np.testing.assert_allclose(dx, num, rtol=1e-7, atol=1e-9)


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"p": 1.5}, ValueError, r"p must be a probability in \[0, 1\], got p=1.5"),
        ({"p": -0.1}, ValueError, "got p=-0.1"),
        ({"p": float("nan")}, ValueError, "got p=nan"),
        ({"p": "0.5"}, TypeError, "p must be a real number"),
        ({"p": True}, TypeError, "p must be a real number"),
        ({"seed": -1}, ValueError, r"seed must be an integer in \[0, 2\*\*64\), got seed=-1"),
        ({"seed": 2**64}, ValueError, "got seed=18446744073709551616"),
        ({"seed": 1.0}, TypeError, "got seed=1.0"),
        ({"seed": 1, "step": -2}, ValueError, "got step=-2"),
        ({"seed": 1, "step": 0.5}, TypeError, "got step=0.5"),
        ({"seed": xdrop.Generator(1), "step": 3}, ValueError, "step must be left at 0"),
        ({"impl": "fast"}, ValueError, "impl must be one of"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    x = np.ones(4)
    before = x.copy()
    with pytest.raises(error, match=match):
        xdrop.dropout(x, **{"p": 0.5, "seed": 1, **kwargs})
    assert np.array_equal(x, before)


@pytest.mark.parametrize(
    "x, error, match",
    [
        (np.ones(3, dtype=np.int64), TypeError, "x must have a real floating dtype, got x.dtype=int64"),
        (np.ones(3, dtype=bool), TypeError, "x.dtype=bool"),
        (np.ones(3, dtype=np.complex64), TypeError, "x.dtype=complex64"),
        ([1.0, 2.0], TypeError, "x must be an array"),
    ],
)
def test_bad_x(x, error, match):
    with pytest.raises(error, match=match):
        xdrop.dropout(x, 0.5, seed=1)


def test_rejected_call_does_not_advance_generator():
    gen = xdrop.Generator(1)
    with pytest.raises(ValueError):
        xdrop.dropout(np.ones(3), 2.0, seed=gen)
    assert gen.step == 0


def test_dropout_forward_requires_a_seed():
    with pytest.raises(TypeError, match="seed must be an integer"):
        xdrop.dropout_forward(np.ones(3), 0.5, seed=None)


@pytest.mark.parametrize(
    "dout, error, match",
    [
        (np.ones(5), ValueError, r"dout must have the forward's shape \(4,\), got dout.shape=\(5,\)"),
        (np.ones(4, dtype=np.float32), TypeError, "dout must have the forward's dtype float64, got dout.dtype=float32"),
        (np.ones(4, dtype=np.int32), TypeError, "dout must have a real floating dtype"),
    ],
)
def test_backward_rejects_mismatched_dout(dout, error, match):
    _, cache = xdrop.dropout_forward(np.ones(4), 0.5, seed=1)
    with pytest.raises(error, match=match):
        xdrop.dropout_backward(dout, cache)


def test_backward_rejects_other_namespace_and_bad_cache():
    torch = pytest.importorskip("torch", reason="needs a second array library")
    _, cache = xdrop.dropout_forward(np.ones(4), 0.5, seed=1)
    with pytest.raises(TypeError, match="dout must be a numpy array like the forward's x, got a torch array"):
        xdrop.dropout_backward(torch.ones(4, dtype=torch.float64), cache)
    with pytest.raises(TypeError, match="cache must be the DropoutCache"):
        xdrop.dropout_backward(np.ones(4), (None, None))


def test_keep_mask_checks_its_arguments():
    with pytest.raises(TypeError, match="shape must be a tuple of non-negative ints, got shape="):
        xdrop.keep_mask((2, -1), 0.5, seed=1, xp=np)
    with pytest.raises(TypeError, match="xp must be an array namespace module"):
        xdrop.keep_mask((2,), 0.5, seed=1, xp="numpy")
    assert xdrop.keep_mask(5, 0.5, seed=1, xp=np).shape == (5,)


# -- noise_shape ----------------------------------------------------------------------------------


def test_noise_shape_shares_decisions_along_size_one_axes(backend):
    x_np = random_input((3, 4, 5), "float32")
    out = backend.to_numpy(xdrop.dropout(backend.asarray(x_np), 0.5, seed=6, noise_shape=(None, 1, 5)))
    keep = xdrop.keep_mask((3, 1, 5), 0.5, seed=6, xp=np)
    np.testing.assert_array_equal(out, np.where(keep, x_np * 2, 0))
    full = backend.to_numpy(xdrop.dropout(backend.asarray(x_np), 0.5, seed=6, noise_shape=(3, 4, None)))
    assert full.tobytes() == xdrop.dropout(x_np, 0.5, seed=6).tobytes()


def test_noise_shape_backward_uses_the_same_mask(backend):
    x = backend.asarray(random_input((2, 6), "float64"))
    out, cache = xdrop.dropout_forward(x, 0.5, seed=2, noise_shape=(2, 1))
    dx = xdrop.dropout_backward(backend.asarray(np.ones((2, 6))), cache)
    assert cache.noise_shape == (2, 1)
    np.testing.assert_array_equal(backend.to_numpy(dx) == 0, backend.to_numpy(out) == 0)


@pytest.mark.parametrize(
    "noise_shape, match",
    [((3, 2), r"noise_shape\[1\] must be None, 1 or x.shape\[1\]=4"), ((3,), "one entry per axis"), (5, "one entry")],
)
def test_bad_noise_shape(noise_shape, match):
    with pytest.raises(ValueError, match=match):
        xdrop.dropout(np.ones((3, 4)), 0.5, seed=1, noise_shape=noise_shape)


# -- NumPy layouts: the output keeps x's layout, the bits are those of the C-order result ------------


@pytest.mark.parametrize("impl", ["auto", "reference", "blocked"])
@pytest.mark.parametrize("shape", [(7, 9), (300, 513)], ids=str)  # the second crosses the threading threshold
def test_numpy_layout_is_kept_and_bits_are_c_orders(impl, shape):
    c = random_input(shape, "float32")
    f = np.asfortranarray(c)
    permuted = np.ascontiguousarray(random_input((4, 5, 6), "float64").transpose(2, 0, 1)).transpose(1, 2, 0)
    for x in (f, c[::2, ::-3], permuted):
        expected_bits = xdrop.dropout(np.ascontiguousarray(x), 0.5, seed=9, step=3, impl="reference").tobytes()
        out = xdrop.dropout(x, 0.5, seed=9, step=3, impl=impl)
        assert out.tobytes() == expected_bits  # tobytes reads in logical (row-major) order
        if impl != "reference":  # the reference's layout is the array library's choice
            assert out.strides == np.empty_like(x).strides
    assert xdrop.dropout(f, 0.5, seed=9, impl=impl).flags.f_contiguous or impl == "reference"


# -- flags, pickling, traced seeds --------------------------------------------------------------------


def test_numpy_bools_are_accepted_as_flags():
    x = random_input((3, 4), "float64")
    assert xdrop.dropout(x, 0.5, seed=1, training=np.False_) is x
    assert xdrop.dropout(x, 0.5, seed=1, training=np.True_).tobytes() == xdrop.dropout(x, 0.5, seed=1).tobytes()
    with pytest.raises(TypeError, match="training must be True or False, got training=1 of type int"):
        xdrop.dropout(x, 0.5, seed=1, training=1)


def test_p_beyond_binary64_is_a_value_error_not_an_overflow():
    x = np.ones(3)
    with pytest.raises(ValueError, match=r"p must be a probability in \[0, 1\], got p=1000.*\(401 characters\)"):
        xdrop.dropout(x, 10**400, seed=1)
    with pytest.raises(ValueError, match="p must be a probability"):
        xdrop.dropout(x, Fraction(10**400, 3), seed=1)


def test_a_decimal_p_is_converted_by_float_as_the_spec_says():
    """``float(p)`` rounds a Decimal once: one just above 0.3's binary64 neighbour gives that neighbour's mask."""
    from decimal import Decimal

    x = np.ones(4096, np.float32)
    for p in (Decimal("0.3"), Decimal("0.30000000000000001"), Decimal(2) ** -33, Decimal(1)):
        assert xdrop.dropout(x, p, seed=1).tobytes() == xdrop.dropout(x, float(p), seed=1).tobytes()
    for bad in (Decimal("1.5"), Decimal("NaN"), Decimal("sNaN")):
        with pytest.raises(ValueError, match="p must be a probability"):
            xdrop.dropout(x, bad, seed=1)


def test_generator_steps_follow_the_stream_spec():
    """docs/stream-spec.md, "Steps taken from a Generator": a call that draws a mask takes one step,
    a trivial one too; one that draws none takes none; after 2**64 - 1 the Generator is exhausted."""
    x, q = np.ones((2, 3, 4, 4)), np.ones((2, 3, 4))
    takes = {
        "dropout p=0": lambda g: xdrop.dropout(x, 0.0, seed=g),
        "dropout p=1": lambda g: xdrop.dropout(x, 1.0, seed=g),
        "empty x": lambda g: xdrop.dropout(np.ones(0), 0.5, seed=g),
        "keep_mask p=0": lambda g: xdrop.keep_mask((3,), 0.0, seed=g, xp=np),
        "drop_path p=0": lambda g: xdrop.drop_path(x, 0.0, seed=g),
        "dropout2d p=0": lambda g: xdrop.dropout2d(x, 0.0, seed=g),
        "attention dropout_p=0.5": lambda g: xdrop.scaled_dot_product_attention(q, q, q, dropout_p=0.5, seed=g),
        "training=False": lambda g: xdrop.dropout(x, 0.5, seed=g, training=False),
        "attention dropout_p=0": lambda g: xdrop.scaled_dot_product_attention(q, q, q, seed=g),
        "attention training=False": lambda g: xdrop.scaled_dot_product_attention(
            q, q, q, dropout_p=0.5, seed=g, training=False
        ),
    }
    for name, call in takes.items():
        g = xdrop.Generator(1)
        call(g)
        assert g.step == (0 if "training=False" in name or name.endswith("dropout_p=0") else 1), name
    g = xdrop.Generator(1, step=2**64 - 1)
    xdrop.dropout(x, 0.5, seed=g)  # the last step is usable
    with pytest.raises(ValueError, match=r"has used every step up to 2\*\*64 - 1"):
        xdrop.dropout(x, 0.5, seed=g)


def test_generator_pickles_and_deep_copies_with_a_fresh_lock():
    import copy
    import pickle

    g = xdrop.Generator(11, step=4)
    for twin in (pickle.loads(pickle.dumps(g)), copy.deepcopy(g), copy.copy(g)):
        assert (twin.seed, twin.step) == (11, 4) and twin._lock is not g._lock
        a = xdrop.dropout(np.ones(16), 0.5, seed=twin)
        assert a.tobytes() == xdrop.dropout(np.ones(16), 0.5, seed=11, step=4).tobytes()
        assert (twin.step, g.step) == (5, 4)  # the copy advances alone
    exhausted = xdrop.Generator(1, step=2**64 - 1)
    exhausted.take_step()
    assert pickle.loads(pickle.dumps(exhausted)).step == 2**64


def test_cache_noise_shape_must_broadcast_to_shape():
    with pytest.raises(ValueError, match=r"cache.noise_shape must broadcast to the shape \(4,\)"):
        xdrop.DropoutCache(1, 0, 0.5, (4,), np.float64, "numpy", "cpu", (4, 1))
    _, cache = xdrop.dropout_forward(np.ones((4, 3)), 0.5, seed=2, noise_shape=(4, 1))
    assert xdrop.dropout_backward(np.ones((4, 3)), cache).shape == (4, 3)


def test_keep_mask_refuses_a_mask_larger_than_memory_before_allocating(monkeypatch):
    gen = xdrop.Generator(3)
    with pytest.raises(ValueError, match=r"needs a mask of 1099511627776 bytes, more than the \d+ bytes"):
        xdrop.keep_mask((2**40,), 0.5, seed=gen, xp=np, impl="reference")
    assert gen.step == 0
    monkeypatch.setenv("XDROP_MAX_MASK_BYTES", "100")
    with pytest.raises(ValueError, match="more than the 100 bytes"):
        xdrop.keep_mask((101,), 0.5, seed=1, xp=np)
    assert xdrop.keep_mask((100,), 0.5, seed=1, xp=np).shape == (100,)


# -- the fixed per-call cost: what is cached must not go stale ---------------------------------------


def test_cached_selection_and_scale_follow_dtype_type_and_p():
    for dtype in ("float16", "float32", "float64"):
        x = random_input((5, 6), dtype)
        for p in (0.1, 0.5, 0.9):
            for _ in range(2):  # the second call hits the caches
                assert xdrop.dropout(x, p, seed=5).tobytes() == expected_dropout(x, p, 5, 0).tobytes()
