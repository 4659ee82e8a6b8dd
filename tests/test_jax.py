"""JAX: NumPy's bits eagerly and under jit, grad and vmap, in JAX's default 32-bit mode.

float64 cases run inside ``jax.enable_x64(True)``; everything else runs without x64.
"""

import numpy as np
import pytest
from helpers import random_input

import xdrop
from xdrop._kernels.jax._dropout import jax_mask
from xdrop._lib._stream import keep_count, keep_flat

jax = pytest.importorskip("jax", reason="jax is not installed")
jnp = pytest.importorskip("jax.numpy", reason="jax is not installed")

SEED, STEP = 2**63 + 5, 2**33 + 1


def rand(shape, dtype="float32", seed=0):
    return random_input(shape, dtype, seed)


def ref(x, p, seed=SEED, step=STEP, **kw):
    return xdrop.dropout(x, p, seed=seed, step=step, impl="reference", **kw)


def same_bits(got, want):
    got = np.asarray(got)
    return got.dtype == want.dtype and got.shape == want.shape and got.tobytes() == want.tobytes()


@pytest.mark.parametrize("impl", ["auto", "reference"])
@pytest.mark.parametrize("shape", [(), (1,), (5,), (4, 7), (2, 3, 5)], ids=str)
@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_eager_bits_equal_numpy(shape, p, impl):
    x = rand(shape)
    assert same_bits(xdrop.dropout(jnp.asarray(x), p, seed=SEED, step=STEP, impl=impl), ref(x, p))


def test_default_mode_has_no_x64():
    assert not jax.config.jax_enable_x64


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision(dtype):
    x = jnp.asarray(rand((33,)), dtype=dtype)
    keep = xdrop.keep_mask((33,), 0.3, seed=5, xp=np)
    scale = jnp.asarray(2**32 / keep_count(0.3), dtype=dtype)  # scale_for rounds to the dtype likewise
    want = jnp.where(jnp.asarray(keep), x * scale, 0)
    got = xdrop.dropout(x, 0.3, seed=5)
    assert got.dtype == x.dtype
    assert np.asarray(got.astype(jnp.float32)).tobytes() == np.asarray(want.astype(jnp.float32)).tobytes()


def test_float64_under_x64():
    x = rand((6, 11), "float64")
    with jax.enable_x64(True):
        out = xdrop.dropout(jnp.asarray(x), 0.3, seed=SEED, step=STEP)
        assert out.dtype == jnp.float64
        assert same_bits(out, ref(x, 0.3))


@pytest.mark.parametrize("start, n", [(0, 13), (3, 10), (2**32 - 6, 12), (2**34 + 1, 9), (2**64 - 9, 9)])
def test_mask_kernel_at_any_start(start, n):
    """Index words carried across 2**32 and up to the end of the 64-bit range."""
    np_xp = pytest.importorskip("array_api_compat.numpy")
    k = keep_count(0.5)
    want = keep_flat(np_xp, start, n, SEED, STEP, k, None)
    assert np.array_equal(np.asarray(jax_mask(jnp, start, n, SEED, STEP, k, None)), want)


def test_noise_shape_and_keep_mask():
    x = rand((3, 4, 5))
    got = xdrop.dropout(jnp.asarray(x), 0.5, seed=6, noise_shape=(None, 1, 5))
    assert same_bits(got, xdrop.dropout(x, 0.5, seed=6, noise_shape=(None, 1, 5)))
    got_mask = xdrop.keep_mask((7, 9), 0.4, seed=1, step=2, xp=jnp)
    assert np.array_equal(np.asarray(got_mask), xdrop.keep_mask((7, 9), 0.4, seed=1, step=2, xp=np))


# -- jit --------------------------------------------------------------------------------------------


