"""The JAX attention kernel (custom_vjp): keep_mask's bits, the formula's values and gradients.

Values and gradients are checked in float64 (inside ``jax.enable_x64(True)``)
against ``attention_math`` (NumPy) and against ``jax.grad`` of the plain
formula with the same mask; the mask bits exactly; jit, vmap and a traced step
against eager calls.
"""

from __future__ import annotations

import math
import re

import attention_math as am
import numpy as np
import pytest

import xdrop

jax = pytest.importorskip("jax", reason="jax is not installed")
jnp = pytest.importorskip("jax.numpy", reason="jax is not installed")

from xdrop._kernels.jax import _attention as aj  # noqa: E402  (imports jax)
from xdrop._lib._stream import effective_keep  # noqa: E402

SEED, STEP = 2**63 + 11, 2**32 + 3


def rand(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def kept(lead, length, keys, p, seed=SEED, step=STEP, **kw):
    """The keep decisions the kernel used, read off its output: q = 0 (uniform weights), v = identity."""
    q = jnp.zeros((*lead, length, 4), jnp.float32)
    k = jnp.zeros((*lead, keys, 4), jnp.float32)
    v = jnp.broadcast_to(jnp.eye(keys, dtype=jnp.float32), (*lead, keys, keys))
    return np.asarray(aj.attention(q, k, v, dropout_p=p, seed=seed, step=step, **kw)) != 0


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("lead, length, keys", [((3,), 5, 7), ((2, 3), 4, 9), ((1,), 1, 33)], ids=str)
def test_mask_bits_equal_keep_mask(lead, length, keys, p):
    got = kept(lead, length, keys, p)
    want = am.keep((*lead, length, keys), p, SEED, STEP)
    assert int((got != want).sum()) == 0


def test_mask_bits_edges_and_shared():
    assert kept((2,), 3, 4, 1.0).sum() == 0
    assert kept((2,), 3, 4, 0.0).all()
    got = kept((2, 3), 4, 6, 0.5, seed=5, step=0, shared_mask=True)
    assert np.array_equal(got, np.broadcast_to(am.keep((4, 6), 0.5, 5, 0), got.shape))


def _inputs(lead=(2, 3), length=5, keys=6, e=4, ev=3, seed=0):
    return rand((*lead, length, e), seed), rand((*lead, keys, e), seed + 1), rand((*lead, keys, ev), seed + 2)


CASES = {
    "plain": {},
    "dropout": {"p": 0.3},
    "bias": {"p": 0.5, "bias": (1, 5, 6)},
    "bool mask": {"p": 0.2, "mask": (2, 1, 1, 6)},
    "causal": {"p": 0.4, "is_causal": True},
    "causal + bias": {"p": 0.4, "is_causal": True, "bias": (2, 3, 5, 6)},
    "scale": {"p": 0.25, "scale": 0.3},
}


def _case(name):
    c = dict(CASES[name])
    q, k, v = _inputs()
    bias = rand(c.pop("bias"), 9) if "bias" in c else None
    mask = (np.arange(6) % 3 != 1) | (np.arange(2)[:, None, None, None] == 0) if "mask" in c else None
    c.pop("mask", None)
    return q, k, v, bias, mask, c


@pytest.mark.parametrize("name", list(CASES))
def test_forward_float64_matches_formula(name):
    q, k, v, bias, mask, c = _case(name)
    p = c.get("p", 0.0)
    want = am.attention(q, k, v, bias, p, seed=SEED, step=STEP, mask=mask, scale=c.get("scale"),
                        is_causal=c.get("is_causal", False))  # fmt: skip
    with jax.enable_x64(True):
        got = aj.attention(*map(jnp.asarray, (q, k, v)), None if bias is None else jnp.asarray(bias), p,
                           scale=c.get("scale"), seed=SEED, step=STEP, is_causal=c.get("is_causal", False),
                           mask=mask)  # fmt: skip
        assert got.dtype == jnp.float64
    assert am.rel_err(got, want) < 1e-12


def test_contract_forward_returns_lse():
    q, k, v = _inputs(lead=(6,))
    bias = np.where(rand((6, 5, 6), 4) > 1.5, -np.inf, 0.0)
    with jax.enable_x64(True):
        out, lse = aj.forward(*map(jnp.asarray, (q, k, v, bias)), 0.3, 0.5, SEED, STEP, False)
    s = np.einsum("nle,nse->nls", q, k) * 0.5 + bias
    want_lse = np.log(np.exp(s).sum(-1))
    assert lse.shape == (6, 5) and am.rel_err(lse, want_lse) < 1e-12
    assert am.rel_err(out, am.attention(q, k, v, bias, 0.3, seed=SEED, step=STEP, scale=0.5)) < 1e-12


def _formula(q, k, v, bias, keep, a, scale, mask=None, is_causal=False):
    """The math formula in JAX (autograd keeps the L*S weights): gradients to compare against."""
    s = jnp.einsum("...le,...se->...ls", q, k) * scale
    if bias is not None:
        s = s + bias
    if mask is not None:
        s = jnp.where(mask, s, -jnp.inf)
    if is_causal:
        s = jnp.where(jnp.tril(jnp.ones(s.shape[-2:], bool)), s, -jnp.inf)
    w = jax.nn.softmax(s, axis=-1)
    return jnp.einsum("...ls,...sd->...ld", jnp.where(keep, w * a, 0.0), v)


@pytest.mark.parametrize("name", list(CASES))
def test_gradients_float64_match_autograd_of_formula(name):
    q, k, v, bias, mask, c = _case(name)
    p, causal = c.get("p", 0.0), c.get("is_causal", False)
    scale = c.get("scale", 1 / math.sqrt(q.shape[-1]))
    keep = am.keep((2, 3, 5, 6), p, SEED, STEP)
    _assert_gradients_match_formula(q, k, v, bias, mask, keep, p=p, scale=scale, is_causal=causal)


def _assert_gradients_match_formula(q, k, v, bias, mask, keep, **kw):
    """jax.grad of the kernel against jax.grad of the formula with mask ``keep``, float64; the values too."""
    p, scale, causal = kw.pop("p"), kw.pop("scale"), kw.pop("is_causal")
    dout = rand((*q.shape[:-1], v.shape[-1]), 7)
    with jax.enable_x64(True):
        args = [jnp.asarray(a) for a in (q, k, v)] + ([] if bias is None else [jnp.asarray(bias)])

        def fused(q, k, v, b=None):
            out = aj.attention(q, k, v, b, p, scale=scale, seed=SEED, step=STEP, is_causal=causal, mask=mask, **kw)
            return jnp.sum(out * dout)

        def formula(q, k, v, b=None):
            return jnp.sum(_formula(q, k, v, b, keep, 1 / effective_keep(p), scale, mask, causal) * dout)

        argnums = tuple(range(len(args)))
        assert am.rel_err(fused(*args), formula(*args)) < 1e-12
        got = jax.grad(fused, argnums)(*args)
        want = jax.grad(formula, argnums)(*args)
    for name_, g, w in zip(["q", "k", "v", "bias"], got, want, strict=False):
        assert g.shape == w.shape, name_
        assert am.rel_err(g, w) < 1e-11, name_


def test_finite_differences_float64():
    q, k, v = _inputs(lead=(2,), length=4, keys=5, e=3, ev=2)
    bias = rand((1, 4, 5), 3)
    dout = rand((2, 4, 2), 8)
    with jax.enable_x64(True):
        args = [jnp.asarray(a) for a in (q, k, v, bias)]

        def f(*a):
            return jnp.sum(aj.attention(*a, 0.4, seed=3, step=1, is_causal=True) * dout)

        grads = jax.grad(f, (0, 1, 2, 3))(*args)
        rng, h = np.random.default_rng(1), 1e-6
        for i, g in enumerate(grads):
            for _ in range(3):
                d = rng.standard_normal(args[i].shape)
                up = [a + h * d if j == i else a for j, a in enumerate(args)]
                down = [a - h * d if j == i else a for j, a in enumerate(args)]
                numeric = (float(f(*up)) - float(f(*down))) / (2 * h)
                analytic = float(jnp.sum(g * d))
                assert abs(numeric - analytic) <= 1e-7 * max(1.0, abs(analytic)), (i, numeric, analytic)


def test_saved_for_backward_is_not_l_by_s():
    from jax._src.ad_checkpoint import saved_residuals

    length = keys = 64
    q, k, v = (jnp.asarray(a, jnp.float32) for a in _inputs(lead=(2,), length=length, keys=keys, e=8, ev=8))
    mask = jnp.ones((keys,), bool)

    def f(q, k, v):
        return aj.attention(q, k, v, dropout_p=0.5, seed=1, mask=mask).sum()

    sizes = [math.prod(aval.shape) for aval, _ in saved_residuals(f, q, k, v)]
    assert sizes and max(sizes) < length * keys, sizes  # q, k, v, out: 2*64*8 = 1024; lse: 128
    formula = saved_residuals(lambda q, k, v: _formula(q, k, v, None, True, 2.0, 0.3).sum(), q, k, v)
    assert max(math.prod(aval.shape) for aval, _ in formula) >= 2 * length * keys  # the check can fail


def test_jit_traced_step_compiles_once_and_matches_eager():
    """The traced step draws the eager mask (exactly); values agree to float32 rounding (XLA fuses differently)."""
    q, k, v = (jnp.asarray(a, jnp.float32) for a in _inputs())
    traces = []

    @jax.jit
    def f(q, k, v, step):
        traces.append(1)
        return aj.attention(q, k, v, dropout_p=0.5, seed=SEED, step=step)

    for step in (0, 1, 2**32 - 1):
        got = f(q, k, v, jnp.asarray(step, jnp.uint32))
        np.testing.assert_allclose(got, aj.attention(q, k, v, dropout_p=0.5, seed=SEED, step=step), rtol=1e-5)
    assert len(traces) == 1
    eye = jnp.broadcast_to(jnp.eye(6, dtype=jnp.float32), (2, 3, 6, 6))
    zeros = jnp.zeros_like(q)

    @jax.jit
    def mask_of(step):
        return aj.attention(zeros, jnp.zeros((2, 3, 6, 4)), eye, dropout_p=0.5, seed=SEED, step=step) != 0

    for step, value in ((jnp.asarray(5, jnp.uint32), 5), (jnp.asarray([3, 1], jnp.uint32), 2**32 + 3)):
        assert np.array_equal(mask_of(step), am.keep((2, 3, 5, 6), 0.5, SEED, value))


def test_grad_under_jit_with_traced_seed_matches_eager():
    q, k, v = (jnp.asarray(a, jnp.float32) for a in _inputs())

    def loss(q, seed):
        return aj.attention(q, k, v, dropout_p=0.3, seed=seed, step=4).sum()

    got = jax.jit(jax.grad(loss))(q, jnp.asarray([7, 2], jnp.uint32))
    want = jax.grad(loss)(q, 2**33 + 7)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(want, jax.grad(loss)(q, 2**33 + 8), rtol=1e-3)  # another seed: other gradients


def test_vmap_is_one_call_per_slice():
    q, k, v = (jnp.asarray(a, jnp.float32) for a in _inputs(lead=(4, 3)))

    def f(q, k, v):
        return aj.attention(q, k, v, dropout_p=0.5, seed=SEED, step=STEP)

    got = jax.vmap(f)(q, k, v)
    for i in range(4):
        assert np.array_equal(got[i], f(q[i], k[i], v[i]))
    g = jax.vmap(jax.grad(lambda q, k, v: f(q, k, v).sum()))(q, k, v)
    assert np.array_equal(g[1], jax.grad(lambda q: f(q, k[1], v[1]).sum())(q[1]))


def test_grouped_query_heads_equal_repeated_heads():
    q = jnp.asarray(rand((2, 6, 5, 4)), jnp.float32)
    k, v = (jnp.asarray(rand((2, 2, 7, 4), s), jnp.float32) for s in (1, 2))
    got = aj.attention(q, k, v, dropout_p=0.3, seed=1)
    want = aj.attention(q, jnp.repeat(k, 3, axis=1), jnp.repeat(v, 3, axis=1), dropout_p=0.3, seed=1)
    assert np.array_equal(got, want)
    with pytest.raises(ValueError, match=r"k has 4 heads .* query's 6"):
        aj.attention(q, jnp.ones((2, 4, 7, 4)), jnp.ones((2, 4, 7, 4)))


def test_one_query_head_broadcasts_over_the_key_heads():
    """q (2, 1, L, E) against k, v (1, 3, S, E): the leading dims broadcast to (2, 3), as on NumPy and torch."""
    q = rand((2, 1, 5, 4))
    k, v = rand((1, 3, 7, 4), 1), rand((1, 3, 7, 4), 2)
    got = aj.attention(*(jnp.asarray(a, jnp.float32) for a in (q, k, v)), dropout_p=0.3, seed=1)
    lead = (2, 3)
    full = [jnp.asarray(np.broadcast_to(a, lead + a.shape[-2:]), jnp.float32) for a in (q, k, v)]
    assert np.array_equal(got, aj.attention(*full, dropout_p=0.3, seed=1))
    jq, jk, jv = (jnp.asarray(a, jnp.float32) for a in (q, k, v))
    assert np.array_equal(got, xdrop.scaled_dot_product_attention(jq, jk, jv, dropout_p=0.3, seed=1))
    want = xdrop.scaled_dot_product_attention(*(a.astype(np.float32) for a in (q, k, v)), dropout_p=0.3, seed=1)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)


