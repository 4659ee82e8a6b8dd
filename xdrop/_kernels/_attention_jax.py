"""Attention dropout for JAX: a ``jax.custom_vjp`` whose backward redraws the mask.

The weights are ``W = softmax(q @ k^T * scale + bias)`` over the keys, the
dropped weights ``where(keep, W * a, 0)`` with ``keep`` stream v1's decisions
over the flat row-major index of the ``B + (L, S)`` weight array (``B`` the
leading shape) and ``a`` the inverted-dropout scale :func:`xdrop.dropout`
uses, and ``out = dropped @ v``. What autograd keeps between forward and
backward is the inputs, ``out`` and one log-sum-exp per row: O(L), never an
array of L·S elements. The backward recomputes the scores, the weights (from
the log-sum-exp) and the keep decisions, which depend only on
``(seed, step, index)``.

Leading dimensions are general: q ``B + (L, E)``, k ``B + (S, E)``,
v ``B + (S, Ev)`` with one leading shape ``B`` (:func:`attention` broadcasts
them and expands grouped-query heads first); the contract's ``(N, L, E)`` is
``B = (N,)``. Seeds and steps may be traced (``uint32`` words), so ``jax.jit``
with a step carried through the loop compiles once. Under ``jax.vmap`` each
mapped slice is one call: it draws the mask of its own ``B + (L, S)``.
XLA sees the whole score array of one call as a temporary in forward and in
backward; it is not saved.
"""

from __future__ import annotations

import functools
import math
from typing import Any

from .._stream import TWO32, keep_count, scale_for
from .._traced import TracedU64, jax_u64
from ._jax import _global_index, _keep_at, _words

__all__ = ["attention", "backward", "forward"]


def _mask_words(value: Any, name: str) -> tuple[Any, Any]:
    """``(low, high)`` uint32 words of a seed or step: an int, a TracedU64 or a JAX integer array."""
    from .._checks import check_u64

    if hasattr(value, "dtype") and not isinstance(value, TracedU64):
        value = jax_u64(value, name)
    return _words(check_u64(value, name))


def _keep(words: tuple[Any, Any, Any, Any], k: int, shape: tuple[int, ...], shared: bool) -> Any:
    """Keep decisions over ``shape`` = B + (L, S); ``shared``: one (L, S) mask for every leading index."""
    import jax.numpy as jnp

    if k in (0, TWO32):
        return jnp.full(shape[-2:] if shared else shape, k == TWO32)
    drawn = shape[-2:] if shared else shape
    lo, hi = _global_index(drawn, drawn, jnp.zeros(len(drawn), jnp.uint32))
    return _keep_at(*words, jnp.asarray(k, dtype=jnp.uint32), lo, hi)


def _compute_dtype(dtype: Any) -> Any:
    """Softmax arithmetic: float32 for half types, else the input's own type."""
    import jax.numpy as jnp

    return jnp.promote_types(dtype, jnp.float32)


def _scores(q: Any, k: Any, bias: Any, mask: Any, scale: float, is_causal: bool, uniform: bool) -> tuple[Any, Any]:
    """``q @ k^T * scale + bias`` in the compute type, -inf where ``mask`` is False or above the diagonal.

    ``uniform``: a row with every score -inf becomes all zeros (equal weights); the rows so
    replaced are returned too (None otherwise), as they pass no gradient.
    """
    import jax.numpy as jnp

    ct = _compute_dtype(q.dtype)
    s = jnp.einsum("...le,...se->...ls", q.astype(ct), k.astype(ct)) * jnp.asarray(scale, ct)
    if bias is not None:
        s = s + bias.astype(ct)
    if mask is not None:
        s = jnp.where(mask, s, jnp.asarray(-jnp.inf, ct))
    if is_causal:
        length, keys = s.shape[-2:]
        tril = jnp.arange(keys)[None, :] <= jnp.arange(length)[:, None]  # top-left aligned, as torch
        s = jnp.where(tril, s, jnp.asarray(-jnp.inf, ct))
    if not uniform:
        return s, None
    empty = jnp.max(s, axis=-1, keepdims=True, initial=-jnp.inf) == -jnp.inf
    return jnp.where(empty, jnp.zeros_like(s), s), empty


