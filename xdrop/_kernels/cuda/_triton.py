# mypy: disable-error-code="no-untyped-def,untyped-decorator"
# (Triton kernels: their parameters are typed by Triton at launch, not by annotations.)
"""Torch CUDA fast path without CuPy: stream spec v1 as Triton kernels.

Triton ships with torch's CUDA wheels, so a torch user gets the fused kernel
with nothing else installed. The arithmetic is the one of ``philox_dropout.c``:
Philox4x32-10 on 32-bit words (``tl.umulhi`` for the high half of a product,
wrapping multiplication for the low half), one Philox call per block of four
consecutive flat indices, ``keep = word < K`` compared in 64 bits so that
``K = 2**32`` keeps all, and ``out = keep ? x * scale : +0`` with one rounding
to the element type (a half or bfloat16 product is exact in float32, so the one
rounding is the conversion back).

``seed`` and ``step`` are Python ints or int64 tensors on the device (0-d or
1-d, element 0 is read; a value >= 2**63 is stored as its two's complement):
a CUDA graph replays the tensor's current value, so a step counter kept on the
device advances between replays. Under ``TRITON_INTERPRET=1`` the same kernels
run on CPU tensors, which is how the CPU tests check the arithmetic against the
reference. Triton and torch are imported only when this module is.
"""

from __future__ import annotations

import struct
from typing import Any

import torch
import triton
import triton.language as tl

# Elements per program (a power of two, a multiple of 4): 256 Philox blocks.
BLOCK = 1024
WARPS = 4
# The element types with a fused kernel: product in ``compute`` type, then one rounding.
DTYPES = ("float16", "bfloat16", "float32", "float64")

_wrap: Any = getattr(getattr(torch, "library", None), "wrap_triton", None)


@triton.jit
def _u64(value, IS_PTR: tl.constexpr):
    """A 64-bit word from a Python int argument or from element 0 of an int64 tensor."""
    if IS_PTR:
        return tl.load(value).to(tl.uint64, bitcast=True)
    return tl.cast(value, tl.uint64)  # a non-negative int typed i32, u32, i64 or u64 by its value


@triton.jit
def _philox10(c0, c1, c2, c3, k0, k1):
    """Philox4x32 with 10 rounds on uint32 tensors (Random123's philox4x32_10)."""
    m0 = tl.full(c0.shape, 0xD2511F53, tl.uint32)
    m1 = tl.full(c0.shape, 0xCD9E8D57, tl.uint32)
    for _ in tl.static_range(10):
        h0 = tl.umulhi(c0, m0)
        l0 = c0 * m0
        h1 = tl.umulhi(c2, m1)
        l1 = c2 * m1
        c0, c1, c2, c3 = h1 ^ c1 ^ k0, l1, h0 ^ c3 ^ k1, l0
        k0 = k0 + 0x9E3779B9
        k1 = k1 + 0xBB67AE85
    return c0, c1, c2, c3


@triton.jit
def _keep_tile(pid, start, n, seed, step, k, SEED_PTR: tl.constexpr, STEP_PTR: tl.constexpr, B4: tl.constexpr):
    """Keep decisions and positions of one program's tile of B4 Philox blocks, as (B4, 4).

    The tile covers blocks ``start // 4 + pid * B4 ...``; ``j`` is the position
    of each flat index in ``start .. start + n - 1`` (uint64, wrapping), valid
    where ``j < n``.
    """
    s = _u64(seed, SEED_PTR)
    t = _u64(step, STEP_PTR)
    # tl.cast, not .to: Triton may pass a specialised int (e.g. 1) as a constexpr.
    first = tl.cast(start, tl.uint64)
    block = (first >> 2) + pid.to(tl.uint64) * B4 + tl.arange(0, B4).to(tl.uint64)
    key0 = tl.full((B4,), 0, tl.uint32) + (s & 0xFFFFFFFF).to(tl.uint32)
    key1 = tl.full((B4,), 0, tl.uint32) + (s >> 32).to(tl.uint32)
    c2 = tl.full((B4,), 0, tl.uint32) + (t & 0xFFFFFFFF).to(tl.uint32)
    c3 = tl.full((B4,), 0, tl.uint32) + (t >> 32).to(tl.uint32)
    w0, w1, w2, w3 = _philox10((block & 0xFFFFFFFF).to(tl.uint32), (block >> 32).to(tl.uint32), c2, c3, key0, key1)
    lane = tl.arange(0, 4)[None, :]
    word = tl.where(
        lane == 0, w0[:, None], tl.where(lane == 1, w1[:, None], tl.where(lane == 2, w2[:, None], w3[:, None]))
    )
    keep = word.to(tl.uint64) < tl.cast(k, tl.uint64)
    j = block[:, None] * 4 + lane.to(tl.uint64) - first
    return keep, j, j < tl.cast(n, tl.uint64)