def test_fully_masked_row():
    q, k, v = (jnp.asarray(a, jnp.float32) for a in _inputs(lead=(1,), length=3, keys=4))
    mask = jnp.asarray([[True] * 4, [False] * 4, [True, False, True, False]])
    out = np.asarray(aj.attention(q, k, v, dropout_p=0.5, seed=2, mask=mask))
    assert np.isnan(out[0, 1]).all() and np.isfinite(out[0, [0, 2]]).all()  # -inf fill: torch's NaN
    out = np.asarray(aj.attention(q, k, v, dropout_p=0.0, mask=mask, empty_rows="uniform"))  # Flax: mean of v
    assert np.allclose(out[0, 1], np.asarray(v)[0].mean(axis=0), rtol=1e-6)
    assert np.array_equal(out[0, [0, 2]], np.asarray(aj.attention(q, k, v, mask=mask))[0, [0, 2]])
    dq = jax.grad(lambda q: aj.attention(q, k, v, mask=mask, empty_rows="uniform").sum())(q)
    assert np.all(np.asarray(dq)[0, 1] == 0) and np.all(np.isfinite(dq))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_types_round_the_float32_result(dtype):
    q, k, v = (jnp.asarray(a, dtype) for a in _inputs())
    got = aj.attention(q, k, v, dropout_p=0.5, seed=SEED)
    assert got.dtype == dtype
    want = aj.attention(*(a.astype(jnp.float32) for a in (q, k, v)), dropout_p=0.5, seed=SEED)
    assert np.array_equal(np.asarray(got.astype(jnp.float32)), np.asarray(want.astype(dtype).astype(jnp.float32)))


