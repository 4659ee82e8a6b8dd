"""Torch CPU fast paths: tensors through the host kernels, zero-copy.

CPU tensors of float16/32/64 are viewed as NumPy arrays (``Tensor.numpy()``
shares memory), and the host kernel writes straight into a new tensor's
buffer. Other dtypes (bfloat16) take the host mask and ``torch.where``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..host import _buffers as _host

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


def cpu_mask(start: int, n: int, seed: int, step: int, k: int, engine: str, device: Any = None) -> Any:
    import torch

    if device is not None and torch.device(device).type == "meta":
        return torch.empty(n, dtype=torch.bool, device="meta")
    out = np.empty(n, np.bool_)
    _host.mask_into(out, start, seed, step, k, engine)
    return torch.from_numpy(out)
