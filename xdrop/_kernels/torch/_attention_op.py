"""The registered torch operators of attention: ``xdrop::attention``, its backward and the bias's.

Their contract (shapes, the bias's layouts, what autograd saves) is that of
:mod:`xdrop._kernels.torch._attention`, which computes them; this module
registers them (with their fake implementations for ``torch.compile`` and
their autograd formula) and gives :func:`attention`, the call the public
function makes. Importing it registers the operators.
"""

from __future__ import annotations

from typing import Any, cast

import torch

from ..._lib._u64 import to_int64

# The module, not its functions: the operators call whatever it holds when they run (tests replace them).
from . import _attention as _compute
from ._ops import _unpack


@torch.library.custom_op("xdrop::attention", mutates_args=())
def _attention_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None,
    seed_step: torch.Tensor,
    dropout_p: float,
    scale: float,
    is_causal: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    seed, step = _unpack(seed_step)
    out = _compute.forward(q, k, v, bias, dropout_p, scale, seed, step, is_causal)
    return cast(tuple[torch.Tensor, torch.Tensor], out)


@_attention_op.register_fake
def _(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None,
    seed_step: torch.Tensor,
    dropout_p: float,
    scale: float,
    is_causal: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    out = q.new_empty((q.shape[0], q.shape[1], v.shape[2]))
    return out, q.new_empty((q.shape[0], q.shape[1]), dtype=_compute._compute_dtype(q.dtype))


@torch.library.custom_op("xdrop::attention_backward", mutates_args=())
def _attention_backward_op(
    dout: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None,
    out: torch.Tensor | None,
    lse: torch.Tensor,
    seed_step: torch.Tensor,
    dropout_p: float,
    scale: float,
    is_causal: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    seed, step = _unpack(seed_step)
    grads = _compute.backward(dout, q, k, v, bias, out, lse, dropout_p, scale, seed, step, is_causal)
    return cast(tuple[torch.Tensor, torch.Tensor, torch.Tensor], grads)


@_attention_backward_op.register_fake
def _(
    dout: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None,
    out: torch.Tensor | None,
    lse: torch.Tensor,
    seed_step: torch.Tensor,
    dropout_p: float,
    scale: float,
    is_causal: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


@torch.library.custom_op("xdrop::attention_backward_bias", mutates_args=())
def _attention_backward_bias_op(
    dout: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor,
    lse: torch.Tensor,
    seed_step: torch.Tensor,
    dropout_p: float,
    scale: float,
    is_causal: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``xdrop::attention_backward`` and the bias's gradient: ``(dq, dk, dv, dbias)``, dbias of bias's shape."""
    seed, step = _unpack(seed_step)
    grads = _compute.backward(dout, q, k, v, bias, None, lse, dropout_p, scale, seed, step, is_causal, bias_grad=True)
    return cast(tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], grads)


@_attention_backward_bias_op.register_fake
def _(
    dout: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor,
    lse: torch.Tensor,
    seed_step: torch.Tensor,
    dropout_p: float,
    scale: float,
    is_causal: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), torch.empty_like(bias)


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    q, k, v, bias, seed_step, dropout_p, scale, is_causal = inputs
    out, lse = output
    ctx.mark_non_differentiable(lse)
    # out only for a device kernel whose backward reads it: the blocked backward takes each row's
    # sum(P * dP) from its whole row. A copy of the two words: the caller may advance its step in place.
    keep_out = q.is_cuda and _compute._cuda_module() is not None
    ctx.save_for_backward(q, k, v, bias, out if keep_out else None, lse, seed_step.clone())
    ctx.args = (dropout_p, scale, is_causal)


def _backward(ctx: Any, dout: Any, _dlse: Any) -> tuple[Any, ...]:
    q, k, v, bias, out, lse, seed_step = ctx.saved_tensors
    if bias is not None and ctx.needs_input_grad[3]:  # the bias's gradient, from the same recomputed blocks
        dq, dk, dv, dbias = BACKWARD_BIAS(dout, q, k, v, bias, lse, seed_step, *ctx.args)
        return dq, dk, dv, dbias, None, None, None, None
    dq, dk, dv = BACKWARD(dout, q, k, v, bias, out, lse, seed_step, *ctx.args)
    return dq, dk, dv, None, None, None, None, None


_attention_op.register_autograd(_backward, setup_context=_setup_context)
OP = torch.ops.xdrop.attention.default
BACKWARD = torch.ops.xdrop.attention_backward.default
BACKWARD_BIAS = torch.ops.xdrop.attention_backward_bias.default


def attention(
    q: Any, k: Any, v: Any, bias: Any, dropout_p: float, scale: float, seed: Any, step: int, is_causal: bool
) -> Any:
    """``out`` of ``xdrop::attention``; ``seed`` a Python int (with ``step``) or an int64 ``(seed, step)`` tensor."""
    if isinstance(seed, int):
        seed = torch.tensor([to_int64(seed), to_int64(step)], dtype=torch.int64, device=q.device)
    q, k, v = (t if t.is_contiguous() else t.contiguous() for t in (q, k, v))
    out, _ = OP(q, k, v, bias, seed, float(dropout_p), float(scale), bool(is_causal))
    return out