def test_bad_inputs_name_the_argument():
    x = jnp.ones((2, 3, 4))
    with pytest.raises(ValueError, match="seed is required"):
        aj.attention(x, x, x, dropout_p=0.1)
    with pytest.raises(ValueError, match="dropout_p must be a probability"):
        aj.attention(x, x, x, dropout_p=1.5, seed=0)
    with pytest.raises(ValueError, match=r"shapes q=\(2, 3, 4\), k=\(2, 3, 5\)"):
        aj.attention(x, jnp.ones((2, 3, 5)), x)
    with pytest.raises(ValueError, match="seed must be"):
        aj.attention(x, x, x, dropout_p=0.1, seed=-1)
    with pytest.raises(TypeError, match="traced"):
        jax.jit(lambda s: aj.attention(x, x, x, dropout_p=0.1, seed=s))(jnp.asarray(1, jnp.int32))


def test_inputs_unchanged_and_mask_matches_other_backends():
    """The JAX mask is keep_mask's on NumPy: the one test of the stream the other backends share."""
    q, k, v = _inputs()
    before = [a.copy() for a in (q, k, v)]
    aj.attention(*map(jnp.asarray, (q, k, v)), dropout_p=0.5, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip((q, k, v), before, strict=True))
    assert np.array_equal(
        np.asarray(xdrop.keep_mask((2, 3, 5, 6), 0.5, seed=3, xp=jnp)), am.keep((2, 3, 5, 6), 0.5, 3, 0)
    )


