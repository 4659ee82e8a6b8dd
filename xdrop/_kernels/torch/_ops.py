"""xdrop's dropout as a registered torch operator, and the one autograd path for torch.

``torch.ops.xdrop.dropout(x, seed_step, k, noise_shape, a, b, c, impl)`` is the
whole dropout family in one affine form over a mask drawn (stream spec v1) on
``noise_shape`` and broadcast over ``x``::

    out = where(keep, x * a, c)        if b == 0  (no add: -0 stays -0)
    out = where(keep, x * a + b, c)    otherwise  (alpha dropout)

Plain dropout is ``(a, b, c) = (1 / keep, 0, 0)``. ``seed_step`` is an int64
tensor of shape ``(2,)`` holding ``(seed, step)`` as two's-complement words, so a
layer can keep it as a buffer and advance it in place (``seed_step[1] += 1``)
without torch.compile recompiling or a CUDA graph baking in the value. The
output is laid out like ``torch.empty_like(x)`` (channels_last and permuted
strides are kept); the mask runs over logical row-major indices.

The op is linear in ``x`` up to the constant ``b``, so its gradient (and its
tangent, in forward mode) is the same op applied to ``dout`` with
``(a, 0, 0)``: no mask and no tensor of the input's size is saved, only a
clone of the two-word ``seed_step``. This module is imported only for torch
tensors, so ``import xdrop`` imports no torch.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
from torch.autograd import forward_ad

from ..._lib._stream import KEEP_ALL_OR_NONE
from ..._lib._u64 import from_int64
from ..._lib._u64 import to_int64 as to_int64  # re-exported: the attention operator imports it here
from .._engines import triton_available
from .._select import select, select_mask
from ..host._buffers import PARALLEL_MIN

# Filled by the torch CUDA kernel module (Triton) when it is available:
# ``fn(x, seed_step, k, noise_shape, a, b, c) -> Tensor | None``, with seed_step an
# int64 CUDA tensor of shape (2,) read on the device (so CUDA-graph capture
# works). None from it means "not handled here", and the generic path runs.
CudaKernel = Callable[[Any, Any, int, Sequence[int], float, float, float], Any]
_cuda_kernels: list[CudaKernel] = []


def register_cuda_kernel(fn: CudaKernel) -> None:
    """Make ``fn`` the implementation of the operator for torch CUDA tensors (``impl="auto"``)."""
    _cuda_kernels[:] = [fn]


def _triton_kernel(x: Any, seed_step: Any, k: int, noise_shape: Sequence[int], a: float, b: float, c: float) -> Any:
    """Plain dropout of a contiguous CUDA tensor by the Triton kernel, reading ``seed_step`` on the device.

    None (the generic path) for the affine variants, a broadcast mask, another
    layout or dtype, or a ``seed_step`` on another device.
    """
    from ..cuda import _triton

    plain = b == 0.0 and c == 0.0 and tuple(noise_shape) == tuple(x.shape)
    dtype = str(x.dtype).removeprefix("torch.")
    if not (plain and x.is_contiguous() and dtype in _triton.DTYPES and seed_step.device == x.device):
        return None
    out = torch.empty_like(x)
    _triton.dropout_into(x.detach(), out, seed_step[0:1], seed_step[1:2], k, a)
    return out


@functools.cache
def _load_cuda_kernel() -> None:
    """On the first CUDA tensor: register the Triton kernel if Triton imports (never at ``import xdrop``)."""
    if triton_available():  # else the generic path (CuPy or the reference) serves CUDA tensors
        register_cuda_kernel(_triton_kernel)


# [True] while xdrop.torch.onnx_export runs torch.onnx.export (which xdrop's translation needs).
ONNX_EXPORT: list[bool] = []


@functools.cache
def _namespace() -> Any:
    from ..._lib._compat import compat_namespace

    return compat_namespace("torch")


# dtype -> the compiled routine or None. A dict, not functools.cache: a dtype key takes lru_cache's
# slow path (a tuple key), which costs about 25 ns of a 64-element call's 4 us.
_C_DROPOUT: dict[Any, Any] = {}


def _c_dropout(dtype: Any) -> Any:
    """The compiled kernel's dropout routine for a float32/float64 tensor, else None."""
    try:
        return _C_DROPOUT[dtype]
    except KeyError:
        from ..host import _native

        lib = _native.library()
        names = {torch.float32: "xd_dropout_f32", torch.float64: "xd_dropout_f64"}
        return _C_DROPOUT.setdefault(dtype, getattr(lib, names[dtype]) if lib is not None and dtype in names else None)


def _small_cpu(x: Any, seed: int, step: int, k: int, a: float) -> Any:
    """Plain dropout of a small contiguous float32/float64 CPU tensor in one C call, or None.

    The same routine over the same range that the host driver calls below its
    threading threshold (``_host.dropout_into``), without the driver's cost.
    """
    n = x.numel()
    if k in KEEP_ALL_OR_NONE or not 0 < n < PARALLEL_MIN or not x.is_cpu or x.is_neg():
        return None
    fn = _C_DROPOUT.get(x.dtype) or _c_dropout(x.dtype)
    if fn is None:
        return None
    out = torch.empty_like(x)  # the layout the fake kernel promises
    if not out.is_contiguous():  # a dense permuted layout (a transpose): compute() keeps it
        return None
    # An expanded gradient (``dropout(x).sum().backward()``) or another strided input is read once
    # into row-major order, the order the mask's flat indices run in.
    src = x if x.is_contiguous() else x.contiguous()
    fn(src.data_ptr(), out.data_ptr(), 0, n, seed, step, k, a)
    return out


