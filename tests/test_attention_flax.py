"""xdrop.flax.dot_product_attention: keep_mask's bits in Flax's layout, Flax's values, real MHA modules."""

from __future__ import annotations

import functools

import attention_math as am
import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="jax is not installed")
jnp = pytest.importorskip("jax.numpy", reason="jax is not installed")
pytest.importorskip("flax", reason="flax is not installed")
from flax import linen, nnx  # noqa: E402

import xdrop.flax  # noqa: E402

KEY = jax.random.key(42)


def seed_of(key):
    lo, hi = (int(w) for w in xdrop.flax.dropout_seed(key))
    return lo | hi << 32


def flax_rand(shape, seed):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def test_dropout_seed_is_bits_of_the_key():
    assert np.array_equal(xdrop.flax.dropout_seed(KEY), jax.random.bits(KEY, (2,), jnp.uint32))
    assert seed_of(KEY) != seed_of(jax.random.key(43))


@pytest.mark.parametrize("broadcast", [False, True])
def test_mask_bits_in_flax_weight_layout(broadcast):
    """q = 0 gives uniform weights and v = identity (per head) reads each weight's keep decision."""
    b, length, heads, keys = 2, 5, 3, 7
    q = jnp.zeros((b, length, heads, 4))
    k = jnp.zeros((b, keys, heads, 4))
    v = jnp.broadcast_to(jnp.eye(keys)[None, :, None, :], (b, keys, heads, keys))
    out = xdrop.flax.dot_product_attention(q, k, v, dropout_rng=KEY, dropout_rate=0.4, broadcast_dropout=broadcast)
    got = np.swapaxes(np.asarray(out), 1, 2) != 0  # (B, H, L, S)
    shape = (length, keys) if broadcast else (b, heads, length, keys)
    want = np.broadcast_to(am.keep(shape, 0.4, seed_of(KEY), 0), got.shape)
    assert int((got != want).sum()) == 0


def _qkv(b=2, length=5, keys=6, heads=2, e=4):
    return flax_rand((b, length, heads, e), 0), flax_rand((b, keys, heads, e), 1), flax_rand((b, keys, heads, 3), 2)


@pytest.mark.parametrize(
    "kw",
    [{}, {"is_causal": True}, {"mask": "padding"}, {"bias": True}, {"mask": "padding", "bias": True}],
    ids=str,
)
def test_deterministic_equals_flax(kw):
    q, k, v = _qkv()
    args = {}
    if kw.get("mask"):  # a padded query row has no key left: Flax's finfo.min fill averages every value
        args["mask"] = nnx.make_attention_mask(jnp.asarray([[1, 1, 1, 1, 0], [1] * 5]), jnp.asarray([[1] * 6] * 2))
    if kw.get("bias"):
        args["bias"] = flax_rand((1, 2, 5, 6), 3)
    causal = kw.get("is_causal", False)
    got = xdrop.flax.dot_product_attention(q, k, v, deterministic=True, is_causal=causal, **args)
    want = nnx.dot_product_attention(q, k, v, module=None, dropout_rate=0.1, dropout_rng=KEY, deterministic=True,
                                     is_causal=causal, **args)  # fmt: skip
    want_linen = linen.dot_product_attention(q, k, v, deterministic=True, **args) if not causal else want
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(got, want_linen, rtol=2e-5, atol=2e-6)


def test_dropout_values_float64_match_formula():
    q, k, v = (np.random.default_rng(s).standard_normal(shape) for s, shape in
               ((0, (2, 5, 3, 4)), (1, (2, 6, 3, 4)), (2, (2, 6, 3, 2))))  # fmt: skip
    bias = np.random.default_rng(3).standard_normal((2, 1, 5, 6))
    seed = seed_of(KEY)
    with jax.enable_x64(True):
        got = xdrop.flax.dot_product_attention(*map(jnp.asarray, (q, k, v)), bias=jnp.asarray(bias),
                                               dropout_rng=KEY, dropout_rate=0.3, broadcast_dropout=False)  # fmt: skip
        assert got.dtype == jnp.float64
    want = am.attention(*(np.swapaxes(a, 1, 2) for a in (q, k, v)), bias, 0.3, seed=seed, step=0)
    assert am.rel_err(got, np.swapaxes(want, 1, 2)) < 1e-12


def test_explicit_seed_and_traced_step():
    q, k, v = _qkv()
    fn = functools.partial(xdrop.flax.dot_product_attention, seed=2**40 + 1)
    eager = fn(q, k, v, dropout_rate=0.5, step=3, broadcast_dropout=False)
    jitted = jax.jit(lambda s: fn(q, k, v, dropout_rate=0.5, step=s, broadcast_dropout=False))(jnp.uint32(3))
    np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-6)
    want = am.attention(*(np.swapaxes(np.asarray(a, np.float64), 1, 2) for a in (q, k, v)), None, 0.5,
                        seed=2**40 + 1, step=3)  # fmt: skip
    np.testing.assert_allclose(eager, np.swapaxes(want, 1, 2), rtol=1e-5, atol=1e-6)


def test_closed_over_concrete_seed_pair_under_jit():
    q, k, v = _qkv()
    seed = xdrop.flax.seed_words(2**40 + 1)  # module-level constant in user code: concrete, closed over
    eager = xdrop.flax.dot_product_attention(q, k, v, dropout_rate=0.5, seed=2**40 + 1, step=3)
    jitted = jax.jit(lambda: xdrop.flax.dot_product_attention(q, k, v, dropout_rate=0.5, seed=seed, step=3))()
    np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-6)