@pytest.mark.parametrize("empty_rows", ["nan", "uniform", "zero"])
@pytest.mark.parametrize("p", [0.0, 0.5])
def test_zero_keys_give_zeros_and_zero_gradients(p, empty_rows):
    """S = 0: out 0 under every ``empty_rows`` (no key means no weight at all), gradients 0."""
    q = jnp.asarray(rand((2, 5, 4)), jnp.float32)
    k, v, bias = jnp.zeros((2, 0, 4)), jnp.zeros((2, 0, 3)), jnp.zeros((5, 0))

    def f(q, k, v, bias):
        return aj.attention(q, k, v, bias, p, seed=SEED, empty_rows=empty_rows)

    out = f(q, k, v, bias)
    assert out.shape == (2, 5, 3) and np.all(np.asarray(out) == 0)
    grads = jax.grad(lambda *a: jnp.sum(f(*a) * 2.0), (0, 1, 2, 3))(q, k, v, bias)
    for g, a in zip(grads, (q, k, v, bias), strict=True):
        assert g.shape == a.shape and np.all(np.asarray(g) == 0)


def test_public_function_gives_the_float_mask_its_gradient():
    """``xdrop.scaled_dot_product_attention`` on JAX arrays: a float attn_mask is differentiable, as on torch."""
    q, k, v = (jnp.asarray(a) for a in _inputs(lead=(2, 3), length=5, keys=6))
    bias = jnp.asarray(rand((3, 5, 6), 4), jnp.float32)  # per head, broadcast over the batch
    keep = am.keep((2, 3, 5, 6), 0.3, SEED, STEP)

    def fused(b):
        return jnp.sum(xdrop.scaled_dot_product_attention(q, k, v, b, 0.3, seed=SEED, step=STEP) ** 2)

    def formula(b):
        return jnp.sum(_formula(q, k, v, b, keep, 1 / effective_keep(0.3), 1 / math.sqrt(4)) ** 2)

    got, want = jax.grad(fused)(bias), jax.grad(formula)(bias)
    assert got.shape == bias.shape and am.rel_err(got, want) < 1e-5