def _empty_to_zero(w: Any, empty: Any, empty_rows: str) -> Any:
    """``empty_rows="zero"``: the weights of a row with no key left are 0 (torch 2.13's math path), so is its
    output and its gradient."""
    import jax.numpy as jnp

    return jnp.where(empty, jnp.zeros_like(w), w) if empty_rows == "zero" else w


def _dropped(p_weights: Any, keep: Any, a: Any) -> Any:
    import jax.numpy as jnp

    return jnp.where(keep, p_weights * a, jnp.zeros_like(p_weights))


def _forward(q: Any, k: Any, v: Any, bias: Any, mask: Any, words: Any, cfg: tuple[Any, ...]) -> tuple[Any, Any]:
    import jax.numpy as jnp

    dropout_p, scale, is_causal, shared, empty_rows = cfg
    s, empty = _scores(q, k, bias, mask, scale, is_causal, empty_rows != "nan")
    m = jnp.max(s, axis=-1, keepdims=True, initial=-jnp.inf)  # -inf: no key (S = 0) gives out 0
    lse = m + jnp.log(jnp.sum(jnp.exp(s - m), axis=-1, keepdims=True))
    w = _empty_to_zero(jnp.exp(s - lse), empty, empty_rows)
    if dropout_p > 0.0:
        kc = keep_count(dropout_p)
        w = _dropped(w, _keep(words, kc, s.shape, shared), jnp.asarray(scale_for(kc, jnp, w.dtype), w.dtype))
    out = jnp.einsum("...ls,...sd->...ld", w, v.astype(w.dtype)).astype(v.dtype)
    return out, lse[..., 0]


def _backward(
    dout: Any, q: Any, k: Any, v: Any, bias: Any, mask: Any, out: Any, lse: Any, words: Any, cfg: tuple[Any, ...]
) -> tuple[Any, Any, Any, Any]:
    """dq, dk, dv and the cotangent of the biased scores ``ds`` (B + (L, S), a temporary)."""
    import jax.numpy as jnp

    dropout_p, scale, is_causal, shared, empty_rows = cfg
    s, empty = _scores(q, k, bias, mask, scale, is_causal, empty_rows != "nan")
    ct = s.dtype
    w = _empty_to_zero(jnp.exp(s - lse[..., None]), empty, empty_rows)
    do = dout.astype(ct)
    dw = jnp.einsum("...ld,...sd->...ls", do, v.astype(ct))
    if dropout_p > 0.0:
        kc = keep_count(dropout_p)
        keep = _keep(words, kc, s.shape, shared)
        a = jnp.asarray(scale_for(kc, jnp, ct), ct)
        wd, dw = _dropped(w, keep, a), _dropped(dw, keep, a)
    else:
        wd = w
    dv = jnp.einsum("...ls,...ld->...sd", wd, do)
    # sum_j W_ij dW_ij = sum_j Wd_ij dO_i . v_j = dO_i . out_i: one product per row, not per weight
    delta = jnp.sum(do * out.astype(ct), axis=-1, keepdims=True)
    ds = w * (dw - delta)
    if empty is not None:
        ds = jnp.where(empty, jnp.zeros_like(ds), ds)
    dq = jnp.einsum("...ls,...se->...le", ds, k.astype(ct)) * jnp.asarray(scale, ct)
    dk = jnp.einsum("...ls,...le->...se", ds, q.astype(ct)) * jnp.asarray(scale, ct)
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), ds


def _reduce_to(x: Any, shape: tuple[int, ...]) -> Any:
    """Sum ``x`` over the axes it was broadcast along from ``shape`` (a bias's cotangent)."""
    lead = x.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape) if n == 1 and x.shape[lead + i] != 1)
    return x.sum(axis=axes).reshape(shape) if axes else x