def test_jit_with_closed_over_and_static_seed():
    x = rand((8, 9))
    closed = jax.jit(lambda a: xdrop.dropout(a, 0.3, seed=SEED, step=STEP))
    static = jax.jit(
        lambda a, seed, step: xdrop.dropout(a, 0.3, seed=seed, step=step), static_argnames=("seed", "step")
    )
    assert same_bits(closed(jnp.asarray(x)), ref(x, 0.3))
    assert same_bits(static(jnp.asarray(x), seed=SEED, step=STEP), ref(x, 0.3))


def test_jit_with_traced_seed_and_step():
    """A traced step (a training-loop counter) and a traced 64-bit seed as two uint32 words."""
    x = rand((8, 9))
    f = jax.jit(lambda a, seed, step: xdrop.dropout(a, 0.3, seed=seed, step=step))
    seed_words = jnp.asarray([SEED & 0xFFFFFFFF, SEED >> 32], dtype=jnp.uint32)
    step_words = jnp.asarray([STEP & 0xFFFFFFFF, STEP >> 32], dtype=jnp.uint32)
    assert same_bits(f(jnp.asarray(x), seed_words, step_words), ref(x, 0.3))
    for step in (0, 1, 2**32 - 1):  # one compilation serves every step
        assert same_bits(f(jnp.asarray(x), seed_words, jnp.uint32(step)), ref(x, 0.3, step=step))


def test_traced_uint64_seed_under_x64():
    x = rand((5,))
    with jax.enable_x64(True):
        f = jax.jit(lambda a, seed, step: xdrop.dropout(a, 0.5, seed=seed, step=step))
        got = f(jnp.asarray(x), jnp.uint64(SEED), jnp.uint64(STEP))
    assert same_bits(got, ref(x, 0.5))


_SEED_WORDS = np.asarray([SEED & 0xFFFFFFFF, SEED >> 32], dtype=np.uint32)


def test_jit_with_closed_over_concrete_seed_pair():
    """A module-level concrete ``(low, high)`` pair closed over in jit is read as its value, not traced."""
    words = jnp.asarray(_SEED_WORDS)  # concrete, built outside the jitted function
    x = rand((4, 8))
    got = jax.jit(lambda a: xdrop.dropout(a, 0.3, seed=words, step=STEP))(jnp.asarray(x))
    assert same_bits(got, ref(x, 0.3))
    mask = jax.jit(lambda: xdrop.keep_mask((4, 8), 0.3, seed=words, step=STEP, xp=jnp))()
    assert same_bits(mask, xdrop.keep_mask((4, 8), 0.3, seed=SEED, step=STEP, xp=np))
    q = jnp.asarray(rand((1, 2, 5, 4)))
    attend = jax.jit(lambda a: xdrop.scaled_dot_product_attention(a, a, a, dropout_p=0.5, seed=words, step=STEP))
    want = xdrop.scaled_dot_product_attention(q, q, q, dropout_p=0.5, seed=SEED, step=STEP)
    np.testing.assert_allclose(attend(q), want, rtol=1e-5, atol=1e-6)


def test_concrete_jax_integers_are_taken_as_ints():
    x = rand((6,))
    seed_words = jnp.asarray([SEED & 0xFFFFFFFF, SEED >> 32], dtype=jnp.uint32)
    assert same_bits(xdrop.dropout(jnp.asarray(x), 0.5, seed=seed_words, step=jnp.int32(7)), ref(x, 0.5, step=7))
    with pytest.raises(ValueError, match="step must be an integer in"):
        xdrop.dropout(jnp.asarray(x), 0.5, seed=1, step=jnp.int32(-1))


def test_forward_and_backward_inside_jit_with_traced_step():
    x, dout = rand((4, 6)), rand((4, 6), seed=1)

    def f(a, g, step):
        out, cache = xdrop.dropout_forward(a, 0.4, seed=3, step=step)
        return out, xdrop.dropout_backward(g, cache)

    out, dx = jax.jit(f)(jnp.asarray(x), jnp.asarray(dout), jnp.uint32(9))
    assert same_bits(out, ref(x, 0.4, seed=3, step=9))
    assert same_bits(dx, ref(dout, 0.4, seed=3, step=9))


