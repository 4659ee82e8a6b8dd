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

Forward and backward run over the leading indices in steps (``lax.scan``) of
at most :data:`BLOCK` weights, so XLA's temporaries hold one step's scores,
not every head's (one step: no loop). A mask shared by the leading indices
(Flax's ``broadcast_dropout``) is drawn once per call. Where S is a multiple
of 4 the keys are taken in lane order (see :func:`_keep`); the mask's bits are
those of the flat index all the same.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

from ..._lib._stream import KEEP_ALL_OR_NONE, TWO32, keep_count, scale_for
from ..._lib._traced import TracedU64, jax_u64
from ...random._philox import DEFAULT_ROUNDS, philox_rounds
from . import _attention_host
from ._dropout import _global_index, _keep_at, _words

__all__ = ["attention", "backward", "forward"]


def _mask_words(value: Any, name: str) -> tuple[Any, Any]:
    """``(low, high)`` uint32 words of a seed or step: an int, a TracedU64 or a JAX integer array."""
    from ..._lib._checks import check_u64

    if hasattr(value, "dtype") and not isinstance(value, TracedU64):
        value = jax_u64(value, name)
    return _words(check_u64(value, name))


def _keep(
    words: tuple[Any, Any, Any, Any],
    k: int,
    shape: tuple[int, ...],
    global_shape: tuple[int, ...],
    starts: Any,
    lanes: bool,
) -> Any:
    """Keep decisions of the block ``shape`` at ``starts`` of an array of ``global_shape`` (flat row-major index).

    ``lanes``: the last axis in lane order (column ``4 c + r`` at ``r S/4 + c``;
    S a multiple of 4): the decisions are four arrays, one per word of the
    Philox blocks, which XLA computes apart from the floating-point work that
    uses them (fused into it, the drawing runs several times slower on XLA:CPU,
    and a shared mask would be drawn again for every head) and without
    interleaving the words (slower still).
    """
    import jax.numpy as jnp

    if k in KEEP_ALL_OR_NONE:
        return jnp.full(shape, k == TWO32)
    threshold = jnp.asarray(k, dtype=jnp.uint32)
    if not lanes:
        return _keep_at(*words, threshold, *_global_index(shape, global_shape, starts))
    quarter = (*shape[:-1], shape[-1] // 4)
    lo, hi = _global_index(quarter, (*global_shape[:-1], global_shape[-1] // 4), starts)
    s0, s1, t0, t1 = words
    blocks = philox_rounds(lo, hi, t0, t1, s0, s1, DEFAULT_ROUNDS)  # block index lo + 2**32 hi: its 4 words
    return jnp.concatenate([w < threshold for w in blocks], axis=-1)


def _lane_order(x: Any, axis: int) -> Any:
    """``x`` with its ``axis`` (of size S, a multiple of 4) in lane order: index ``4 c + r`` moved to ``r S/4 + c``."""
    import jax.numpy as jnp

    axis %= x.ndim
    before, n, after = x.shape[:axis], x.shape[axis], x.shape[axis + 1 :]
    x = jnp.swapaxes(x.reshape(*before, n // 4, 4, *after), axis, axis + 1)  # one transpose, no moved axes
    return x.reshape(*before, n, *after)


def _compute_dtype(dtype: Any) -> Any:
    """Softmax arithmetic: float32 for half types, else the input's own type."""
    import jax.numpy as jnp

    return jnp.promote_types(dtype, jnp.float32)


def _scores(q: Any, k: Any, bias: Any, mask: Any, cols: Any) -> Any:
    """``q @ k^T + bias`` in the compute type (q comes scaled), -inf where ``mask`` is False or key ``cols[j]``
    is after the query (``cols``: None unless causal, the keys' own positions)."""
    import jax.numpy as jnp

    ct = _compute_dtype(q.dtype)
    s = jnp.einsum("...le,...se->...ls", q.astype(ct), k.astype(ct))
    if bias is not None:
        s = s + bias.astype(ct)
    if mask is not None:
        s = jnp.where(mask, s, jnp.asarray(-jnp.inf, ct))
    if cols is not None:
        tril = cols[None, :] <= jnp.arange(s.shape[-2])[:, None]  # top-left aligned, as torch
        s = jnp.where(tril, s, jnp.asarray(-jnp.inf, ct))
    return s


def _scaled(q: Any, scale: float) -> Any:
    """``q * scale`` in the compute type: the scale applied to L x E inputs, not to L x S scores."""
    ct = _compute_dtype(q.dtype)
    return q.astype(ct) * ct.type(scale)


def _dropped(p_weights: Any, keep: Any, a: Any) -> Any:
    import jax.numpy as jnp

    return jnp.where(keep, p_weights * a, jnp.zeros_like(p_weights))


class _Config(NamedTuple):
    """The static part of a call: hashable, so ``custom_vjp`` takes it as a non-differentiable argument."""

    dropout_p: float
    scale: float
    is_causal: bool
    shared: bool  # one (L, S) mask for every leading index
    empty_rows: str
    lanes: bool  # k, v, bias, mask come in lane order (see _keep)
    block: int = 0  # at most so many weights per step of the loop (see _Blocks); the contract does not loop
    host: bool = False  # forward and backward through the host routine (_attention_host), no loop
    heads_inner: bool = False  # q, k, v are (B, L, H, E): Flax's layout (_attention_host)


def _forward(q: Any, k: Any, v: Any, bias: Any, mask: Any, keep: Any, cols: Any, cfg: _Config) -> tuple[Any, Any]:
    """``(out, lse)``; ``keep`` the decisions over the weights (None: no dropout).

    A row with every score -inf (no key left) is, with ``empty_rows`` "uniform", a row
    of zero scores (equal weights), with "zero" a row of zero weights; its ``lse`` is
    then +inf, which tells the backward that it passes no gradient to q, k or bias.
    """
    import jax.numpy as jnp

    s = _scores(_scaled(q, cfg.scale), k, bias, mask, cols)
    m = jnp.max(s, axis=-1, keepdims=True, initial=-jnp.inf)  # -inf: no key (S = 0) gives out 0
    empty = None
    if cfg.empty_rows != "nan":
        empty = m == -jnp.inf
        s, m = jnp.where(empty, jnp.zeros_like(s), s), jnp.where(empty, jnp.zeros_like(m), m)
    e = jnp.exp(s - m)
    total = jnp.sum(e, axis=-1, keepdims=True)
    w = e * (1 / total)  # one exp per weight, as a softmax
    lse = m + jnp.log(total)
    if empty is not None:
        if cfg.empty_rows == "zero":
            w = jnp.where(empty, jnp.zeros_like(w), w)
        lse = jnp.where(empty, jnp.asarray(jnp.inf, lse.dtype), lse)
    if keep is not None:
        w = _dropped(w, keep, jnp.asarray(scale_for(keep_count(cfg.dropout_p), jnp, w.dtype), w.dtype))
    out = jnp.einsum("...ls,...sd->...ld", w, v.astype(w.dtype)).astype(v.dtype)
    return out, lse[..., 0]


def _backward(
    dout: Any, q: Any, k: Any, v: Any, bias: Any, mask: Any, out: Any, lse: Any, keep: Any, cols: Any, cfg: _Config
) -> tuple[Any, Any, Any, Any]:
    """dq, dk, dv and the cotangent of the biased scores ``ds`` (the weights' shape, a temporary)."""
    import jax.numpy as jnp

    qs = _scaled(q, cfg.scale)
    s = _scores(qs, k, bias, mask, cols)
    ct = s.dtype
    lse = lse[..., None]
    w = jnp.exp(s - lse)  # 0 in a row whose lse is +inf (no key left)
    empty = None
    if cfg.empty_rows != "nan":
        empty = lse == jnp.inf
        if cfg.empty_rows == "uniform" and s.shape[-1]:
            w = jnp.where(empty, jnp.asarray(1 / s.shape[-1], ct), w)
    do = dout.astype(ct)
    dw = jnp.einsum("...ld,...sd->...ls", do, v.astype(ct))
    if keep is not None:
        a = jnp.asarray(scale_for(keep_count(cfg.dropout_p), jnp, ct), ct)
        wd, dw = _dropped(w, keep, a), _dropped(dw, keep, a)
    else:
        wd = w
    dv = jnp.einsum("...ls,...ld->...sd", wd, do)
    # sum_j W_ij dW_ij = sum_j Wd_ij dO_i . v_j = dO_i . out_i: one product per row, not per weight
    delta = jnp.sum(do * out.astype(ct), axis=-1, keepdims=True)
    ds = w * (dw - delta)
    if empty is not None:
        ds = jnp.where(empty, jnp.zeros_like(ds), ds)
    dq = jnp.einsum("...ls,...se->...le", ds, k.astype(ct)) * jnp.asarray(cfg.scale, ct)
    dk = jnp.einsum("...ls,...le->...se", ds, qs)
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), ds


def _reduce_to(x: Any, shape: tuple[int, ...]) -> Any:
    """Sum ``x`` over the axes it was broadcast along from ``shape`` (a bias's cotangent)."""
    lead = x.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape) if n == 1 and x.shape[lead + i] != 1)
    return x.sum(axis=axes).reshape(shape) if axes else x


BLOCK = 1 << 20  # weights per step of the loop: 4 MiB of float32 temporaries


class _Blocks:
    """The loop's view of the operands: one block of leading indices per step.

    q, k, v share the leading shape ``lead``; a step takes one index of the outer
    axes ``lead[:split]`` and all of the inner ones, ``lead[split:]``, chosen so a
    step holds at most :data:`BLOCK` weights (or one ``(L, S)`` slice). A bias or
    mask broadcasts to ``lead``: its block is the one at the step's outer index
    along the axes where it is not 1. A shared mask is drawn once, before the
    loop. In lane order its four lanes are four arrays that XLA computes on
    their own; in key order XLA would fuse its drawing into every head's use of
    it, so there the loop takes two steps at least and holds it as an operand.
    One step is no loop.
    """

    def __init__(self, lead: tuple[int, ...], length: int, keys: int, words: Any, cfg: _Config) -> None:
        import jax.numpy as jnp

        split = len(lead)
        while split > 0 and math.prod(lead[split - 1 :]) * length * keys <= cfg.block:
            split -= 1
        if cfg.shared and not cfg.lanes and split == 0 and math.prod(lead) > 1:  # see above
            split = 1 + min(i for i, n in enumerate(lead) if n > 1)
        self.lead, self.split, self.words, self.cfg = lead, split, words, cfg
        self.steps, self.inner = math.prod(lead[:split]), lead[split:]
        self.length, self.keys = length, keys
        self.kc = keep_count(cfg.dropout_p) if cfg.dropout_p > 0.0 else None
        self.shared = None
        if self.kc is not None and cfg.shared:
            self.shared = _keep(words, self.kc, (length, keys), (length, keys), jnp.zeros(2, jnp.uint32), cfg.lanes)
        self.cols = None
        if cfg.is_causal:
            cols = jnp.arange(keys)
            self.cols = _lane_order(cols, 0) if cfg.lanes else cols

    def keep(self, i: Any) -> Any:
        """The decisions over step ``i``'s weights ``inner + (L, S)`` (None: no dropout)."""
        import jax.numpy as jnp

        if self.kc is None or self.shared is not None:
            return self.shared
        shape = (1, *self.inner, self.length, self.keys)
        starts = jnp.concatenate([i[None], jnp.zeros(len(shape) - 1, jnp.uint32)])
        return _keep(self.words, self.kc, shape, (self.steps, *shape[1:]), starts, self.cfg.lanes)[0]

    def split_steps(self, x: Any) -> Any:
        """An array of leading shape ``lead`` (q, k, v, out, dout, lse) as ``(steps,) + inner + its own tail``."""
        return x.reshape(self.steps, *x.shape[self.split :])

    def padded(self, x: Any) -> Any:
        return None if x is None else x.reshape((1,) * (len(self.lead) + 2 - x.ndim) + tuple(x.shape))

    def starts(self, x: Any, i: Any) -> list[Any]:
        """Where step ``i``'s block of the padded ``x`` starts."""
        import jax.numpy as jnp

        zero = jnp.zeros((), i.dtype)
        out: list[Any] = []
        stride = self.steps
        for size, have in zip(self.lead[: self.split], x.shape, strict=False):
            stride //= size
            out.append((i // stride) % size if have != 1 else zero)
        return out + [zero] * (x.ndim - self.split)

    def sizes(self, x: Any) -> tuple[int, ...]:
        return (1,) * self.split + tuple(x.shape[self.split :])

    def at(self, x: Any, i: Any) -> Any:
        """Step ``i``'s block of a padded bias or mask, without its outer axes."""
        import jax

        if x is None:
            return None
        return jax.lax.dynamic_slice(x, self.starts(x, i), self.sizes(x)).reshape(x.shape[self.split :])


def _scan(body: Any, carry: Any, xs: Any, steps: int) -> tuple[Any, Any]:
    """``jax.lax.scan(body, carry, xs)``; one step is a plain call (no slicing of the operands, no loop)."""
    import jax

    if steps != 1:
        return jax.lax.scan(body, carry, xs)
    carry, ys = body(carry, jax.tree.map(lambda x: x[0], xs))
    return carry, jax.tree.map(lambda y: y[None], ys)


def _blocked_forward(q: Any, k: Any, v: Any, bias: Any, mask: Any, words: Any, cfg: _Config) -> tuple[Any, Any]:
    """:func:`_forward` one block of leading indices per step (``lax.scan``): XLA holds one block's weights."""
    import jax.numpy as jnp

    lead, length = q.shape[:-2], q.shape[-2]
    bl = _Blocks(lead, length, k.shape[-2], words, cfg)
    bias, mask = bl.padded(bias), bl.padded(mask)

    def body(carry: None, xs: Any) -> tuple[None, Any]:
        i, qi, ki, vi = xs
        return carry, _forward(qi, ki, vi, bl.at(bias, i), bl.at(mask, i), bl.keep(i), bl.cols, cfg)

    xs = (jnp.arange(bl.steps, dtype=jnp.uint32), *(bl.split_steps(x) for x in (q, k, v)))
    _, (out, lse) = _scan(body, None, xs, bl.steps)
    return out.reshape(*lead, length, v.shape[-1]), lse.reshape(*lead, length)


def _blocked_backward(
    dout: Any, q: Any, k: Any, v: Any, bias: Any, mask: Any, out: Any, lse: Any, words: Any, cfg: _Config
) -> tuple[Any, Any, Any, Any]:
    """:func:`_backward` one block per step; the bias's cotangent summed in place across the loop."""
    import jax
    import jax.numpy as jnp

    lead, length = q.shape[:-2], q.shape[-2]
    bl = _Blocks(lead, length, k.shape[-2], words, cfg)
    pbias, mask = bl.padded(bias), bl.padded(mask)
    dbias = None if pbias is None else jnp.zeros(pbias.shape, _compute_dtype(q.dtype))

    def body(acc: Any, xs: Any) -> tuple[Any, Any]:
        i, doi, qi, ki, vi, oi, li = xs
        dq, dk, dv, ds = _backward(doi, qi, ki, vi, bl.at(pbias, i), bl.at(mask, i), oi, li, bl.keep(i), bl.cols, cfg)
        if acc is not None:
            starts, sizes = bl.starts(acc, i), bl.sizes(acc)
            part = _reduce_to(ds, tuple(acc.shape[bl.split :])).reshape(sizes)
            acc = jax.lax.dynamic_update_slice(acc, jax.lax.dynamic_slice(acc, starts, sizes) + part, starts)
        return acc, (dq, dk, dv)

    xs = (jnp.arange(bl.steps, dtype=jnp.uint32), *(bl.split_steps(x) for x in (dout, q, k, v, out, lse)))
    dbias, (dq, dk, dv) = _scan(body, dbias, xs, bl.steps)
    if bias is not None:
        dbias = dbias.reshape(bias.shape).astype(bias.dtype)
    return dq.reshape(q.shape), dk.reshape(k.shape), dv.reshape(v.shape), dbias


@functools.cache
def _custom() -> Any:
    """The ``custom_vjp`` function, built on first use (``import xdrop`` must not import jax)."""
    import jax
    import numpy as np

    def run(q: Any, k: Any, v: Any, bias: Any, mask: Any, words: Any, cfg: _Config) -> tuple[Any, Any]:
        if cfg.host:
            return _attention_host.forward(q, k, v, words, cfg)
        return _blocked_forward(q, k, v, bias, mask, words, cfg)

    @functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
    def fn(q: Any, k: Any, v: Any, bias: Any, mask: Any, words: Any, cfg: _Config) -> Any:
        return run(q, k, v, bias, mask, words, cfg)[0]

    def fwd(q: Any, k: Any, v: Any, bias: Any, mask: Any, words: Any, cfg: _Config) -> Any:
        out, lse = run(q, k, v, bias, mask, words, cfg)
        return out, (q, k, v, bias, mask, words, out, lse)

    def bwd(cfg: _Config, res: Any, dout: Any) -> Any:
        q, k, v, bias, mask, words, out, lse = res
        if cfg.host:
            dq, dk, dv, dbias = (*_attention_host.backward(dout, q, k, v, lse, words, cfg), None)
        else:
            dq, dk, dv, dbias = _blocked_backward(dout, q, k, v, bias, mask, out, lse, words, cfg)
        dmask = None if mask is None else np.zeros(mask.shape, jax.dtypes.float0)
        dwords = tuple(np.zeros(w.shape, jax.dtypes.float0) for w in words)
        return dq, dk, dv, dbias, dmask, dwords

    fn.defvjp(fwd, bwd)
    return fn


def _contract(dropout_p: float, scale: float, is_causal: bool, words: Any, shape: tuple[int, ...]) -> tuple[Any, ...]:
    """The contract's config, keep decisions over the whole ``shape`` (natural order) and causal columns."""
    import jax.numpy as jnp

    cfg = _Config(float(dropout_p), float(scale), bool(is_causal), False, "nan", False)
    kc = keep_count(cfg.dropout_p) if cfg.dropout_p > 0.0 else None
    keep = None if kc is None else _keep(words, kc, shape, shape, jnp.zeros(len(shape), jnp.uint32), False)
    return cfg, keep, jnp.arange(shape[-1]) if is_causal else None


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
    cfg, keep, cols = _contract(dropout_p, scale, is_causal, words, (*q.shape[:-1], k.shape[-2]))
    return _forward(q, k, v, bias, None, keep, cols, cfg)


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
    cfg, keep, cols = _contract(dropout_p, scale, is_causal, words, (*q.shape[:-1], k.shape[-2]))
    dq, dk, dv, _ = _backward(dout, q, k, v, bias, None, out, lse, keep, cols, cfg)
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
    host_kernel: bool = True,
    heads_inner: bool = False,
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

    host_kernel : bool
        On the CPU, run the forward and backward through the host kernel's
        compiled routine (XLA custom calls; see
        :mod:`xdrop._kernels.jax._attention_host`) where it takes the call;
        False keeps XLA's operations everywhere, as ``jax.export`` needs (a
        custom call does not serialize). The bits are the same.
    heads_inner : bool
        q, k, v of 4 dims are Flax's ``(B, L, H, E)`` arrays with axes 1 and 2
        swapped: the host routine takes the arrays as they were, so XLA's
        transposes around the call cancel. Values are the same.

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
    >>> from xdrop._kernels.jax._attention import attention
    >>> q = k = v = jnp.ones((2, 3, 4))
    >>> attention(q, k, v, dropout_p=0.5, seed=7)[0, :, 0]
    Array([0.6666667, 1.3333334, 1.3333334], dtype=float32)
    >>> xdrop.keep_mask((2, 3, 3), 0.5, seed=7, xp=np)[0].sum(axis=-1)
    array([1, 2, 2])
    >>> jax.grad(lambda q: attention(q, k, v, dropout_p=0.5, seed=7).sum())(q).shape
    (2, 3, 4)
    """
    import jax.numpy as jnp

    from ..._lib._checks import check_flag, check_probability

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
    keys = k.shape[-2]
    cfg = _Config(float(dropout_p), scale, is_causal, bool(shared_mask), empty_rows, False, BLOCK)
    lanes = dropout_p > 0.0 and keys % 4 == 0 and keep_count(dropout_p) not in KEEP_ALL_OR_NONE

    def on_xla(q: Any, k: Any, v: Any) -> Any:
        b, m = bias, mask
        if lanes:  # the keys in lane order (see _keep); attention does not depend on the order of the keys
            k, v = _lane_order(k, -2), _lane_order(v, -2)
            b, m = (x if x is None or x.ndim == 0 or x.shape[-1] == 1 else _lane_order(x, -1) for x in (b, m))
        return _custom()(q, k, v, b, m, words, cfg._replace(lanes=lanes))

    if not check_flag(host_kernel, "host_kernel") or _attention_host.routine(q, k, v, bias, mask) is None:
        return on_xla(q, k, v)
    import jax

    def on_host(q: Any, k: Any, v: Any) -> Any:
        if not (heads_inner and q.ndim == 4):
            return _custom()(q, k, v, None, None, words, cfg._replace(host=True))
        # the routine reads Flax's (B, L, H, E) arrays as they are: the swaps cancel with the caller's
        q, k, v = (jnp.swapaxes(x, 1, 2) for x in (q, k, v))
        out = _custom()(q, k, v, None, None, words, cfg._replace(host=True, heads_inner=True))
        return jnp.swapaxes(out, 1, 2)

    return jax.lax.platform_dependent(q, k, v, cpu=on_host, default=on_xla)