@functools.cache
def _custom() -> Any:
    """The ``custom_vjp`` function, built on first use (``import xdrop`` must not import jax)."""
    import jax
    import numpy as np

    @functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
    def fn(q: Any, k: Any, v: Any, bias: Any, mask: Any, words: Any, cfg: tuple[Any, ...]) -> Any:
        return _forward(q, k, v, bias, mask, words, cfg)[0]

    def fwd(q: Any, k: Any, v: Any, bias: Any, mask: Any, words: Any, cfg: tuple[Any, ...]) -> Any:
        out, lse = _forward(q, k, v, bias, mask, words, cfg)
        return out, (q, k, v, bias, mask, words, out, lse)

    def bwd(cfg: tuple[Any, ...], res: Any, dout: Any) -> Any:
        q, k, v, bias, mask, words, out, lse = res
        dq, dk, dv, ds = _backward(dout, q, k, v, bias, mask, out, lse, words, cfg)
        dbias = None if bias is None else _reduce_to(ds, tuple(bias.shape)).astype(bias.dtype)
        dmask = None if mask is None else np.zeros(mask.shape, jax.dtypes.float0)
        dwords = tuple(np.zeros(w.shape, jax.dtypes.float0) for w in words)
        return dq, dk, dv, dbias, dmask, dwords

    fn.defvjp(fwd, bwd)
    return fn


def _config(dropout_p: float, scale: float, is_causal: bool, shared: bool, empty_rows: str) -> tuple[Any, ...]:
    return (float(dropout_p), float(scale), bool(is_causal), bool(shared), empty_rows)


def forward(
    q: Any, k: Any, v: Any, bias: Any, dropout_p: float, scale: float, seed: Any, step: Any, is_causal: bool
) -> tuple[Any, Any]:
    """The contract's forward: ``(out, lse)`` for q ``(N, L, E)``, k ``(N, S, E)``, v ``(N, S, Ev)``.

    ``bias`` is None or additive, broadcastable to ``(N, L, S)`` (``-inf`` masks
    out); ``lse`` is the log-sum-exp of each row of the scaled, biased scores,
    float32 (float64 for float64 inputs). Any leading shape works in place of
    ``(N,)``. ``seed``/``step``: ints in ``[0, 2**64)`` or JAX integers (traced
    ones as in :func:`xdrop.dropout`).
    """
    words = (*_mask_words(seed, "seed"), *_mask_words(step, "step"))
    return _forward(q, k, v, bias, None, words, _config(dropout_p, scale, is_causal, False, "nan"))


def backward(
    dout: Any,
    q: Any,
    k: Any,
    v: Any,
    bias: Any,
    out: Any,
    lse: Any,
    dropout_p: float,
    scale: float,
    seed: Any,
    step: Any,
    is_causal: bool,
) -> tuple[Any, Any, Any]:
    """The contract's backward: ``(dq, dk, dv)``, the mask redrawn from ``(seed, step, index)``."""
    words = (*_mask_words(seed, "seed"), *_mask_words(step, "step"))
    cfg = _config(dropout_p, scale, is_causal, False, "nan")
    dq, dk, dv, _ = _backward(dout, q, k, v, bias, None, out, lse, words, cfg)
    return dq, dk, dv


