"""``torch.nn.MultiheadAttention`` whose attention dropout is xdrop's.

``torch.nn.MultiheadAttention`` drops its attention weights inside
``F.multi_head_attention_forward`` (an inner ``F.dropout``, or ``dropout_p`` of
``F.scaled_dot_product_attention``), which a ``TorchFunctionMode`` sees only as
one outer call. So the converted module owns the attention step: in training
with ``dropout > 0`` its forward runs the same projections, masks and
reshapes as torch's, and the attention itself through
:func:`xdrop.scaled_dot_product_attention` with the stream of its child
``xdrop_attention`` (or, for ``need_weights=True``, torch's formula with the
weights dropped by the same mask, so both return the same output). Otherwise
(eval, ``dropout == 0``) it is torch's forward, fast path included, so eval
outputs are unchanged bit for bit.

The steps before the attention use torch's own helpers of
``torch.nn.functional`` (the mask canonicalisation and the shape check that
``MultiheadAttention`` itself calls): private names,
checked by :func:`missing_helpers` so that a torch without them leaves the
module unconverted, with a warning, instead of failing in training.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._lib._checks import check_u64
from .._lib._replay import draw_u64
from ._call_sites import STREAM, Stream
from ._seeded import path_seed

__all__ = ["MultiheadAttention", "convert_mha", "missing_helpers"]

# The torch.nn.functional helpers nn.MultiheadAttention's forward calls, which this one calls too.
HELPERS = ("_canonical_mask", "_none_or_dtype", "_mha_shape_check")


def missing_helpers() -> list[str]:
    """The helpers of :data:`HELPERS` this torch lacks."""
    return [name for name in HELPERS if not hasattr(F, name)]


class MultiheadAttention(nn.MultiheadAttention):
    """Drop-in ``torch.nn.MultiheadAttention`` whose attention dropout draws xdrop's masks.

    Takes torch's arguments plus ``seed``; the stream (seed and step buffers,
    in ``state_dict``) is the child ``xdrop_attention``, and advances by one
    per training forward with ``dropout > 0``. In training the weights
    ``(N, num_heads, L, S)`` are dropped with
    ``xdrop.keep_mask((N, num_heads, L, S), dropout, seed=seed, step=step)``,
    for ``need_weights`` true or false; in eval (or with ``dropout == 0``) the
    forward is torch's, bit for bit. :func:`xdrop.torch.replace_dropout`
    converts ``nn.MultiheadAttention`` modules to this class in place
    (also inside ``nn.TransformerEncoderLayer``, ``nn.Transformer``, ...).

    Parameters
    ----------
    embed_dim, num_heads, dropout, bias, add_bias_kv, add_zero_attn, kdim, vdim, batch_first, device, dtype
        As ``torch.nn.MultiheadAttention``.
    seed : int or None, optional
        A seed in ``[0, 2**64)``; ``None`` draws one from torch's default
        generator at construction (as :class:`xdrop.torch.Dropout`).

    Examples
    --------
    >>> import torch, xdrop.torch
    >>> mha = xdrop.torch.MultiheadAttention(8, 2, dropout=0.25, batch_first=True, seed=7)
    >>> mha.xdrop_attention
    Stream(p=0.25, seed=7, step=0)
    >>> x = torch.ones(1, 3, 8)
    >>> out, weights = mha(x, x, x, average_attn_weights=False)
    >>> keep = xdrop.keep_mask((1, 2, 3, 3), 0.25, seed=7, step=0, xp=torch)
    >>> bool(((weights != 0) == keep).all()), int(mha.xdrop_attention.step)
    (True, 1)
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = False,
        device: Any = None,
        dtype: Any = None,
        *,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            embed_dim, num_heads, dropout, bias, add_bias_kv, add_zero_attn, kdim, vdim, batch_first, device, dtype
        )
        self.add_module(STREAM, Stream(draw_u64() if seed is None else check_u64(seed, "seed"), float(dropout)))

    def extra_repr(self) -> str:
        head = f"embed_dim={self.embed_dim}, num_heads={self.num_heads}"
        return f"{head}, dropout={self.dropout}, batch_first={self.batch_first}"

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        p = float(self.dropout)
        nested = query.is_nested or key.is_nested or value.is_nested
        if not (self.training and p > 0) or nested:  # no dropout (or torch's own refusal of nested tensors)
            out: tuple[Tensor, Tensor | None] = super().forward(
                query, key, value, key_padding_mask, need_weights, attn_mask, average_attn_weights, is_causal
            )
            return out
        return _training_forward(
            self, p, query, key, value, key_padding_mask, need_weights, attn_mask, average_attn_weights, is_causal
        )