BLOCKED = {  # keys a multiple of 4 (lane order); bias, mask broadcast over some leading dims
    "bias over the batch": {"bias": (3, 5, 8)},
    "bias per weight": {"bias": (2, 3, 5, 8)},
    "bias over heads": {"bias": (2, 1, 5, 8)},
    "mask over heads": {"mask": True},
    "causal + bias": {"is_causal": True, "bias": (2, 1, 1, 8)},
}


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("block", [None, 1, 3 * 5 * 8], ids=["one step", "one head a step", "three heads a step"])
@pytest.mark.parametrize("name", list(BLOCKED))
def test_blocks_and_lane_order_match_the_formula_float64(monkeypatch, name, block, shared):
    """Values, gradients (q, k, v, bias) and mask bits, whatever the step size of the loop, keys in lane order."""
    if block is not None:
        monkeypatch.setattr(aj, "BLOCK", block)
    c = BLOCKED[name]
    q, k, v = _inputs(lead=(2, 3), length=5, keys=8)
    bias = rand(c["bias"], 9) if "bias" in c else None
    mask = (np.arange(8) % 3 != 1) | (np.arange(2)[:, None, None, None] == 0) if "mask" in c else None
    causal, p = c.get("is_causal", False), 0.4
    keep = am.keep((5, 8) if shared else (2, 3, 5, 8), p, SEED, STEP)
    _assert_gradients_match_formula(q, k, v, bias, mask, keep, p=p, scale=0.5, is_causal=causal, shared_mask=shared)
    got = kept((2, 3), 5, 8, p, shared_mask=shared)
    assert np.array_equal(got, np.broadcast_to(keep, got.shape))


@pytest.mark.parametrize("p", [0.1, 0.5])
@pytest.mark.parametrize("lead, length, keys", [((3,), 5, 8), ((2, 3), 4, 12), ((1,), 1, 4), ((2,), 3, 0)], ids=str)
def test_mask_bits_equal_keep_mask_in_lane_order(lead, length, keys, p):
    got = kept(lead, length, keys, p)
    assert np.array_equal(got, am.keep((*lead, length, keys), p, SEED, STEP))
    got = kept(lead, length, keys, p, shared_mask=True)
    assert np.array_equal(got, np.broadcast_to(am.keep((length, keys), p, SEED, STEP), got.shape))


