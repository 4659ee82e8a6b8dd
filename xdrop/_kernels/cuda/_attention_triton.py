# mypy: disable-error-code="no-untyped-def,untyped-decorator"
# (Triton kernels: their parameters are typed by Triton at launch, not by annotations.)
"""Attention with xdrop's dropout as Triton kernels: flash-style blocks, the mask drawn inside.

``forward`` and ``backward`` implement the kernel contract of the attention
functions: q ``(N, L, E)``, k ``(N, S, E)``, v ``(N, S, Ev)``, an optional
additive bias broadcastable to ``(N, L, S)`` (``-inf`` masks out), and the
dropout decision of weight ``(n, i, j)`` is stream v1's for the flat index
``(n*L + i)*S + j``, ``keep_mask((N, L, S), p, seed, step)`` bit for bit.

Nothing of L·S elements exists in memory: the forward walks the keys in
blocks with an online softmax and keeps ``out`` and one log-sum-exp per row;
the backward recomputes each block's scores and redraws its keep decisions
from ``(seed, step, index)`` (one Philox call per element, its lane selected,
as the JAX kernel does). ``dq`` has its own kernel (a walk over keys per query
block) and ``dk, dv`` theirs (a walk over queries per key block), so no
atomics: the gradients are deterministic. Arithmetic is float32 for float16,
bfloat16 and float32 inputs (products in IEEE float32, not TF32) and float64
for float64; a row with no key left gives 0 (torch 2.13's math path) and no gradient.
Under ``TRITON_INTERPRET=1`` the kernels run on CPU tensors, which is how the
tests check them.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import triton
import triton.language as tl

from ..._lib._stream import TWO32, keep_count, scale_for
from ._triton import _philox10, _u64, _word_arg

__all__ = ["backward", "forward"]

BLOCK_M = 32  # query rows per program
BLOCK_N = 32  # keys per inner step
DTYPES = ("float16", "bfloat16", "float32", "float64")


@triton.jit
def _keep_block(n, rows, cols, L, S, seed, step, k, SEED_PTR: tl.constexpr, STEP_PTR: tl.constexpr):
    """Keep decisions of weights (n, rows, cols): Philox block (e >> 2), lane e & 3, of e = (n*L + i)*S + j."""
    s = _u64(seed, SEED_PTR)
    t = _u64(step, STEP_PTR)
    e = (n.to(tl.uint64) * tl.cast(L, tl.uint64) + rows.to(tl.uint64)[:, None]) * tl.cast(S, tl.uint64)
    e = e + cols.to(tl.uint64)[None, :]
    block = e >> 2
    zero = tl.zeros(e.shape, tl.uint32)
    w0, w1, w2, w3 = _philox10(
        (block & 0xFFFFFFFF).to(tl.uint32),
        (block >> 32).to(tl.uint32),
        zero + (t & 0xFFFFFFFF).to(tl.uint32),
        zero + (t >> 32).to(tl.uint32),
        zero + (s & 0xFFFFFFFF).to(tl.uint32),
        zero + (s >> 32).to(tl.uint32),
    )
    lane = e & 3
    word = tl.where(lane == 0, w0, tl.where(lane == 1, w1, tl.where(lane == 2, w2, w3)))
    return word.to(tl.uint64) < tl.cast(k, tl.uint64)


@triton.jit
def _scores(
    q, kt, n, rows, cols, L, S, scale, bias_ptr, sb_n, sb_l, sb_s,
    HAS_BIAS: tl.constexpr, CAUSAL: tl.constexpr,
):  # fmt: skip
    """One block of scaled, biased scores; -inf outside the (L, S) range and above the diagonal if causal."""
    s = tl.dot(q, kt, input_precision="ieee") * scale
    valid = (rows[:, None] < L) & (cols[None, :] < S)
    if HAS_BIAS:
        offs = n.to(tl.int64) * sb_n + rows.to(tl.int64)[:, None] * sb_l + cols.to(tl.int64)[None, :] * sb_s
        s += tl.load(bias_ptr + offs, mask=valid, other=0.0).to(s.dtype)
    if CAUSAL:
        valid = valid & (cols[None, :] <= rows[:, None])
    return tl.where(valid, s, -float("inf"))


@triton.jit(do_not_specialize=["seed", "step", "k"])
def _forward_kernel(
    q_ptr, k_ptr, v_ptr, bias_ptr, out_ptr, lse_ptr,
    L, S, E, EV, sb_n, sb_l, sb_s, scale, drop_scale, seed, step, k,
    HAS_BIAS: tl.constexpr, CAUSAL: tl.constexpr, DROPOUT: tl.constexpr,
    SEED_PTR: tl.constexpr, STEP_PTR: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BE: tl.constexpr, BEV: tl.constexpr, CT: tl.constexpr,
):  # fmt: skip
    n = tl.program_id(1)
    rows = tl.program_id(0) * BM + tl.arange(0, BM)
    de, dv = tl.arange(0, BE), tl.arange(0, BEV)
    q_offs = n.to(tl.int64) * L * E + rows[:, None] * E + de[None, :]
    q = tl.load(q_ptr + q_offs, mask=(rows[:, None] < L) & (de[None, :] < E), other=0.0).to(CT)
    m = tl.full((BM,), -float("inf"), CT)
    total = tl.zeros((BM,), CT)
    acc = tl.zeros((BM, BEV), CT)
    for start in range(0, S, BN):
        cols = start + tl.arange(0, BN)
        kt, v = _key_cols(k_ptr, v_ptr, n, cols, S, E, EV, BE, BEV, CT)
        s = _scores(q, kt, n, rows, cols, L, S, scale, bias_ptr, sb_n, sb_l, sb_s, HAS_BIAS, CAUSAL)
        m_new = tl.maximum(m, tl.max(s, axis=1))
        shift = tl.where(m_new == -float("inf"), 0.0, m_new)  # a block with no key yet: no NaN from -inf - -inf
        p = tl.exp(s - shift[:, None])
        alpha = tl.exp(m - shift)
        total = total * alpha + tl.sum(p, axis=1)
        if DROPOUT:
            keep = _keep_block(n, rows, cols, L, S, seed, step, k, SEED_PTR, STEP_PTR)
            p = tl.where(keep, p * drop_scale, 0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(CT), v, input_precision="ieee")
        m = m_new
    # A row with no key left (total 0): output 0, as torch 2.13's math path, and lse +inf, so that the
    # backward's weights exp(s - lse) are 0 there too (no NaN, no gradient).
    empty = total == 0
    out = acc / tl.where(empty, 1.0, total)[:, None]
    out_offs = n.to(tl.int64) * L * EV + rows[:, None] * EV + dv[None, :]
    tl.store(out_ptr + out_offs, out.to(out_ptr.dtype.element_ty), mask=(rows[:, None] < L) & (dv[None, :] < EV))
    lse = tl.where(empty, float("inf"), m + tl.log(tl.where(empty, 1.0, total)))
    tl.store(lse_ptr + n.to(tl.int64) * L + rows, lse, mask=rows < L)


@triton.jit
def _ds_block(
    q, kt, v, do, lse, delta, n, rows, cols, L, S, scale, drop_scale, seed, step, k, bias_ptr, sb_n, sb_l, sb_s,
    HAS_BIAS: tl.constexpr, CAUSAL: tl.constexpr, DROPOUT: tl.constexpr,
    SEED_PTR: tl.constexpr, STEP_PTR: tl.constexpr, CT: tl.constexpr,
):  # fmt: skip
    """(dropped weights, d scores) of one block: the weights from the saved lse, the mask redrawn."""
    s = _scores(q, kt, n, rows, cols, L, S, scale, bias_ptr, sb_n, sb_l, sb_s, HAS_BIAS, CAUSAL)
    p = tl.exp(s - lse[:, None])
    p = tl.where((rows[:, None] < L) & (cols[None, :] < S), p, 0.0)
    dp = tl.dot(do, tl.trans(v), input_precision="ieee")
    if DROPOUT:
        keep = _keep_block(n, rows, cols, L, S, seed, step, k, SEED_PTR, STEP_PTR)
        pd = tl.where(keep, p * drop_scale, 0.0)
        dp = tl.where(keep, dp * drop_scale, 0.0)
    else:
        pd = p
    return pd.to(CT), (p * (dp - delta[:, None])).to(CT)


@triton.jit
def _query_rows(q_ptr, do_ptr, lse_ptr, delta_ptr, n, rows, L, E, EV, BE: tl.constexpr, BEV: tl.constexpr, CT):
    """One block of query rows for the backward: q, dout, lse and delta (0 past row L)."""
    de, dv = tl.arange(0, BE), tl.arange(0, BEV)
    ok = rows < L
    q = tl.load(
        q_ptr + n.to(tl.int64) * L * E + rows[:, None] * E + de[None, :],
        mask=ok[:, None] & (de[None, :] < E),
        other=0.0,
    )
    do = tl.load(
        do_ptr + n.to(tl.int64) * L * EV + rows[:, None] * EV + dv[None, :],
        mask=ok[:, None] & (dv[None, :] < EV),
        other=0.0,
    )
    lse = tl.load(lse_ptr + n.to(tl.int64) * L + rows, mask=ok, other=0.0)
    delta = tl.load(delta_ptr + n.to(tl.int64) * L + rows, mask=ok, other=0.0)
    return q.to(CT), do.to(CT), lse.to(CT), delta.to(CT)


@triton.jit
def _key_cols(k_ptr, v_ptr, n, cols, S, E, EV, BE: tl.constexpr, BEV: tl.constexpr, CT):
    """One block of keys: k transposed (BE, BN) and v (BN, BEV), 0 past key S."""
    de, dv = tl.arange(0, BE), tl.arange(0, BEV)
    ok = cols < S
    kt = tl.load(
        k_ptr + n.to(tl.int64) * S * E + cols[None, :] * E + de[:, None],
        mask=ok[None, :] & (de[:, None] < E),
        other=0.0,
    )
    v = tl.load(
        v_ptr + n.to(tl.int64) * S * EV + cols[:, None] * EV + dv[None, :],
        mask=ok[:, None] & (dv[None, :] < EV),
        other=0.0,
    )
    return kt.to(CT), v.to(CT)


@triton.jit(do_not_specialize=["seed", "step", "k"])
def _dq_kernel(
    q_ptr, k_ptr, v_ptr, bias_ptr, do_ptr, lse_ptr, delta_ptr, dq_ptr,
    L, S, E, EV, sb_n, sb_l, sb_s, scale, drop_scale, seed, step, k,
    HAS_BIAS: tl.constexpr, CAUSAL: tl.constexpr, DROPOUT: tl.constexpr,
    SEED_PTR: tl.constexpr, STEP_PTR: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BE: tl.constexpr, BEV: tl.constexpr, CT: tl.constexpr,
):  # fmt: skip
    n = tl.program_id(1)
    rows = tl.program_id(0) * BM + tl.arange(0, BM)
    q, do, lse, delta = _query_rows(q_ptr, do_ptr, lse_ptr, delta_ptr, n, rows, L, E, EV, BE, BEV, CT)
    dq = tl.zeros((BM, BE), CT)
    for start in range(0, S, BN):
        cols = start + tl.arange(0, BN)
        kt, v = _key_cols(k_ptr, v_ptr, n, cols, S, E, EV, BE, BEV, CT)
        _, ds = _ds_block(
            q, kt, v, do, lse, delta, n, rows, cols, L, S, scale, drop_scale, seed, step, k,
            bias_ptr, sb_n, sb_l, sb_s, HAS_BIAS, CAUSAL, DROPOUT, SEED_PTR, STEP_PTR, CT,
        )  # fmt: skip
        dq += tl.dot(ds, tl.trans(kt), input_precision="ieee")
    de = tl.arange(0, BE)
    dq_offs = n.to(tl.int64) * L * E + rows[:, None] * E + de[None, :]
    tl.store(dq_ptr + dq_offs, (dq * scale).to(dq_ptr.dtype.element_ty), mask=(rows[:, None] < L) & (de[None, :] < E))


@triton.jit(do_not_specialize=["seed", "step", "k"])
def _dkv_kernel(
    q_ptr, k_ptr, v_ptr, bias_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr,
    L, S, E, EV, sb_n, sb_l, sb_s, scale, drop_scale, seed, step, k,
    HAS_BIAS: tl.constexpr, CAUSAL: tl.constexpr, DROPOUT: tl.constexpr,
    SEED_PTR: tl.constexpr, STEP_PTR: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BE: tl.constexpr, BEV: tl.constexpr, CT: tl.constexpr,
):  # fmt: skip
    n = tl.program_id(1)
    cols = tl.program_id(0) * BN + tl.arange(0, BN)
    kt, v = _key_cols(k_ptr, v_ptr, n, cols, S, E, EV, BE, BEV, CT)
    dk = tl.zeros((BN, BE), CT)
    dvv = tl.zeros((BN, BEV), CT)
    for start in range(0, L, BM):
        rows = start + tl.arange(0, BM)
        q, do, lse, delta = _query_rows(q_ptr, do_ptr, lse_ptr, delta_ptr, n, rows, L, E, EV, BE, BEV, CT)
        pd, ds = _ds_block(
            q, kt, v, do, lse, delta, n, rows, cols, L, S, scale, drop_scale, seed, step, k,
            bias_ptr, sb_n, sb_l, sb_s, HAS_BIAS, CAUSAL, DROPOUT, SEED_PTR, STEP_PTR, CT,
        )  # fmt: skip
        dvv += tl.dot(tl.trans(pd), do, input_precision="ieee")
        dk += tl.dot(tl.trans(ds), q, input_precision="ieee")
    de, dv = tl.arange(0, BE), tl.arange(0, BEV)
    ok = cols[:, None] < S
    dk_offs = n.to(tl.int64) * S * E + cols[:, None] * E + de[None, :]
    tl.store(dk_ptr + dk_offs, (dk * scale).to(dk_ptr.dtype.element_ty), mask=ok & (de[None, :] < E))
    dv_offs = n.to(tl.int64) * S * EV + cols[:, None] * EV + dv[None, :]
    tl.store(dv_ptr + dv_offs, dvv.to(dv_ptr.dtype.element_ty), mask=ok & (dv[None, :] < EV))


def _pow2(n: int) -> int:
    return max(16, 1 << (n - 1).bit_length())  # a power of two; tl.dot needs dims of at least 16


def _check(q: Any, k: Any, v: Any) -> None:
    dtype = str(q.dtype).removeprefix("torch.")
    if dtype not in DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"q, k, v must share a dtype in {DTYPES}, got {q.dtype}, {k.dtype}, {v.dtype}")
    if q.dim() != 3 or k.dim() != 3 or v.dim() != 3:
        raise ValueError(f"q, k, v must be (N, L, E), (N, S, E), (N, S, Ev), got {q.shape}, {k.shape}, {v.shape}")
    n, _, e = q.shape
    if tuple(k.shape[::2]) != (n, e) or v.shape[0] != n or v.shape[1] != k.shape[1]:
        raise ValueError(f"q, k, v must be (N, L, E), (N, S, E), (N, S, Ev), got {q.shape}, {k.shape}, {v.shape}")


def _common(
    q: Any, k: Any, v: Any, bias: Any, dropout_p: float, seed: Any, step: Any, is_causal: bool
) -> dict[str, Any]:
    """The launch arguments forward and backward share."""
    _check(q, k, v)
    n, length, e = q.shape
    keys, ev = k.shape[1], v.shape[2]
    wide = q.dtype == torch.float64
    kc = keep_count(dropout_p)
    strides: tuple[int, ...] = (0, 0, 0)
    if bias is None:
        bias_t = q  # an unread pointer
    else:
        bias_t = torch.broadcast_to(bias, (n, length, keys))  # strides 0 where it broadcasts: nothing copied
        strides = tuple(bias_t.stride())
    s, s_ptr = _word_arg(seed, "seed")
    t, t_ptr = _word_arg(step, "step")
    ct = tl.float64 if wide else tl.float32
    return {
        "bias": bias_t,
        "args": (length, keys, e, ev, *strides),
        "drop": (scale_for(kc, torch, q.dtype if wide else torch.float32), s, t, kc),
        "flags": {
            "HAS_BIAS": bias is not None,
            "CAUSAL": bool(is_causal),
            "DROPOUT": kc != TWO32,
            "SEED_PTR": s_ptr,
            "STEP_PTR": t_ptr,
            "BM": BLOCK_M,
            "BN": BLOCK_N,
            "BE": _pow2(e),
            "BEV": _pow2(ev),
            "CT": ct,
        },
        "lse_dtype": torch.float64 if wide else torch.float32,
    }


def forward(
    q: Any, k: Any, v: Any, bias: Any, dropout_p: float, scale: float | None, seed: Any, step: Any, is_causal: bool
) -> tuple[Any, Any]:
    """``(out, lse)``: attention with stream-v1 dropout of the weights; ``lse`` ``(N, L)``, float32 or float64.

    ``scale`` None means ``1 / sqrt(E)``; ``seed``/``step`` are ints in
    ``[0, 2**64)`` or int64 device tensors (element 0 read), as for the
    Triton dropout kernel.

    Examples
    --------
    >>> import torch  # doctest: +SKIP
    >>> q = k = v = torch.ones(1, 3, 4, device="cuda")  # doctest: +SKIP
    >>> forward(q, k, v, None, 0.5, None, 7, 0, False)[0][0, :, 0]  # doctest: +SKIP
    tensor([0.6667, 1.3333, 1.3333], device='cuda:0')
    """
    q, k, v = (x.contiguous() for x in (q, k, v))
    c = _common(q, k, v, bias, dropout_p, seed, step, is_causal)
    n, length, _ = q.shape
    out = torch.empty((n, length, v.shape[2]), dtype=q.dtype, device=q.device)
    lse = torch.empty((n, length), dtype=c["lse_dtype"], device=q.device)
    scale = 1.0 / math.sqrt(q.shape[2]) if scale is None else float(scale)
    if n and length:
        _forward_kernel[(triton.cdiv(length, BLOCK_M), n)](
            q, k, v, c["bias"], out, lse, *c["args"], scale, *c["drop"], **c["flags"]
        )
    return out, lse


def backward(
    dout: Any,
    q: Any,
    k: Any,
    v: Any,
    bias: Any,
    out: Any,
    lse: Any,
    dropout_p: float,
    scale: float | None,
    seed: Any,
    step: Any,
    is_causal: bool,
) -> tuple[Any, Any, Any]:
    """``(dq, dk, dv)`` from the saved ``out`` and ``lse``, the keep decisions redrawn from ``(seed, step, index)``."""
    q, k, v, dout = (x.contiguous() for x in (q, k, v, dout))
    c = _common(q, k, v, bias, dropout_p, seed, step, is_causal)
    n, length, _ = q.shape
    keys = k.shape[1]
    scale = 1.0 / math.sqrt(q.shape[2]) if scale is None else float(scale)
    # sum_j Wd_ij dWd_ij = dO_i . out_i: one number per row, computed once for both kernels
    delta = (dout.to(c["lse_dtype"]) * out.to(c["lse_dtype"])).sum(-1).contiguous()
    lse = lse.to(c["lse_dtype"]).contiguous()
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    if n == 0 or length == 0 or keys == 0:
        return dq.zero_(), dk.zero_(), dv.zero_()
    shared = (c["bias"], dout, lse, delta)
    _dq_kernel[(triton.cdiv(length, BLOCK_M), n)](q, k, v, *shared, dq, *c["args"], scale, *c["drop"], **c["flags"])
    _dkv_kernel[(triton.cdiv(keys, BLOCK_N), n)](q, k, v, *shared, dk, dv, *c["args"], scale, *c["drop"], **c["flags"])
    return dq, dk, dv
