"""Torch fast paths: CPU tensors through the host kernels, zero-copy; the autograd Function.

CPU tensors of float16/32/64 are viewed as NumPy arrays (``Tensor.numpy()``
shares memory), and the host kernel writes straight into a new tensor's
buffer. Other dtypes (bfloat16) take the host mask and ``torch.where``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import _host

_NUMPY_DTYPES = ("float16", "float32", "float64")


def _torch_dtype_name(t: Any) -> str:
    return str(t.dtype).removeprefix("torch.")


def cpu_dropout(x: Any, seed: int, step: int, k: int, scale: float, engine: str, start: int = 0) -> Any:
    import torch

    src = x.detach().resolve_neg().resolve_conj()
    if _torch_dtype_name(src) in _NUMPY_DTYPES:
        out = torch.empty(tuple(src.shape), dtype=src.dtype)
        _host.dropout_array(src.numpy(), seed, step, k, scale, engine, out=out.numpy(), start=start)
        return out
    keep = cpu_mask(start, src.numel(), seed, step, k, engine).reshape(src.shape)
    return torch.where(keep, src * scale, torch.zeros_like(src))


def cpu_mask(start: int, n: int, seed: int, step: int, k: int, engine: str) -> Any:
    import torch

    out = np.empty(n, np.bool_)
    _host.mask_into(out, start, seed, step, k, engine)
    return torch.from_numpy(out)


def tracks_grad(x: Any) -> bool:
    """Whether autograd records an operation on the torch tensor ``x`` now."""
    import torch

    return bool(x.requires_grad and torch.is_grad_enabled())


_function: list[Any] = []


def _dropout_function() -> Any:
    """The autograd Function, created at first use so that importing xdrop imports no torch."""
    if _function:
        return _function[0]
    import torch

    class XDropFunction(torch.autograd.Function):
        """Dropout whose backward regenerates the mask: it saves no tensor.

        ``forward(ctx, x, run)`` returns ``run(x)``, where ``run`` is the
        dropout of a tensor with fixed (seed, step, p, noise_shape); backward
        returns ``run(dout)``, which is the gradient because dropout is linear
        in x with a mask that depends only on (seed, step, index, p). Only
        ``run`` (a closure over those integers) is kept on ``ctx``.

        Double backward works: with ``create_graph=True`` the backward's
        ``run(dout)`` is itself recorded through this Function (its gradient
        is the same dropout again). ``torch.utils.checkpoint`` recomputes the
        same mask, as it depends on no RNG state.
        """

        @staticmethod
        def forward(ctx: Any, x: Any, run: Callable[[Any], Any]) -> Any:
            ctx.run = run
            return run(x)

        @staticmethod
        def backward(ctx: Any, dout: Any) -> tuple[Any, None]:
            return ctx.run(dout), None

    _function.append(XDropFunction)
    return XDropFunction


def autograd_dropout(x: Any, run: Callable[[Any], Any]) -> Any:
    """``run(x)`` recorded for autograd with a backward of ``run(dout)``."""
    return _dropout_function().apply(x, run)
