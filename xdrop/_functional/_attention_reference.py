"""Attention with dropout in pure standard array code: the reference every fast path is tested against.

The keep decision of attention weight ``(n, i, j)`` is stream v1's at the flat
row-major index ``(n * L + i) * S + j`` of the ``B + (L, S)`` weight array
(``n`` the flat index over the broadcast leading shape ``B``), so the mask is
``keep_mask(B + (L, S), ...)`` itself. Nothing here is fast: it builds the
whole ``(..., L, S)`` weight array. float16 and bfloat16 inputs are computed
in float32 (as torch's math path on the CPU), dropout scale included, so an
unscaled ``q k^T`` beyond their range cannot overflow.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

from .._lib._stream import keep_count
from ._call import dropout_scale
from ._dropout import keep_mask


def leading_shape(q: Any, k: Any, v: Any) -> tuple[int, ...]:
    """``B``: the broadcast of the leading (all but the last two) dimensions of q, k and v."""
    shapes = [tuple(a.shape[:-2]) for a in (q, k, v)]
    rank = max(len(s) for s in shapes)
    out = []
    for dims in zip(*[(1,) * (rank - len(s)) + s for s in shapes], strict=True):
        sizes = {d for d in dims if d != 1}
        if len(sizes) > 1:
            raise ValueError(f"the leading dimensions of q, k and v do not broadcast: {shapes}")
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def compute_dtype(xp: ModuleType, dtype: Any) -> Any:
    """The dtype of the scores, softmax and products: float32 for float16 and bfloat16, else ``dtype``."""
    return xp.float32 if xp.finfo(dtype).bits < 32 else dtype


def attention_weights(
    xp: ModuleType,
    q: Any,
    k: Any,
    bias: Any,
    dropout_p: float,
    scale: float,
    seed: int,
    step: int,
    is_causal: bool,
    lead: tuple[int, ...],
) -> Any:
    """The dropped attention weights ``where(keep, softmax(q k^T scale + bias) * a, 0)``, shape ``lead + (L, S)``.

    ``a`` is :func:`xdrop.dropout`'s scale for ``dropout_p`` in the compute dtype. A row
    whose every key is masked out gets weights 0 (as torch's math SDPA since 2.5).
    The weights are of :func:`compute_dtype`.
    """
    L, S = q.shape[-2], k.shape[-2]
    ct = compute_dtype(xp, q.dtype)
    scores = xp.matmul(xp.astype(q, ct, copy=False), xp.matrix_transpose(xp.astype(k, ct, copy=False))) * scale
    if S == 0:  # no key: the weights are empty, each output row 0 (torch's SDPA)
        return xp.broadcast_to(scores, (*lead, L, S))
    if bias is not None:
        scores = scores + xp.astype(bias, ct, copy=False)
    if is_causal:
        allowed = xp.arange(S)[None, :] <= xp.arange(L)[:, None]
        scores = xp.where(allowed, scores, xp.asarray(-math.inf, dtype=scores.dtype))
    scores = xp.broadcast_to(scores, (*lead, L, S))
    top = xp.max(scores, axis=-1, keepdims=True)
    top = xp.where(top == -math.inf, xp.zeros_like(top), top)  # fully masked row: exp(-inf) = 0, not NaN
    e = xp.exp(scores - top)
    total = xp.sum(e, axis=-1, keepdims=True)
    weights = e / xp.where(total == 0, xp.ones_like(total), total)
    if dropout_p == 0:
        return weights
    kk = keep_count(dropout_p)
    keep = keep_mask((*lead, L, S), dropout_p, seed=seed, step=step, xp=xp, device=getattr(q, "device", None))
    return xp.where(keep, weights * dropout_scale(kk, xp, ct), xp.zeros_like(weights))


def sdpa_reference(
    xp: ModuleType,
    q: Any,
    k: Any,
    v: Any,
    bias: Any,
    dropout_p: float,
    scale: float,
    seed: int,
    step: int,
    is_causal: bool,
) -> Any:
    """``attention_weights(...) @ v``: q ``(..., L, E)``, k ``(..., S, E)``, v ``(..., S, Ev)``, leading dims broadcast.

    ``bias`` is None or an additive float array broadcastable to ``B + (L, S)``
    (``-inf`` where a key is masked out); ``is_causal`` masks ``j > i``
    (top-left aligned, as torch). Differentiable wherever ``xp`` is (torch
    autograd, JAX): the tests take its gradients as the expected ones.
    """
    lead = leading_shape(q, k, v)
    weights = attention_weights(xp, q, k, bias, dropout_p, scale, seed, step, is_causal, lead)
    return xp.astype(xp.matmul(weights, xp.astype(v, weights.dtype, copy=False)), q.dtype, copy=False)
