"""``xdrop.scaled_dot_product_attention`` on every backend: the mask is keep_mask's, the values the math formula's.

The expected values come from NumPy float64 code written here from the formula,
with the mask of the independent scalar spec (``tests/spec_v1.py`` through
``helpers.spec_keep``), so neither the reference nor a fast path checks itself.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import spec_keep, spec_scale

import xdrop
from xdrop._functional._attention_reference import sdpa_reference

P = 0.3
SEED, STEP = 2**40 + 11, 5


def _inputs(lead=(2, 3), L=5, S=6, E=4, Ev=3, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((*lead, L, E))
    k = rng.standard_normal((*lead, S, E))
    v = rng.standard_normal((*lead, S, Ev))
    return q, k, v


def _expected(q, k, v, mask, p, seed, step, causal=False, scale=None):
    """The formula in NumPy float64, the mask from the scalar spec."""
    L, S = q.shape[-2], k.shape[-2]
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = q @ np.swapaxes(k, -1, -2) * scale
    if mask is not None:
        s = s + (np.where(mask, 0.0, -np.inf) if mask.dtype == bool else mask)
    if causal:
        s = np.where(np.tri(L, S, dtype=bool), s, -np.inf)
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    s = np.broadcast_to(s, (*lead, L, S))
    with np.errstate(invalid="ignore"):
        w = np.exp(s - s.max(-1, keepdims=True))
        w = np.nan_to_num(w / w.sum(-1, keepdims=True))  # a fully masked row: 0 (torch's math path)
    if p:
        w = np.where(spec_keep((*lead, L, S), p, seed, step), w * spec_scale(p, "float64"), 0.0)
    return w @ v


def _close(got, want, rtol):
    scale = np.abs(want).max()
    assert np.abs(got - want).max() <= rtol * scale, np.abs(got - want).max() / scale


def test_mask_is_keep_mask(backend):
    """With v the identity, the output *is* the dropped weights: its zeros are the mask, bit for bit."""
    lead, L, S = (2, 3), 7, 9
    q, k, _ = _inputs(lead, L, S, E=4)
    q, k = q * 0.1, k * 0.1  # bounded scores: no weight underflows to 0
    v = np.broadcast_to(np.eye(S), (*lead, S, S)).copy()
    with backend.scope():
        dtype = "float64" if "float64" in backend.dtypes else "float32"
        args = [backend.asarray(a.astype(dtype)) for a in (q, k, v)]
        out = backend.to_numpy(xdrop.scaled_dot_product_attention(*args, dropout_p=P, seed=SEED, step=STEP))
    want = spec_keep((*lead, L, S), P, SEED, STEP)
    assert out.shape == (*lead, L, S)
    assert np.array_equal(out != 0, want), f"{np.count_nonzero((out != 0) != want)} mask bits differ"
    # and the values, to the dtype's rounding (float32 where the backend has no float64)
    _close(out, _expected(q, k, v, None, P, SEED, STEP), 1e-12 if dtype == "float64" else 1e-5)
    np.testing.assert_array_equal(out != 0, xdrop.keep_mask((*lead, L, S), P, seed=SEED, step=STEP, xp=np))


@pytest.mark.parametrize("case", ["plain", "causal", "bool-mask", "float-mask", "broadcast", "gqa"])
def test_values_float64(backend, case):
    if "float64" not in backend.dtypes:
        pytest.skip(f"{backend.name} has no float64")
    q, k, v = _inputs()
    mask, causal, kw = None, False, {}
    rng = np.random.default_rng(1)
    if case == "causal":
        causal, kw = True, {"is_causal": True}
    elif case == "bool-mask":
        mask = rng.random((2, 1, 5, 6)) > 0.4
        mask[0, 0, 2] = False  # a row with no key: output 0
    elif case == "float-mask":
        mask = rng.standard_normal((5, 6))
    elif case == "broadcast":
        k, v = k[:1, :1], v[:1, :1]  # one key/value set for every (batch, head)
    elif case == "gqa":
        q = np.concatenate([q, q[:, ::-1] * 0.5], axis=1)  # 6 query heads on 3 key/value heads
    with backend.scope():
        args = [backend.asarray(a) for a in (q, k, v)]
        m = None if mask is None else backend.asarray(mask)
        got = backend.to_numpy(xdrop.scaled_dot_product_attention(*args, m, P, seed=SEED, step=STEP, scale=0.7, **kw))
    if case == "gqa":
        k, v = np.repeat(k, 2, axis=1), np.repeat(v, 2, axis=1)
    want = _expected(q, k, v, mask, P, SEED, STEP, causal, scale=0.7)
    assert got.shape == want.shape
    _close(got, want, 1e-12)
    if case == "bool-mask":
        assert np.all(got[0, :, 2] == 0)


def test_eval_and_p0_are_softmax_attention(numpy_ref):
    q, k, v = _inputs()
    want = _expected(q, k, v, None, 0.0, 0, 0)
    _close(xdrop.scaled_dot_product_attention(q, k, v, dropout_p=0.9, seed=1, training=False), want, 1e-12)
    _close(xdrop.scaled_dot_product_attention(q, k, v), want, 1e-12)


def test_generator_takes_one_step_and_inputs_unchanged():
    q, k, v = _inputs()
    copies = [a.copy() for a in (q, k, v)]
    g = xdrop.Generator(SEED, step=STEP)
    out = xdrop.scaled_dot_product_attention(q, k, v, dropout_p=P, seed=g)
    assert g.step == STEP + 1
    np.testing.assert_array_equal(out, xdrop.scaled_dot_product_attention(q, k, v, dropout_p=P, seed=SEED, step=STEP))
    for a, b in zip((q, k, v), copies, strict=True):
        np.testing.assert_array_equal(a, b)
    xdrop.scaled_dot_product_attention(q, k, v, dropout_p=P, seed=g, training=False)
    assert g.step == STEP + 1  # no dropout, no step taken


def test_reference_is_the_public_function_off_torch():
    import array_api_compat.numpy as xp

    q, k, v = _inputs()
    np.testing.assert_array_equal(
        sdpa_reference(xp, q, k, v, None, P, 0.5, SEED, STEP, True),
        xdrop.scaled_dot_product_attention(q, k, v, dropout_p=P, seed=SEED, step=STEP, scale=0.5, is_causal=True),
    )


@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
def test_zero_keys_give_zeros(backend, p):
    """S = 0: every row has no key, so every output row is 0 (torch's SDPA), at any dropout_p."""
    q, k, v = _inputs(S=0)
    dtype = "float64" if "float64" in backend.dtypes else "float32"
    with backend.scope():
        args = [backend.asarray(a.astype(dtype)) for a in (q, k, v)]
        for mask in (None, backend.asarray(np.ones((5, 0), dtype=bool))):
            got = backend.to_numpy(xdrop.scaled_dot_product_attention(*args, mask, p, seed=SEED, step=STEP))
            assert got.shape == (2, 3, 5, 3) and got.dtype == dtype
            assert np.all(got == 0)


def test_float16_scores_beyond_its_range_before_scaling(backend):
    """Head dim 64, entries 40: q k^T (102400) overflows float16, the scaled scores (12800) fit.

    Expected: the same float16 inputs in float32, rounded to float16; the tolerance is
    float16's rounding (a relative 2**-10 of the largest output, twice: the inputs'
    products are exact in float32, so only the float32 arithmetic and the final rounding
    differ).
    """
    if "float16" not in backend.dtypes:
        pytest.skip(f"{backend.name} has no float16")
    rng = np.random.default_rng(3)
    q = np.float16(40) * np.sign(rng.standard_normal((2, 2, 6, 64))).astype(np.float16)
    k = q[..., ::-1, :]  # row L - 1 - i of k is row i of q: q_i . k_j = 102400
    v = rng.standard_normal((2, 2, 6, 8)).astype(np.float16)
    with backend.scope():
        got = backend.to_numpy(
            xdrop.scaled_dot_product_attention(*(backend.asarray(a) for a in (q, k, v)), dropout_p=P, seed=SEED)
        )
        want = backend.to_numpy(
            xdrop.scaled_dot_product_attention(
                *(backend.asarray(a.astype(np.float32)) for a in (q, k, v)), dropout_p=P, seed=SEED
            )
        )
    assert got.dtype == np.float16 and np.isfinite(got).all()
    assert np.abs(got.astype(np.float32) - want).max() <= 2 * 2**-10 * np.abs(want).max()
