"""``scaled_dot_product_attention``: attention whose dropout is stream v1's, the same bits on every backend."""

from __future__ import annotations

import math
from numbers import Real
from types import ModuleType
from typing import Any

from .._lib._checks import check_array, check_flag, check_probability, show
from .._lib._compat import ArrayType, array_type
from ._attention_reference import leading_shape, sdpa_reference
from ._call import SeedLike, resolve_seed


def _jax_attention(
    xp: ModuleType, q: Any, k: Any, v: Any, bias: Any, p: float, scale: float, seed: int, step: int, causal: bool
) -> Any:
    """JAX arrays: the ``custom_vjp`` kernel, whose backward draws the mask again (nothing L x S saved)."""
    from .._kernels.jax._attention import attention

    return attention(q, k, v, bias, p, scale=scale, seed=seed, step=step, is_causal=causal, empty_rows="zero")


def _torch_attention(
    xp: ModuleType, q: Any, k: Any, v: Any, bias: Any, p: float, scale: float, seed: int, step: int, causal: bool
) -> Any:
    """torch tensors: the registered operator over the flattened leading dimensions."""
    from .._kernels.torch import _attention_op

    lead = leading_shape(q, k, v)
    n = math.prod(lead)
    L, Ev = q.shape[-2], v.shape[-1]
    q3, k3, v3 = (t.expand(*lead, *t.shape[-2:]).reshape(n, *t.shape[-2:]) for t in (q, k, v))
    out = _attention_op.attention(q3, k3, v3, _flat_bias(bias, lead, n), p, scale, seed, step, causal)
    return out.reshape(*lead, L, Ev)


def _flat_bias(bias: Any, lead: tuple[int, ...], n: int) -> Any:
    """``bias`` as the operator's ``(Bo, Bi, Lb, Sb)`` over the ``n`` flat problems, a view where it can be.

    Leading dims that vary (the bias's size is the weights') then broadcast ones (size 1) are
    ``(Bo, 1)`` (a padding mask over heads); broadcast then varying ones ``(1, Bi)`` (T5's
    per-head position bias over the batch). Other patterns (possible from rank 5) are copied.
    """
    if bias is None:
        return None
    rank = len(lead) + 2
    bias = bias.reshape((1,) * (rank - bias.ndim) + tuple(bias.shape))
    bl, tail = tuple(bias.shape[:-2]), tuple(bias.shape[-2:])
    varying = [t for t, b in enumerate(bl) if b != 1]
    broadcast = [t for t, (b, d) in enumerate(zip(bl, lead, strict=True)) if b == 1 and d != 1]
    if not varying or not broadcast or broadcast[0] > varying[-1]:
        split = varying[-1] + 1 if varying else 0
        return bias.reshape(math.prod(bl[:split]), 1, *tail)
    if broadcast[-1] < varying[0]:
        return bias.reshape(1, math.prod(bl[varying[0] :]), *tail)
    return bias.expand(*lead, *tail).reshape(n, 1, *tail)  # a copy


def _expand_heads(xp: ModuleType, x: Any, groups: int) -> Any:
    """``x`` with each of its heads (dim -3) repeated ``groups`` times in a row (torch's ``enable_gqa``)."""
    shape = tuple(x.shape)
    x = xp.expand_dims(x, axis=-3)
    x = xp.broadcast_to(x, (*shape[:-3], shape[-3], groups, *shape[-2:]))
    return xp.reshape(x, (*shape[:-3], shape[-3] * groups, *shape[-2:]))


def _check_shapes(q: Any, k: Any, v: Any) -> None:
    for name, a in (("q", q), ("k", k), ("v", v)):
        if a.ndim < 2:
            raise ValueError(
                f"{name} must have at least 2 dimensions (..., length, features), got {name}.shape={tuple(a.shape)}"
            )
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"q and k must have the same last dimension E, got q.shape={tuple(q.shape)}, k.shape={tuple(k.shape)}"
        )
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(
            "k and v must have the same number of keys S (dim -2), "
            f"got k.shape={tuple(k.shape)}, v.shape={tuple(v.shape)}"
        )