def _expand_heads(x: Any, heads: int, name: str) -> Any:
    """Grouped-query attention: repeat each of x's heads (dim -3) to ``heads`` (a multiple of them).

    One head on either side is left to broadcasting, as NumPy and torch do.
    """
    import jax.numpy as jnp

    if x.ndim < 3 or x.shape[-3] == heads or 1 in (heads, x.shape[-3]):
        return x
    if heads % x.shape[-3]:
        raise ValueError(
            f"{name} has {x.shape[-3]} heads (dim -3), which do not divide the query's {heads}: "
            f"{name}.shape={tuple(x.shape)}"
        )
    return jnp.repeat(x, heads // x.shape[-3], axis=-3)


def attention(
    q: Any,
    k: Any,
    v: Any,
    bias: Any = None,
    dropout_p: float = 0.0,
    *,
    scale: float | None = None,
    seed: Any = None,
    step: Any = 0,
    is_causal: bool = False,
    mask: Any = None,
    shared_mask: bool = False,
    empty_rows: str = "nan",
) -> Any:
    """Scaled dot-product attention of JAX arrays with xdrop's dropout, differentiable by ``jax.grad``.

    Parameters
    ----------
    q, k, v : jax.Array
        ``(..., L, E)``, ``(..., S, E)``, ``(..., S, Ev)``; leading dims
        broadcast, and k/v may have fewer heads (dim -3) than q, a divisor of
        them (grouped-query attention).
    bias : jax.Array, optional
        Additive float bias broadcastable to ``(..., L, S)``; it has a gradient.
    dropout_p : float
        Probability of dropping a weight.
    scale : float, optional
        Score scale; ``1 / sqrt(E)`` by default.
    seed, step : int or JAX integer
        The stream's seed and step (traced ``uint32`` values are read as words,
        as by :func:`xdrop.dropout`); ``seed`` is required when ``dropout_p > 0``.
    is_causal : bool
        Key ``j`` takes part in query ``i``'s row only if ``j <= i``.
    mask : jax.Array of bool, optional
        True where a key takes part, broadcastable to ``(..., L, S)``.
    shared_mask : bool
        One ``(L, S)`` dropout mask for every leading index (Flax's
        ``broadcast_dropout``) instead of one over ``(..., L, S)``.
    empty_rows : {"nan", "uniform", "zero"}
        A row whose every key is masked out: NaN (plain softmax), equal
        weights over all keys (what Flax's ``finfo.min`` fill gives) or zero
        weights (torch 2.13's math path, and
        :func:`xdrop.scaled_dot_product_attention`), the last two without
        gradient to q, k or bias.

    Returns
    -------
    jax.Array
        ``(..., L, Ev)``; its keep decisions are ``xdrop.keep_mask((..., L, S),
        dropout_p, seed=seed, step=step)`` bit for bit.

    Examples
    --------
    Uniform weights 1/3 over 3 keys, so each output is (kept keys) * 1/3 * 2:

    >>> import jax, jax.numpy as jnp, numpy as np
    >>> import xdrop
    >>> from xdrop._kernels._attention_jax import attention
    >>> q = k = v = jnp.ones((2, 3, 4))
    >>> attention(q, k, v, dropout_p=0.5, seed=7)[0, :, 0]
    Array([0.6666666, 1.3333333, 1.3333333], dtype=float32)
    >>> xdrop.keep_mask((2, 3, 3), 0.5, seed=7, xp=np)[0].sum(axis=-1)
    array([1, 2, 2])
    >>> jax.grad(lambda q: attention(q, k, v, dropout_p=0.5, seed=7).sum())(q).shape
    (2, 3, 4)
    """
    import jax.numpy as jnp

    from .._checks import check_flag, check_probability

    dropout_p = check_probability(dropout_p, "dropout_p")
    is_causal = check_flag(is_causal, "is_causal")
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not hasattr(x, "ndim") or x.ndim < 2:
            raise ValueError(f"{name} must be a JAX array of at least 2 dims, got {name}={x!r}")
    if k.shape[-1] != q.shape[-1] or v.shape[-2] != k.shape[-2]:
        raise ValueError(
            f"q, k, v must be (..., L, E), (..., S, E), (..., S, Ev), got shapes "
            f"q={tuple(q.shape)}, k={tuple(k.shape)}, v={tuple(v.shape)}"
        )
    if dropout_p > 0.0 and seed is None:
        raise ValueError("seed is required when dropout_p > 0: pass an int in [0, 2**64) or a JAX integer")
    if q.ndim >= 3:
        k, v = _expand_heads(k, q.shape[-3], "k"), _expand_heads(v, q.shape[-3], "v")
    lead = jnp.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    q = jnp.broadcast_to(q, lead + q.shape[-2:])
    k = jnp.broadcast_to(k, lead + k.shape[-2:])
    v = jnp.broadcast_to(v, lead + v.shape[-2:])
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    words = (*_mask_words(0 if seed is None else seed, "seed"), *_mask_words(step, "step"))
    if mask is not None:
        mask = jnp.asarray(mask, dtype=bool)
    if empty_rows not in ("nan", "uniform", "zero"):
        raise ValueError(f"empty_rows must be 'nan', 'uniform' or 'zero', got empty_rows={empty_rows!r}")
    cfg = _config(dropout_p, scale, is_causal, shared_mask, empty_rows)
    return _custom()(q, k, v, bias, mask, words, cfg)