@triton.jit(do_not_specialize=["start", "seed", "step", "k"])
def _mask_kernel(out_ptr, start, n, seed, step, k, SEED_PTR: tl.constexpr, STEP_PTR: tl.constexpr, B4: tl.constexpr):
    pid = tl.program_id(0)
    keep, j, valid = _keep_tile(pid, start, n, seed, step, k, SEED_PTR, STEP_PTR, B4)
    tl.store(out_ptr + j.to(tl.int64), keep, mask=valid)


# start stays specialized: 0 in practice, so Triton knows the loads are aligned and can vectorise them.
@triton.jit(do_not_specialize=["seed", "step", "k", "scale_bits"])
def _dropout_kernel(
    x_ptr,
    out_ptr,
    start,
    n,
    seed,
    step,
    k,
    scale_bits,
    SEED_PTR: tl.constexpr,
    STEP_PTR: tl.constexpr,
    B4: tl.constexpr,
    WIDE: tl.constexpr,
    BF16: tl.constexpr,
):
    pid = tl.program_id(0)
    keep, j, valid = _keep_tile(pid, start, n, seed, step, k, SEED_PTR, STEP_PTR, B4)
    offsets = j.to(tl.int64)
    x = tl.load(x_ptr + offsets, mask=valid, other=0.0)
    if WIDE:  # float64: the scale's bits as an int64
        scale = scale_bits.to(tl.int64).to(tl.float64, bitcast=True)
        product = x * scale
    else:  # float32 scale; a half or bfloat16 product is exact in float32, rounded once below
        scale = scale_bits.to(tl.int32).to(tl.float32, bitcast=True)
        product = x.to(tl.float32) * scale
    if BF16:
        # Round to nearest even on the bits, as torch's CPU bfloat16 does (NaN -> 0x7FC0): the
        # interpreter's float -> bfloat16 conversion does not round to nearest even, integers agree.
        bits = product.to(tl.uint32, bitcast=True)
        half = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        half = tl.where(product != product, 0x7FC0, half)
        out = tl.where(keep, half, 0).to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        out = tl.where(keep, product, 0.0).to(out_ptr.dtype.element_ty)
    tl.store(out_ptr + offsets, out, mask=valid)


def _word_arg(value: Any, name: str) -> tuple[Any, bool]:
    """A seed or step as a kernel argument: (int or tensor, whether it is a pointer)."""
    if isinstance(value, torch.Tensor):
        if value.dtype != torch.int64 or value.numel() < 1 or value.dim() > 1:
            raise ValueError(f"{name} must be an int or a 0-d/1-d int64 tensor, got {name} of {value.dtype}")
        return value, True
    return int(value), False