@pytest.mark.parametrize(
    "seed, step, match",
    [
        (1, jnp.int32(2), r"step is a traced int32 JAX value; .*step.astype\(jnp.uint32\)"),
        (jnp.float32(1), jnp.uint32(0), "seed must be an integer in .* got a JAX array of dtype float32"),
        (jnp.zeros(3, dtype=jnp.uint32), jnp.uint32(0), r"seed must be a 0-d JAX integer or a uint32 array of 2 words"),
    ],
)
def test_bad_traced_arguments(seed, step, match):
    f = jax.jit(lambda a, s, t: xdrop.dropout(a, 0.5, seed=s, step=t))
    with pytest.raises(TypeError, match=match):
        f(jnp.ones(4), seed, step)


def test_traced_seed_elsewhere_says_what_to_do():
    with pytest.raises(TypeError, match="seed is a traced JAX value: only dropout of a JAX array with impl='auto'"):
        jax.jit(lambda s: xdrop.dropout(np.ones(4), 0.5, seed=s))(jnp.uint32(3))
    with pytest.raises(TypeError, match="static_argnames"):
        jax.jit(lambda a, s: xdrop.dropout(a, 0.5, seed=s, impl="reference"))(jnp.ones(4), jnp.uint32(3))


# -- grad -------------------------------------------------------------------------------------------


def test_grad_is_dropout_of_the_cotangent():
    """Gradient identity through jax.grad: d/dx <dropout(x), dout> = dropout(dout), bit for bit."""
    x, dout = rand((9, 7)), rand((9, 7), seed=2)
    grad = jax.grad(lambda a: jnp.vdot(xdrop.dropout(a, 0.3, seed=5, step=2), jnp.asarray(dout)))(jnp.asarray(x))
    assert same_bits(grad, ref(dout, 0.3, seed=5, step=2))
    _, cache = xdrop.dropout_forward(jnp.asarray(x), 0.3, seed=5, step=2)
    assert same_bits(grad, np.asarray(xdrop.dropout_backward(jnp.asarray(dout), cache)))


def test_vjp_under_jit_and_float64_finite_differences():
    x, dout = rand((5, 4), "float64"), rand((5, 4), "float64", seed=1)
    with jax.enable_x64(True):
        f = jax.jit(lambda a: xdrop.dropout(a, 0.5, seed=3))
        _, vjp = jax.vjp(f, jnp.asarray(x))
        (dx,) = vjp(jnp.asarray(dout))
        h = 1e-6
        e = np.eye(x.size).reshape(x.size, *x.shape) * h
        num = [np.sum((np.asarray(f(x + d)) - np.asarray(f(x - d))) * dout) / (2 * h) for d in e]
    assert same_bits(dx, ref(dout, 0.5, seed=3, step=0))
    np.testing.assert_allclose(np.asarray(dx).reshape(-1), num, rtol=1e-7, atol=1e-9)


# -- vmap -------------------------------------------------------------------------------------------


def test_vmap_over_x_gives_each_example_the_per_example_mask():
    """Under vmap, x's shape is the example's: every example gets the mask of that shape."""
    xs = rand((4, 3, 5))
    got = jax.vmap(lambda a: xdrop.dropout(a, 0.5, seed=SEED, step=STEP))(jnp.asarray(xs))
    assert same_bits(got, np.stack([ref(x, 0.5) for x in xs]))


def test_vmap_over_steps_gives_independent_masks():
    x = rand((16,))
    steps = jnp.arange(5, dtype=jnp.uint32)
    got = jax.jit(jax.vmap(lambda t: xdrop.dropout(jnp.asarray(x), 0.5, seed=SEED, step=t)))(steps)
    want = np.stack([ref(x, 0.5, step=t) for t in range(5)])
    assert same_bits(got, want)
    assert len({w.tobytes() for w in want}) == 5