def compute(
    x: Any, seed: int, step: int, k: int, noise_shape: Sequence[int], a: float, b: float, c: float, impl: str
) -> Any:
    """The operator's arithmetic on a real (or meta) tensor, with Python-int ``seed``/``step``.

    Not recorded by autograd: callers are the operator's kernels and :class:`_Dropout`.
    """
    if x.is_meta:
        return torch.empty_like(x)
    plain = b == 0.0 and c == 0.0 and x.shape == tuple(noise_shape)
    if plain and impl == "auto" and (out := _small_cpu(x, seed, step, k, a)) is not None:
        return out  # (only x's memory is read: no detach needed)
    x = x.detach()
    xp = _namespace()
    noise_shape = tuple(noise_shape)
    src = x if x.is_contiguous() else x.contiguous()
    if plain:
        res = select(xp, src, impl)(src, xp, seed, step, k, a)
    else:
        n = math.prod(noise_shape)
        keep = torch.reshape(select_mask(xp, impl, src.device)(xp, 0, n, seed, step, k, src.device), noise_shape)
        kept = src * a if b == 0.0 else src * a + b  # no add when b = 0: the identity keeps -0.0
        res = torch.where(keep, kept, torch.full((), c, dtype=src.dtype, device=src.device))
    if res.stride() == x.stride():
        return res
    out = torch.empty_like(x)  # the layout the fake kernel promises
    out.copy_(res)
    return out


def _unpack(seed_step: Any) -> tuple[int, int]:
    seed, step = seed_step.tolist()
    return from_int64(seed), from_int64(step)


@torch.library.custom_op("xdrop::dropout", mutates_args=())
def _dropout_op(
    x: torch.Tensor,
    seed_step: torch.Tensor,
    k: int,
    noise_shape: list[int],
    a: float,
    b: float,
    c: float,
    impl: str,
) -> torch.Tensor:
    if x.device.type == "cuda" and impl == "auto" and not _cuda_kernels:
        _load_cuda_kernel()
    if x.device.type == "cuda" and impl == "auto" and _cuda_kernels:
        out = _cuda_kernels[0](x, seed_step, k, noise_shape, a, b, c)
        if out is not None:
            return cast(torch.Tensor, out)
    seed, step = _unpack(seed_step)
    return cast(torch.Tensor, compute(x, seed, step, k, noise_shape, a, b, c, impl))


@_dropout_op.register_fake
def _(
    x: torch.Tensor,
    seed_step: torch.Tensor,
    k: int,
    noise_shape: list[int],
    a: float,
    b: float,
    c: float,
    impl: str,
) -> torch.Tensor:
    onnx = sys.modules.get("torch.onnx")  # imported by torch.onnx.export, not by import torch
    if onnx is not None and not ONNX_EXPORT and onnx.is_in_onnx_export():
        raise RuntimeError(
            "torch.onnx.export has no translation of xdrop's dropout (torch.ops.xdrop.dropout): export with "
            "xdrop.torch.onnx_export(model, args), which translates it and makes each layer's seed and step "
            "inputs of the ONNX graph"
        )
    return torch.empty_like(x)


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    _, seed_step, k, noise_shape, a, _, _, impl = inputs
    # A copy of the two words: the caller may advance its step in place afterwards.
    ctx.seed_step = seed_step.clone()
    ctx.rest = (k, noise_shape, a, impl)


def _backward(ctx: Any, grad: Any) -> tuple[Any, ...]:
    k, noise_shape, a, impl = ctx.rest
    return (OP(grad, ctx.seed_step, k, noise_shape, a, 0.0, 0.0, impl),) + (None,) * 7


def _vmap(
    info: Any,
    in_dims: tuple[Any, ...],
    x: Any,
    seed_step: Any,
    k: int,
    noise_shape: list[int],
    a: float,
    b: float,
    c: float,
    impl: str,
) -> tuple[Any, int]:
    x_dim, ss_dim = in_dims[0], in_dims[1]
    if ss_dim is not None:  # one (seed, step) per sample: one call each
        ss = seed_step.movedim(ss_dim, 0)
        xs = x.movedim(x_dim, 0) if x_dim is not None else x.expand(ss.shape[0], *x.shape)
        return torch.stack([OP(xi, si, k, noise_shape, a, b, c, impl) for xi, si in zip(xs, ss, strict=True)]), 0
    # One (seed, step) for the batch: the mask is that of the whole batched tensor.
    xb = x.movedim(x_dim, 0)
    return OP(xb, seed_step, k, [xb.shape[0], *noise_shape], a, b, c, impl), 0