def _philox_outputs(fn, *args):
    """Element counts of the compiled fusions of ``fn`` that draw Philox words (a 32-bit unsigned multiply)."""
    import re

    text = fn.lower(*args).compile().as_text()
    drawing = set()
    for block in re.split(r"\n(?=%|ENTRY)", text):
        head = block.split(" ", 1)[0].lstrip("%")
        if re.search(r"= u32\[[\d,]*\]\S* multiply\(", block):
            drawing.add(head)
    counts = []
    for shape, called in re.findall(r"= \w+\[([\d,]*)\]\S* fusion\(.*?calls=%([\w.\-]+)", text):
        if called in drawing:
            counts.append(math.prod(int(d) for d in shape.split(",") if d))
    return counts


def test_a_shared_mask_is_drawn_once_not_per_head():
    """broadcast_dropout's (L, S) mask: XLA computes its Philox words over L x S elements, not per batch and head
    (the XLA path: E = 16 would take the host routine on the CPU)."""
    length = keys = 64
    q = jnp.ones((2, 8, length, 16), jnp.float32)
    for k_len in (keys, keys + 2):  # lane order, and key order
        k = jnp.ones((2, 8, k_len, 16), jnp.float32)

        def loss(q, k, shared):
            return aj.attention(q, k, k, dropout_p=0.1, seed=1, shared_mask=shared, host_kernel=False).sum()

        for shared in (True, False):
            counts = _philox_outputs(jax.jit(jax.grad(loss), static_argnums=2), q, k, shared)
            assert counts, "no Philox fusion found: the check would pass vacuously"
            if shared:
                assert max(counts) <= length * k_len, counts
            else:  # the check can fail: an unshared mask is drawn over every weight
                assert max(counts) > length * k_len, counts


@pytest.mark.parametrize("shared", [True, False])
def test_temporaries_smaller_than_the_weights_and_than_flax(shared):
    """XLA's temporaries for fwd+bwd hold one block of weights, less than one (B, H, L, S) float32 array."""
    linen = pytest.importorskip("flax.linen", reason="flax is not installed")
    b, h, length, e = 2, 4, 1024, 16
    weights = b * h * length * length * 4
    q = jnp.ones((b, length, h, e), jnp.float32)

    def temp(loss):
        compiled = jax.jit(jax.grad(loss)).lower(q).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    def ours(q):
        qh = jnp.swapaxes(q, 1, 2)
        return aj.attention(qh, qh, qh, dropout_p=0.1, seed=1, shared_mask=shared, empty_rows="uniform").sum()

    def flax(q):
        rng = jax.random.key(0)
        return linen.dot_product_attention(q, q, q, dropout_rng=rng, dropout_rate=0.1, broadcast_dropout=shared,
                                           deterministic=False).sum()  # fmt: skip

    assert temp(ours) < weights <= temp(flax)


# -- the host routine on the CPU (_attention_host: E and Ev multiples of 16, no bias, no mask) --------------


@pytest.fixture
def host_calls(monkeypatch):
    """The XLA FFI targets the JAX host path traced calls of (skips where the handlers are not built)."""
    from xdrop._kernels.jax import _attention_host

    monkeypatch.setattr(_attention_host, "HOST", True)
    if _attention_host.routine(jnp.zeros((1, 16)), jnp.zeros((1, 16)), jnp.zeros((1, 16)), None, None) is None:
        pytest.skip("the host routine needs the compiled kernel's avx2 or avx512 variant and jax.ffi")
    calls, target = [], _attention_host._target
    monkeypatch.setattr(_attention_host, "_target", lambda lib, d: calls.append(d) or target(lib, d))
    return calls


HOST_CASES = {
    "plain": {"lead": (2, 3), "p": 0.3},
    "shared": {"lead": (2, 3), "p": 0.3, "shared_mask": True},
    "causal": {"lead": (2, 3), "p": 0.4, "is_causal": True},
    "causal shared": {"lead": (3,), "p": 0.4, "is_causal": True, "shared_mask": True},
    "no dropout": {"lead": (2,), "p": 0.0},
    "all dropped": {"lead": (2,), "p": 1.0},
    "no lead": {"lead": (), "p": 0.5, "scale": 0.3},
    "more keys": {"lead": (2,), "p": 0.2, "keys": 45},
}


