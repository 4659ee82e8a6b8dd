"""CUDA fast paths (CuPy arrays and torch CUDA tensors): ``philox_dropout.c`` through NVRTC.

The kernels are compiled by CuPy's RawKernel from the same source text that
the CPU tests compile with the host's C compiler and compare with the
reference. Torch tensors are passed by raw device pointer and launched on
torch's current stream, so the output is a torch tensor on the input's device
and nothing synchronises with the host. CuPy is imported only here, only for
arrays that live on a CUDA device.
"""

from __future__ import annotations

import functools
import threading
import warnings
from typing import Any

import numpy as np

from ..host._native import SOURCE

THREADS = 256
_lock = threading.Lock()

# Per element type: (C type, scale type, +0, product, bytes of 4 elements).
# A half product goes through float, where the product of two halves is
# exact, so its one rounding is to half, as NumPy and torch do.
_TYPES = {
    "float32": ("float", "float", "0.0f", "((a) * (s))", 16),
    "float64": ("double", "double", "0.0", "((a) * (s))", 32),
    "float16": ("__half", "float", "__float2half_rn(0.0f)", "__float2half_rn(__half2float(a) * (s))", 8),
}


def cuda_source(dtype: str | None) -> str:
    """The NVRTC source of the mask kernel and, for ``dtype``, the dropout kernel."""
    head = "#define XDROP_CUDA 1\n"
    if dtype is not None:
        t, s, zero, mul, vec = _TYPES[dtype]
        head += "#include <cuda_fp16.h>\n" if dtype == "float16" else ""
        head += f"#define XD_T {t}\n#define XD_S {s}\n#define XD_ZERO {zero}\n#define XD_MUL(a, s) {mul}\n"
        head += f"#define XD_VEC_ALIGN {vec}\n"
    with open(SOURCE, encoding="utf-8") as f:
        return head + f.read()


@functools.cache
def _kernel(name: str, dtype: str | None) -> Any:
    import cupy

    return cupy.RawKernel(cuda_source(dtype), name)


def _grid(threads: int) -> tuple[tuple[int], tuple[int]]:
    return (max(1, -(-threads // THREADS)),), (THREADS,)


def _launch_mask(out_ptr: int, start: int, n: int, seed: int, step: int, k: int) -> None:
    u = np.uint64
    threads = -(-(start + n) // 4) - start // 4
    grid, block = _grid(threads)
    _kernel("xd_mask", None)(grid, block, (u(start), u(n), u(seed), u(step), u(k), u(out_ptr)))


def _launch_dropout(dtype: str, src_ptr: int, dst_ptr: int, n: int, seed: int, step: int, k: int, scale: float) -> bool:
    """Launch the fused kernel; False when ``dtype`` has none (the caller then masks)."""
    if dtype not in _TYPES:
        return False
    import cupy

    align = _TYPES[dtype][4]
    name = "xd_dropout_vec" if src_ptr % align == 0 and dst_ptr % align == 0 else "xd_dropout"
    try:
        kernel = _kernel(name, dtype)
        s = np.float64(scale) if dtype == "float64" else np.float32(scale)
        u = np.uint64
        grid, block = _grid(-(-n // 4))
        kernel(grid, block, (u(src_ptr), u(dst_ptr), u(n), u(seed), u(step), u(k), s))
    except cupy.cuda.compiler.CompileException:
        if dtype != "float16":  # cuda_fp16.h missing from NVRTC's path: mask instead
            raise
        return False
    return True


# -- CuPy arrays -----------------------------------------------------------------------------------


def cupy_dropout(x: Any, xp: Any, seed: int, step: int, k: int, scale: float) -> Any:
    import cupy

    with x.device:
        src = x if x.flags.c_contiguous else x.copy(order="C")  # ascontiguousarray would make 0-d 1-d
        out = cupy.empty(src.shape, src.dtype)
        if src.size and _launch_dropout(str(src.dtype), src.data.ptr, out.data.ptr, src.size, seed, step, k, scale):
            return out
        keep = cupy_mask(xp, 0, src.size, seed, step, k, x.device).reshape(src.shape)
        return cupy.where(keep, src * src.dtype.type(scale), src.dtype.type(0))


def cupy_mask(xp: Any, start: int, n: int, seed: int, step: int, k: int, device: Any) -> Any:
    import cupy

    dev = device if isinstance(device, cupy.cuda.Device) else cupy.cuda.Device(device)
    with dev:
        out = cupy.empty(n, cupy.bool_)
        if n:
            _launch_mask(out.data.ptr, start, n, seed, step, k)
        return out


# -- torch CUDA tensors ----------------------------------------------------------------------------


def _on_torch_stream(device: Any) -> Any:
    """CuPy's view of torch's current stream on ``device`` (made once per stream)."""
    import torch

    return _external_stream(torch.device(device).index or 0, torch.cuda.current_stream(device).cuda_stream)


@functools.cache
def _external_stream(index: int, handle: int) -> Any:
    """CuPy's view of the stream ``handle`` of device ``index`` (the index keeps equal handles of two devices apart)."""
    import cupy

    # cupy 14 deprecates ExternalStream (for Stream.from_external, absent from
    # older cupy); the raw handle works in both, so only the warning is
    # silenced. catch_warnings swaps process-wide filters, so threads making
    # streams at once could restore each other's: the lock serialises them.
    with _lock, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return cupy.cuda.ExternalStream(handle)


def torch_dropout(x: Any, xp: Any, seed: int, step: int, k: int, scale: float) -> Any:
    import cupy
    import torch

    src = x.detach().contiguous()
    out = torch.empty_like(src, memory_format=torch.contiguous_format)
    dtype = str(src.dtype).removeprefix("torch.")
    with cupy.cuda.Device(src.device.index), _on_torch_stream(src.device):
        if src.numel() == 0 or _launch_dropout(
            dtype, src.data_ptr(), out.data_ptr(), src.numel(), seed, step, k, scale
        ):
            return out
    keep = torch_mask(xp, 0, src.numel(), seed, step, k, src.device).reshape(src.shape)
    return torch.where(keep, src * scale, torch.zeros_like(src))


def torch_mask(xp: Any, start: int, n: int, seed: int, step: int, k: int, device: Any) -> Any:
    import cupy
    import torch

    dev = torch.device(device)
    out = torch.empty(n, dtype=torch.bool, device=dev)
    if n:
        with cupy.cuda.Device(out.device.index), _on_torch_stream(out.device):
            _launch_mask(out.data_ptr(), start, n, seed, step, k)
    return out