def _spy():
    calls = []

    @functools.wraps(xdrop.flax.dot_product_attention)  # linen passes what the signature names
    def attention_fn(query, key, value, **kw):
        out = xdrop.flax.dot_product_attention(query, key, value, **kw)
        calls.append((query, key, value, kw, out))
        return out

    return attention_fn, calls


def _check_call(query, key, value, kw, out):
    """What the module handed its attention_fn, recomputed by the formula with keep_mask's mask."""
    seed = seed_of(kw["dropout_rng"])
    want = am.attention(*(np.swapaxes(np.asarray(a, np.float64), -3, -2) for a in (query, key, value)), None,
                        kw["dropout_rate"], seed=seed, step=0, shared_mask=kw["broadcast_dropout"])  # fmt: skip
    np.testing.assert_allclose(out, np.swapaxes(want, -3, -2), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("broadcast", [True, False])
def test_nnx_multi_head_attention(broadcast):
    fn, calls = _spy()
    make = functools.partial(nnx.MultiHeadAttention, num_heads=2, in_features=8, dropout_rate=0.3, decode=False,
                             broadcast_dropout=broadcast)  # fmt: skip
    mha = make(attention_fn=fn, rngs=nnx.Rngs(0))
    x = flax_rand((2, 5, 8), 4)
    out = mha(x, deterministic=False)
    ((query, key, value, kw, att),) = calls
    assert kw["dropout_rate"] == 0.3 and kw["broadcast_dropout"] is broadcast and kw["deterministic"] is False
    _check_call(query, key, value, kw, att)
    np.testing.assert_allclose(out, mha.out(att), rtol=1e-6, atol=1e-6)
    # drop-in: the same parameters give Flax's output when deterministic
    flax_mha = make(rngs=nnx.Rngs(0))
    np.testing.assert_allclose(mha(x, deterministic=True), flax_mha(x, deterministic=True), rtol=2e-5, atol=2e-6)
    # the same Rngs reproduce the masks, under nnx.jit and nnx.grad too
    twin = make(attention_fn=xdrop.flax.dot_product_attention, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(twin(x, deterministic=False), out, rtol=1e-6, atol=1e-6)

    @nnx.jit
    def grads(model, x):
        return nnx.grad(lambda m: jnp.sum(m(x, deterministic=False) ** 2))(model)

    g1 = grads(make(attention_fn=xdrop.flax.dot_product_attention, rngs=nnx.Rngs(1)), x)
    g2 = grads(make(attention_fn=xdrop.flax.dot_product_attention, rngs=nnx.Rngs(1)), x)
    leaves1, leaves2 = jax.tree.leaves(g1), jax.tree.leaves(g2)
    assert leaves1 and all(np.array_equal(a, b) for a, b in zip(leaves1, leaves2, strict=True))


def test_linen_multi_head_dot_product_attention():
    fn, calls = _spy()
    mha = linen.MultiHeadDotProductAttention(num_heads=2, qkv_features=8, dropout_rate=0.25, attention_fn=fn,
                                             broadcast_dropout=False)  # fmt: skip
    x = flax_rand((2, 5, 8), 5)
    params = mha.init(jax.random.key(0), x, deterministic=True)
    calls.clear()
    out = mha.apply(params, x, deterministic=False, rngs={"dropout": jax.random.key(7)})
    ((query, key, value, kw, att),) = calls
    _check_call(query, key, value, kw, att)
    again = linen.MultiHeadDotProductAttention(num_heads=2, qkv_features=8, dropout_rate=0.25, broadcast_dropout=False,
                                               attention_fn=xdrop.flax.dot_product_attention)  # fmt: skip
    np.testing.assert_array_equal(out, again.apply(params, x, deterministic=False, rngs={"dropout": jax.random.key(7)}))
    flax_mha = linen.MultiHeadDotProductAttention(num_heads=2, qkv_features=8, dropout_rate=0.25)
    np.testing.assert_allclose(mha.apply(params, x, deterministic=True), flax_mha.apply(params, x, deterministic=True),
                               rtol=2e-5, atol=2e-6)  # fmt: skip


def test_sow_weights_like_flax():
    mha = nnx.MultiHeadAttention(num_heads=2, in_features=8, dropout_rate=0.3, decode=False,
                                 attention_fn=xdrop.flax.dot_product_attention, rngs=nnx.Rngs(0))  # fmt: skip
    x = flax_rand((1, 4, 8), 6)
    _, state = nnx.capture(mha, nnx.Intermediate)(x, deterministic=False, sow_weights=True)
    (weights,) = jax.tree.leaves(state)
    assert weights.shape == (1, 2, 4, 4)
    np.testing.assert_allclose(np.asarray(weights).sum(-1), 1.0, rtol=1e-6)


def test_bad_inputs():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="dropout_rng is required"):
        xdrop.flax.dot_product_attention(q, k, v, dropout_rate=0.1)
    with pytest.raises(ValueError, match="dropout_rate must be a probability"):
        xdrop.flax.dot_product_attention(q, k, v, dropout_rate=2.0, dropout_rng=KEY)
    with pytest.raises(ValueError, match="query=\\(2, 5, 2, 4\\), key=\\(6, 2, 4\\)"):
        xdrop.flax.dot_product_attention(q, k[0], v)