@pytest.mark.parametrize("name", list(HOST_CASES))
def test_host_routine_matches_the_xla_path(host_calls, name):
    """Values and gradients of the host routine against the XLA path (same mask bits, float32 rounding),
    eagerly and under jit; the routine was called."""
    c = dict(HOST_CASES[name])
    lead, p, keys = c.pop("lead"), c.pop("p"), c.pop("keys", 21)
    q, k, v = (jnp.asarray(a, jnp.float32) for a in _inputs(lead=lead, length=13, keys=keys, e=16, ev=32))
    w = jnp.asarray(rand((*lead, 13, 32), 5), jnp.float32)

    def loss(q, k, v, host):
        return (aj.attention(q, k, v, dropout_p=p, seed=SEED, step=STEP, host_kernel=host, **c) * w).sum()

    want = jax.value_and_grad(loss, argnums=(0, 1, 2))(q, k, v, False)
    assert not host_calls
    step = jax.value_and_grad(loss, argnums=(0, 1, 2))
    for fn in (step, jax.jit(step, static_argnums=3)):
        got = fn(q, k, v, True)
        for g, x in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(g, x, rtol=2e-5, atol=2e-5)
    assert host_calls.count("fwd") >= 2 and host_calls.count("bwd") >= 2  # eager and jitted
    text = jax.jit(jax.grad(loss), static_argnums=3).lower(q, k, v, True).compile().as_text()
    assert "xdrop_attention_fwd" in text and "xdrop_attention_bwd" in text


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("p", [0.1, 0.5])
def test_host_routine_mask_bits_equal_keep_mask(host_calls, shared, p):
    keys = 48
    q, k = jnp.zeros((2, 3, 5, 16)), jnp.zeros((2, 3, keys, 16))
    v = jnp.broadcast_to(jnp.eye(keys, dtype=jnp.float32), (2, 3, keys, keys))
    got = np.asarray(aj.attention(q, k, v, dropout_p=p, seed=SEED, step=STEP, shared_mask=shared)) != 0
    want = am.keep((5, keys) if shared else (2, 3, 5, keys), p, SEED, STEP)
    assert np.array_equal(got, np.broadcast_to(want, got.shape))
    assert host_calls


def test_host_routine_traced_seed_vmap_and_half_types(host_calls):
    q, k, v = (jnp.asarray(a, jnp.float32) for a in _inputs(lead=(4, 2), length=9, keys=12, e=16, ev=16))

    def f(q, k, v, seed=SEED, step=STEP):
        return aj.attention(q, k, v, dropout_p=0.5, seed=seed, step=step)

    traced = jax.jit(lambda q, s, t: f(q, k, v, s, t))(q, jnp.asarray([7, 2], jnp.uint32), jnp.asarray(3, jnp.uint32))
    np.testing.assert_allclose(traced, f(q, k, v, 2**33 + 7, 3), rtol=1e-6, atol=1e-6)
    got = jax.vmap(f)(q, k, v)  # each slice its own call, as on XLA
    for i in range(4):
        np.testing.assert_allclose(got[i], f(q[i], k[i], v[i]), rtol=1e-6, atol=1e-6)
        on_xla = aj.attention(q[i], k[i], v[i], dropout_p=0.5, seed=SEED, step=STEP, host_kernel=False)
        np.testing.assert_allclose(got[i], on_xla, rtol=2e-5, atol=2e-5)
    halves = [x.astype(jnp.bfloat16) for x in (q, k, v)]
    half = f(*halves)  # computed in float32, rounded once
    assert half.dtype == jnp.bfloat16
    assert np.array_equal(half, f(*(x.astype(jnp.float32) for x in halves)).astype(jnp.bfloat16))
    assert host_calls