def _in_projection(m: MultiheadAttention, query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, ...]:
    """q, k, v projected as torch's in-projection does (one product where they are the same tensor)."""
    e = m.embed_dim
    if m._qkv_same_embed_dim:
        w, b = m.in_proj_weight, m.in_proj_bias
        if query is key and key is value:
            return tuple(F.linear(query, w, b).chunk(3, dim=-1))
        if key is value:
            w_q, w_kv = torch.split(w, [e, 2 * e])
            b_q, b_kv = (None, None) if b is None else torch.split(b, [e, 2 * e])
            return (F.linear(query, w_q, b_q), *F.linear(key, w_kv, b_kv).chunk(2, dim=-1))
        weights = tuple(w.chunk(3))
    else:
        weights = (m.q_proj_weight, m.k_proj_weight, m.v_proj_weight)
    biases = (None, None, None) if m.in_proj_bias is None else tuple(m.in_proj_bias.chunk(3))
    return tuple(F.linear(x, w, b) for x, w, b in zip((query, key, value), weights, biases, strict=True))


def _training_forward(
    m: MultiheadAttention,
    p: float,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    key_padding_mask: Tensor | None,
    need_weights: bool,
    attn_mask: Tensor | None,
    average_attn_weights: bool,
    is_causal: bool,
) -> tuple[Tensor, Tensor | None]:
    """torch's ``MultiheadAttention.forward`` (slow path) in training, the weights dropped by xdrop."""
    key_padding_mask = F._canonical_mask(
        mask=key_padding_mask,
        mask_name="key_padding_mask",
        other_type=F._none_or_dtype(attn_mask),
        other_name="attn_mask",
        target_type=query.dtype,
    )
    attn_mask = F._canonical_mask(
        mask=attn_mask,
        mask_name="attn_mask",
        other_type=None,
        other_name="",
        target_type=query.dtype,
        check_other=False,
    )
    batch_first = m.batch_first and query.dim() == 3
    if batch_first:  # keep the "is" relations between query, key and value, as torch does
        if key is value:
            if query is key:
                query = key = value = query.transpose(1, 0)
            else:
                query, key = (x.transpose(1, 0) for x in (query, key))
                value = key
        else:
            query, key, value = (x.transpose(1, 0) for x in (query, key, value))
    heads = m.num_heads
    is_batched = F._mha_shape_check(  # type: ignore[attr-defined]
        query, key, value, key_padding_mask, attn_mask, heads
    )
    if not is_batched:
        query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
        if key_padding_mask is not None:
            key_padding_mask = key_padding_mask.unsqueeze(0)
    tgt_len, bsz, embed_dim = query.shape
    src_len = key.shape[0]
    if embed_dim != m.embed_dim:
        raise ValueError(
            f"query's last dimension must be embed_dim={m.embed_dim}, got query.shape={tuple(query.shape)}"
        )
    if is_causal and attn_mask is None:
        raise RuntimeError(
            "Need attn_mask if specifying the is_causal hint. You may use the Transformer module method "
            "`generate_square_subsequent_mask` to create this mask."
        )
    if is_causal and key_padding_mask is None and not need_weights:
        attn_mask = None  # the hint alone, as torch passes it to scaled_dot_product_attention
    elif key_padding_mask is not None:
        is_causal = False  # the merged mask is not causal
    q, k, v = _in_projection(m, query, key, value)
    if attn_mask is not None:
        want = (tgt_len, src_len) if attn_mask.dim() == 2 else (bsz * heads, tgt_len, src_len)
        if tuple(attn_mask.shape) != want:
            raise RuntimeError(
                f"The shape of the {attn_mask.dim()}D attn_mask is {attn_mask.shape}, but should be {want}."
            )
        attn_mask = attn_mask.reshape(-1, tgt_len, src_len)
    if m.bias_k is not None and m.bias_v is not None:
        k = torch.cat([k, m.bias_k.repeat(1, bsz, 1)])
        v = torch.cat([v, m.bias_v.repeat(1, bsz, 1)])
        attn_mask = None if attn_mask is None else F.pad(attn_mask, (0, 1))
        key_padding_mask = None if key_padding_mask is None else F.pad(key_padding_mask, (0, 1))
    head_dim = embed_dim // heads
    q = q.reshape(tgt_len, bsz * heads, head_dim).transpose(0, 1)
    k = k.reshape(k.shape[0], bsz * heads, head_dim).transpose(0, 1)
    v = v.reshape(v.shape[0], bsz * heads, head_dim).transpose(0, 1)
    if m.add_zero_attn:
        zeros = torch.zeros((bsz * heads, 1, head_dim), dtype=k.dtype, device=k.device)
        k, v = torch.cat([k, zeros], dim=1), torch.cat([v, zeros], dim=1)
        attn_mask = None if attn_mask is None else F.pad(attn_mask, (0, 1))
        key_padding_mask = None if key_padding_mask is None else F.pad(key_padding_mask, (0, 1))
    src_len = k.size(1)
    if key_padding_mask is not None:
        if tuple(key_padding_mask.shape) != (bsz, src_len):
            raise RuntimeError(
                f"expected key_padding_mask.shape == {(bsz, src_len)}, got {tuple(key_padding_mask.shape)}"
            )
        padding = key_padding_mask.view(bsz, 1, 1, src_len).expand(-1, heads, -1, -1).reshape(bsz * heads, 1, src_len)
        attn_mask = padding if attn_mask is None else attn_mask + padding
    stream: Any = m._modules[STREAM]
    stream.show(p)
    taken = stream._take()
    weights: Tensor | None = None
    if need_weights:
        if is_causal and attn_mask is None:
            raise AssertionError("FIXME: is_causal not implemented for need_weights")  # torch's own refusal
        q_scaled = q * (1.0 / float(head_dim)) ** 0.5
        if attn_mask is not None:
            scores = torch.baddbmm(attn_mask, q_scaled, k.transpose(-2, -1))
        else:
            scores = torch.bmm(q_scaled, k.transpose(-2, -1))
        weights = stream.drop(F.softmax(scores, dim=-1), p, taken)  # the operator's mask: the same flat indices
        out = torch.bmm(weights, v)
        out = out.transpose(0, 1).reshape(tgt_len * bsz, embed_dim)
        weights = weights.view(bsz, heads, tgt_len, src_len)
        if average_attn_weights:
            weights = weights.mean(dim=1)
    else:
        from .._functional._attention import attention_with_state

        if attn_mask is not None:  # (1, L, S) or (N * heads, L or 1, S) as (..., heads, L or 1, S)
            one = attn_mask.size(0) == 1
            attn_mask = attn_mask.unsqueeze(0) if one else attn_mask.view(bsz, heads, -1, src_len)
        q4, k4, v4 = (t.view(bsz, heads, t.shape[1], head_dim) for t in (q, k, v))
        out = attention_with_state(q4, k4, v4, attn_mask, p, is_causal, None, taken)
        out = out.permute(2, 0, 1, 3).reshape(bsz * tgt_len, embed_dim)
    out = F.linear(out, m.out_proj.weight, m.out_proj.bias).view(tgt_len, bsz, -1)
    if not is_batched:
        out = out.squeeze(1)
        weights = None if weights is None else weights.squeeze(0)
    return (out.transpose(1, 0) if batch_first else out), weights


def convert_mha(module: nn.Module, base: int) -> None:
    """Convert every ``nn.MultiheadAttention`` (exactly that class) in ``module`` to :class:`MultiheadAttention`.

    In place, the module keeping its parameters and hooks, with a child
    ``xdrop_attention`` seeded ``blake2b(base, path + "#attention")``.
    Subclasses (whose forward may differ) are left as they are, and all of
    them on a torch without :data:`HELPERS` (``dropout_report`` names them).
    """
    if missing_helpers():
        return
    for path, sub in module.named_modules():
        if type(sub) is nn.MultiheadAttention:
            sub.__class__ = MultiheadAttention
            stream = Stream(path_seed(base, f"{path}#attention"), float(sub.dropout)).train(sub.training)
            sub.add_module(STREAM, stream)