def _gqa(xp: ModuleType, q: Any, k: Any, v: Any) -> tuple[Any, Any]:
    """k and v with their heads repeated where q has a multiple of their heads on dim -3."""
    if q.ndim < 3 or k.ndim < 3 or v.ndim < 3:
        return k, v
    hq, hk, hv = q.shape[-3], k.shape[-3], v.shape[-3]
    if hk != hv or hk in (1, hq) or hq % hk:
        return k, v
    return _expand_heads(xp, k, hq // hk), _expand_heads(xp, v, hq // hk)


def _bias(xp: ModuleType, attn_mask: Any, q: Any, lead: tuple[int, ...], L: int, S: int) -> Any:
    """The additive float bias of ``attn_mask`` (bool: 0 where True, -inf where False), checked to broadcast."""
    at = array_type(attn_mask)
    if at is None or at.xp is not xp:
        raise TypeError(
            f"attn_mask must be None or an array of q's namespace, got attn_mask of type {type(attn_mask).__name__}"
        )
    shape = tuple(attn_mask.shape)
    target = (*lead, L, S)
    ok = len(shape) <= len(target) and all(a in (1, b) for a, b in zip(shape[::-1], target[::-1], strict=False))
    if not ok:
        raise ValueError(f"attn_mask must broadcast to the weights' shape {target}, got attn_mask.shape={shape}")
    if attn_mask.dtype == xp.bool:
        zero = xp.zeros((), dtype=q.dtype)
        return xp.where(attn_mask, zero, xp.asarray(-math.inf, dtype=q.dtype))
    if attn_mask.dtype != q.dtype:
        raise TypeError(f"attn_mask must be bool or q's dtype {q.dtype}, got attn_mask.dtype={attn_mask.dtype}")
    return attn_mask


def scaled_dot_product_attention(
    q: Any,
    k: Any,
    v: Any,
    attn_mask: Any = None,
    dropout_p: float = 0.0,
    *,
    is_causal: bool = False,
    scale: float | None = None,
    seed: SeedLike = None,
    step: int = 0,
    training: bool = True,
) -> Any:
    """Attention ``dropout(softmax(q k^T scale + mask)) v``, its dropout mask stream v1's.

    The arguments mean what they mean for ``torch.nn.functional.scaled_dot_product_attention``.
    The weights ``W`` (shape ``B + (L, S)``, ``B`` the broadcast leading shape of q,
    k and v) are dropped as :func:`xdrop.dropout` drops an array of that shape:
    the keep mask is ``xdrop.keep_mask(B + (L, S), dropout_p, seed=seed, step=step)``
    bit for bit, on every backend, and kept weights are multiplied by the same
    ``1 / keep``. Outputs of two backends differ only by their matmul and
    softmax rounding. torch tensors take the registered operator
    ``torch.ops.xdrop.attention`` and JAX arrays a ``jax.custom_vjp``
    kernel, whose backward draws the mask again and which save no array of
    ``L * S`` elements; other arrays the pure-standard reference.

    Parameters
    ----------
    q, k, v : array
        Queries ``(..., L, E)``, keys ``(..., S, E)``, values ``(..., S, Ev)``
        of one namespace and real floating dtype; leading dimensions
        broadcast. Where dim -3 of q is a multiple ``g`` of k's and v's (grouped
        query attention), each key/value head serves ``g`` query heads in a
        row, as torch's ``enable_gqa=True``. Never modified.
    attn_mask : array, optional
        Broadcastable to ``B + (L, S)``: bool (True: the key takes part) or
        an additive float mask of q's dtype, which has a gradient where
        the backend differentiates (torch, JAX): the weights' score gradient
        summed over the dimensions it broadcasts along (a relative-position
        bias trains through it). A row with no key taking part gets output
        0 (torch's math path), as does every row when there are no keys.
    dropout_p : float, optional
        Probability of dropping a weight, in ``[0, 1]``.
    is_causal : bool, optional
        Mask key ``j > i`` for query ``i`` (top-left aligned, as torch). Not
        together with ``attn_mask``.
    scale : float, optional
        Factor of the scores; ``1 / sqrt(E)`` by default.
    seed : int or Generator
        Required when ``dropout_p > 0`` and ``training``: a seed in
        ``[0, 2**64)`` or a :class:`Generator` (its step is taken).
    step : int, optional
        A step in ``[0, 2**64)``, e.g. the training iteration.
    training : bool, optional
        If false, no dropout.

    Returns
    -------
    array
        ``B + (L, Ev)``, q's dtype, namespace and device.

    Examples
    --------
    >>> import numpy as np
    >>> import xdrop
    >>> q = np.ones((2, 3, 4))
    >>> out = xdrop.scaled_dot_product_attention(q, q, np.eye(3), dropout_p=0.5, seed=7)
    >>> bool(((out != 0) == xdrop.keep_mask((2, 3, 3), 0.5, seed=7, xp=np)).all())
    True
    """
    at, k, v, bias, p, scale_, is_causal = _checked(q, k, v, attn_mask, dropout_p, is_causal, scale, training)
    if p > 0 and seed is None:
        raise ValueError("seed is required when dropout_p > 0 and training: pass an int in [0, 2**64) or a Generator")
    if p > 0:  # last among the checks: a refused call takes no step from a Generator
        seed_, step_ = resolve_seed(seed, step, allow_none=False, traced=at.traced, xp=at.xp)
    else:  # no mask is drawn: nothing is taken
        seed_, step_ = 0, 0
    run = _torch_attention if at.name == "torch" else _jax_attention if at.name == "jax" else sdpa_reference
    return run(at.xp, q, k, v, bias, p, scale_, seed_, step_, is_causal)


def attention_with_state(
    q: Any, k: Any, v: Any, attn_mask: Any, dropout_p: float, is_causal: bool, scale: float | None, taken: Any
) -> Any:
    """:func:`scaled_dot_product_attention` of torch tensors in training, with a layer's taken state.

    ``taken`` is ``(seed, step)`` or the int64 ``(seed, step)`` tensor a layer takes on CUDA
    or under torch.compile (read by the operator, no host sync).
    """
    at, k, v, bias, p, scale_, is_causal = _checked(q, k, v, attn_mask, dropout_p, is_causal, scale, True)
    seed, step = taken if isinstance(taken, tuple) else (taken, 0)
    return _torch_attention(at.xp, q, k, v, bias, p, scale_, seed, step, is_causal)


def _checked(
    q: Any, k: Any, v: Any, attn_mask: Any, dropout_p: Any, is_causal: Any, scale: Any, training: Any
) -> tuple[ArrayType, Any, Any, Any, float, float, bool]:
    """The checks of :func:`scaled_dot_product_attention`: q's type, k and v (GQA heads repeated), bias, p, scale."""
    at = check_array(q, "q")
    xp = at.xp
    for name, a in (("k", k), ("v", v)):
        other = check_array(a, name)
        if other.name != at.name:
            raise TypeError(f"{name} must be a {at.name} array like q, got a {other.name} array")
        if a.dtype != q.dtype:
            raise TypeError(f"{name} must have q's dtype {q.dtype}, got {name}.dtype={a.dtype}")
    _check_shapes(q, k, v)
    p = check_probability(dropout_p, "dropout_p")
    is_causal = check_flag(is_causal, "is_causal")
    training = check_flag(training, "training")
    if attn_mask is not None and is_causal:
        raise ValueError("attn_mask and is_causal=True cannot be given together: put the causal mask in attn_mask")
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1]) if q.shape[-1] else 1.0
    elif isinstance(scale, bool) or not isinstance(scale, Real) or not math.isfinite(float(scale)):
        raise TypeError(f"scale must be None or a finite real number, got scale={show(scale)}")
    k, v = _gqa(xp, q, k, v)
    try:
        lead = leading_shape(q, k, v)
    except ValueError as e:
        raise ValueError(f"{e}: q.shape={tuple(q.shape)}, k.shape={tuple(k.shape)}, v.shape={tuple(v.shape)}") from None
    L, S = q.shape[-2], k.shape[-2]
    bias = None if attn_mask is None else _bias(xp, attn_mask, q, lead, L, S)
    if not training:
        p = 0.0
    return at, k, v, bias, p, float(scale), is_causal