def test_calls_the_host_routine_cannot_take_stay_on_xla(host_calls):
    """E not a multiple of 16, a bias, a boolean mask, or host_kernel=False: XLA's operations."""
    q, k, v = (jnp.asarray(a, jnp.float32) for a in _inputs(lead=(2,), length=5, keys=6, e=16, ev=16))
    aj.attention(q[..., :8], k[..., :8], v, dropout_p=0.5, seed=1)
    aj.attention(q, k, v, jnp.zeros((5, 6)), dropout_p=0.5, seed=1)
    aj.attention(q, k, v, dropout_p=0.5, seed=1, mask=jnp.ones((6,), bool))
    aj.attention(q, k, v, dropout_p=0.5, seed=1, host_kernel=False)
    assert not host_calls
    aj.attention(q, k, v, dropout_p=0.5, seed=1)
    assert host_calls
    with pytest.raises(TypeError, match="host_kernel must be True or False"):
        aj.attention(q, k, v, host_kernel="yes")


def test_host_kernel_false_exports_with_jax_export():
    """The host routine's custom calls do not serialize; with host_kernel=False the function exports and draws
    the same bits."""
    from jax import export

    q, k, v = (jnp.asarray(a, jnp.float32) for a in _inputs(lead=(2,), length=5, keys=8, e=16, ev=16))

    def f(q, step):
        return aj.attention(q, k, v, dropout_p=0.5, seed=SEED, step=step, host_kernel=False)

    exported = export.export(jax.jit(f))(
        jax.ShapeDtypeStruct(q.shape, jnp.float32), jax.ShapeDtypeStruct((), jnp.uint32)
    )
    restored = export.deserialize(exported.serialize())
    got = restored.call(q, jnp.uint32(3))
    np.testing.assert_allclose(got, aj.attention(q, k, v, dropout_p=0.5, seed=SEED, step=3), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("shape", [(2, 20, 3, 16), (1, 33, 1, 32)], ids=str)  # one problem: rows split
@pytest.mark.parametrize("broadcast", [True, False])
def test_flax_layout_takes_the_host_routine_without_transposes(host_calls, shape, broadcast):
    """Flax's (B, L, H, E) arrays go to the handlers as they are (heads inner): no transpose in the
    compiled step, and the values of the XLA path."""
    linen_free = pytest.importorskip("xdrop.flax", reason="flax is not installed")
    key = jax.random.key(3)
    q, k, v = (jax.random.normal(s, shape, jnp.float32) for s in jax.random.split(key, 3))
    w = jax.random.normal(key, shape, jnp.float32)

    def loss(q, k, v):
        out = linen_free.dot_product_attention(
            q, k, v, dropout_rng=key, dropout_rate=0.3, is_causal=True, broadcast_dropout=broadcast
        )
        return (out * w).sum()

    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
    text = step.lower(q, k, v).compile().as_text()
    assert "xdrop_attention_bwd" in text
    moves = rf"f32\[{shape[0]},\d+,\d+,{shape[3]}\]\{{[\d,]*\}} (transpose|copy)\("
    assert not re.search(moves, text)  # no op moves an operand
    got = step(q, k, v)
    from xdrop._kernels.jax import _attention_host

    _attention_host.HOST = False  # restored by the fixture's monkeypatch
    want = jax.value_and_grad(loss, argnums=(0, 1, 2))(q, k, v)
    for g, x in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, x, rtol=2e-5, atol=2e-5)


def test_host_routine_from_several_threads_at_once_gives_each_call_its_bits(host_calls):
    """XLA runs the custom calls of concurrent steps at once, each sharing out its parts on XLA's
    intra-op threads: every step equals the same step run alone, bit for bit."""
    import threading

    key = jax.random.key(0)
    q, k, v = (jax.random.normal(s, (2, 4, 48, 32), jnp.float32) for s in jax.random.split(key, 3))
    step = jax.jit(jax.grad(lambda q, k, v, s: aj.attention(q, k, v, dropout_p=0.2, seed=s).sum(), argnums=(0, 1, 2)))
    alone = {s: [np.asarray(g) for g in step(q, k, v, jnp.uint32(s))] for s in range(4)}
    wrong: list[int] = []

    def run(s):
        for _ in range(10):
            got = step(q, k, v, jnp.uint32(s))
            wrong.extend(s for g, w in zip(got, alone[s], strict=True) if not np.array_equal(g, w))

    threads = [threading.Thread(target=run, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not wrong
    assert len({alone[s][0].tobytes() for s in alone}) == 4  # the seeds differ: the check can fail