def _grid(start: int, n: int) -> tuple[int]:
    first_block, stop_block = start // 4, -(-(start + n) // 4)
    return (max(1, -(-(stop_block - first_block) // (BLOCK // 4))),)


def _launch(kernel: Any) -> Any:
    # wrap_triton only where dynamo traces the launch; the operator's eager and CUDA
    # implementations run outside tracing, where the wrapper only adds dispatch cost.
    tracing = _wrap is not None and torch.compiler.is_compiling()
    return _wrap(kernel) if tracing else kernel


def dropout_into(x: Any, out: Any, seed: Any, step: Any, k: int, scale: float, start: int = 0) -> None:
    """Write the dropout of the contiguous tensor ``x`` into ``out`` (``x[j]`` has flat index ``start + j``)."""
    dtype = str(x.dtype).removeprefix("torch.")
    if dtype not in DTYPES:
        raise ValueError(f"x must have a dtype in {DTYPES}, got {dtype}")
    n = x.numel()
    if n == 0:
        return
    s, s_ptr = _word_arg(seed, "seed")
    t, t_ptr = _word_arg(step, "step")
    wide = dtype == "float64"
    code = "q d" if wide else "i f"  # the scale's bits as a signed int of its width
    bits = struct.unpack("<" + code[0], struct.pack("<" + code[2], scale))[0]
    _launch(_dropout_kernel)[_grid(start, n)](
        x,
        out,
        start,
        n,
        s,
        t,
        k,
        bits,
        SEED_PTR=s_ptr,
        STEP_PTR=t_ptr,
        B4=BLOCK // 4,
        WIDE=wide,
        BF16=dtype == "bfloat16",
        num_warps=WARPS,
    )


def mask_into(out: Any, start: int, seed: Any, step: Any, k: int) -> None:
    """Write the keep decisions of flat indices ``start .. start + out.numel() - 1`` into the bool tensor ``out``."""
    n = out.numel()
    if n == 0:
        return
    s, s_ptr = _word_arg(seed, "seed")
    t, t_ptr = _word_arg(step, "step")
    _launch(_mask_kernel)[_grid(start, n)](
        out, start, n, s, t, k, SEED_PTR=s_ptr, STEP_PTR=t_ptr, B4=BLOCK // 4, num_warps=WARPS
    )


def triton_dropout(x: Any, seed: Any, step: Any, k: int, scale: float) -> Any:
    """Dropout of the torch tensor ``x`` with the stream-v1 decisions of its flat row-major indices.

    ``k`` is K of the spec (in [0, 2**32]), ``scale`` the scale already
    rounded to ``x``'s dtype (:func:`xdrop._lib._stream.scale_for`).

    Examples
    --------
    >>> import torch  # doctest: +SKIP
    >>> triton_dropout(torch.ones(8, device="cuda"), 0, 0, 1 << 31, 2.0)  # doctest: +SKIP
    tensor([2., 0., 0., 2., 2., 0., 2., 0.], device='cuda:0')
    """
    src = x.detach().contiguous()
    out = torch.empty_like(src, memory_format=torch.contiguous_format)
    dropout_into(src, out, seed, step, k, scale)
    return out


def triton_mask(start: int, n: int, seed: Any, step: Any, k: int, device: Any) -> Any:
    """Keep decisions (bool, length ``n``) of flat indices ``start .. start + n - 1`` on ``device``."""
    out = torch.empty(n, dtype=torch.bool, device=device)
    mask_into(out, start, seed, step, k)
    return out


def torch_dropout(x: Any, xp: Any, seed: int, step: int, k: int, scale: float) -> Any:
    """The dispatcher's kernel signature (``xdrop._kernels.Kernel``); other dtypes take the mask."""
    if str(x.dtype).removeprefix("torch.") in DTYPES:
        return triton_dropout(x, seed, step, k, scale)
    keep = triton_mask(0, x.numel(), seed, step, k, x.device).reshape(x.shape)
    return torch.where(keep, x * scale, torch.zeros_like(x))


def torch_mask(xp: Any, start: int, n: int, seed: int, step: int, k: int, device: Any) -> Any:
    """The dispatcher's mask-kernel signature (``xdrop._kernels.MaskKernel``)."""
    return triton_mask(start, n, seed, step, k, device)