_dropout_op.register_autograd(_backward, setup_context=_setup_context)
_dropout_op.register_vmap(_vmap)
OP = torch.ops.xdrop.dropout.default


class _Linear(torch.autograd.Function):
    """Backward and forward-mode rules shared by the eager Functions: the same dropout with ``(a, 0, 0)``.

    ``ctx.args`` is ``(seed, step, k, noise_shape, a, impl)``. Going back
    through :func:`dropout` records the gradient again when ``create_graph``
    asks for it (double backward).
    """

    @staticmethod
    def backward(ctx: Any, grad: Any) -> tuple[Any, ...]:
        seed, step, k, noise_shape, a, impl = ctx.args
        return (dropout(grad, seed, step, k, noise_shape, a, 0.0, 0.0, impl),) + (None,) * 8

    @staticmethod
    def jvp(ctx: Any, x_t: Any, *_: Any) -> Any:
        seed, step, k, noise_shape, a, impl = ctx.args
        return dropout(x_t, seed, step, k, noise_shape, a, 0.0, 0.0, impl)


class _Dropout(_Linear):
    """Eager dropout of plain tensors with Python-int ``seed``/``step`` (also dual tensors).

    Used outside torch.compile (dynamo does not trace a custom ``jvp``): it
    skips the operator's dispatch cost, and its ``forward(ctx, ...)`` form
    skips the per-call signature binding of the ``setup_context`` form. The
    arithmetic is the operator's (:func:`compute`), so the bits are the same.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: Any,
        seed: int,
        step: int,
        k: int,
        noise_shape: tuple[int, ...],
        a: float,
        b: float,
        c: float,
        impl: str,
    ) -> Any:
        ctx.args = (seed, step, k, noise_shape, a, impl)
        return compute(x, seed, step, k, noise_shape, a, b, c, impl)


class _FuncDropout(_Linear):
    """The same under torch.func transforms, which need ``setup_context`` and a vmap rule."""

    @staticmethod
    def forward(
        x: Any, seed: int, step: int, k: int, noise_shape: tuple[int, ...], a: float, b: float, c: float, impl: str
    ) -> Any:
        return compute(x, seed, step, k, noise_shape, a, b, c, impl)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        ctx.args = (*inputs[1:6], inputs[8])

    @staticmethod
    def vmap(info: Any, in_dims: tuple[Any, ...], x: Any, *args: Any) -> tuple[Any, int]:
        seed, step, k, noise_shape, a, b, c, impl = args
        xb = x.movedim(in_dims[0], 0)
        return dropout(xb, seed, step, k, (xb.shape[0], *noise_shape), a, b, c, impl), 0


def _has_tangent(x: Any) -> bool:
    """Whether ``x`` carries a forward-mode tangent (only possible inside a ``dual_level``)."""
    if getattr(forward_ad, "_current_level", 0) < 0:  # no dual level open: skip the unpack
        return False
    return forward_ad.unpack_dual(x).tangent is not None  # type: ignore[no-untyped-call]


def dropout(
    x: Any,
    seed: Any,
    step: Any,
    k: int,
    noise_shape: Sequence[int],
    a: float,
    b: float = 0.0,
    c: float = 0.0,
    impl: str = "auto",
) -> Any:
    """The dropout family on a torch tensor, recorded for autograd without saving a mask.

    ``seed`` and ``step`` are Python ints in ``[0, 2**64)``, or ``seed`` is an
    int64 tensor of shape ``(2,)`` holding ``(seed, step)`` (then ``step`` is
    ignored): the form layers and compiled code use, read by the kernel. Eager
    calls with ints and no autograd run the kernel directly; compiled and
    traced calls go through ``torch.ops.xdrop.dropout``.

    Examples
    --------
    >>> import torch  # doctest: +SKIP
    >>> from xdrop._kernels.torch import _ops as _torch_ops  # doctest: +SKIP
    >>> _torch_ops.dropout(torch.ones(4), 7, 0, 2**31, (4,), 2.0)  # doctest: +SKIP
    tensor([0., 0., 2., 2.])
    """
    noise_shape = tuple(noise_shape)
    # Tensor subclasses (FakeTensor, ...) and compiled code need the dispatcher.
    if type(x) is not torch.Tensor or torch.compiler.is_compiling() or not isinstance(seed, int):
        if isinstance(seed, int):
            # On x's device: a CUDA kernel reads it there (and a CUDA graph would not capture a copy).
            seed = torch.tensor([to_int64(seed), to_int64(step)], dtype=torch.int64, device=x.device)
        return OP(x, seed, k, list(noise_shape), a, b, c, impl)
    try:
        x.data_ptr()
    except RuntimeError:  # functorch's wrappers (vmap, grad, jvp) have no storage
        return _FuncDropout.apply(x, seed, step, k, noise_shape, a, b, c, impl)  # type: ignore[no-untyped-call]
    if (x.requires_grad and torch.is_grad_enabled()) or _has_tangent(x):
        return _Dropout.apply(x, seed, step, k, noise_shape, a, b, c, impl)  # type: ignore[no-untyped-call]
    return compute(x, seed, step, k, noise_shape, a, b, c, impl)
