"""Attention with xdrop's dropout on torch tensors: what the operators ``xdrop::attention`` and its backward compute.

The operators are registered in :mod:`xdrop._kernels.torch._attention_op`.

``torch.ops.xdrop.attention(q, k, v, bias, seed_step, dropout_p, scale, is_causal)``
takes q ``(N, L, E)``, k ``(N, S, E)``, v ``(N, S, Ev)`` and returns
``(out, lse)``: out ``(N, L, Ev)`` and the log-sum-exp of each row of the
scaled, biased scores (``(N, L)``, float32, float64 for float64 inputs, -inf
for a row whose every key is masked out). ``bias`` is None or an additive
float mask of q's dtype, ``(Bo, Bi, Lb, Sb)`` with ``Lb`` in ``{1, L}``, ``Sb``
in ``{1, S}`` and the rows ``N = No * Ni`` read as ``(outer, inner)`` pairs:
``Bo`` is 1 or ``No`` and ``Bi`` is 1 or ``Ni``, so the bias varies along the
outer rows only (``(batch, 1, L, S)`` over ``batch * heads`` rows), the inner
ones only (``(1, heads, L, S)``) or both, and ``Ni`` follows from the shapes
(``Bi`` where it is not 1, else ``N // Bo``). Row ``n`` adds ``bias[n // Ni, n %
Ni]``, broadcast where a size is 1: by index, no row of it copied. A 3-d
``(Nb, Lb, Sb)`` bias is ``(Nb, 1, Lb, Sb)``. ``seed_step`` is the int64
``(seed, step)`` pair of ``xdrop::dropout``.

The keep decision of weight ``(n, i, j)`` is stream v1's at flat index ``(n *
L + i) * S + j``. Autograd saves q, k, v, bias and lse (and out where a device
kernel's backward reads it; nothing of ``L * S`` elements); backward computes
the weights again, block by block, and draws the same mask; where the bias
requires grad, ``xdrop::attention_backward_bias`` also sums each block's
score gradient into the bias's shape. On the CPU (and, until a device kernel
is connected, other devices) the blocks are runs of query rows with all ``S``
keys: each block's scores, weights and mask are ``O(rows * S)``, at most
``BLOCK`` elements unless one row is larger, its mask one contiguous range of
flat indices, and its softmax exact (no online rescaling is needed when a
block holds whole rows). float16 and bfloat16 inputs are computed in float32
(as torch's math path on the CPU), so scores that overflow before scaling
stay finite. With no keys (``S = 0``) out is 0 and lse -inf.

On the CPU with the compiled kernel's avx2 or avx512 variant, float32 problems
whose feature sizes are multiples of 16 (half types are computed in float32)
go through one compiled routine (``Kernels.attention_mm``, ``xd_attn_mm_call``
in ``src/xla_attention.c``): the problems and their rows cut into parts that
torch's OpenMP threads take in turn, each part tile by tile of query rows,
xdrop's own matrix kernels, the row pass below and the mask in one call;
nothing of ``L * S`` leaves the routine.

Otherwise, on the CPU with the compiled kernel, a block is three steps: torch's matmul
writes ``q k^T`` into a buffer allocated once per call; the compiled pass
(``Kernels.attention``, ``philox_dropout.c``) turns it, row by row while the
row is in L1, into the dropped weights (scale, the bias read by index through
its strides, the causal mask, the softmax, lse, the keep mask of ``xd_mask``'s
bits and the dropout scale); torch's matmul multiplies them by v. Backward
recomputes the scores the same way, and one pass turns them and ``dout v^T``
into the dropped weights and the scores' gradient for the four products. The
pass is split over ``torch.get_num_threads()`` threads between the products,
never beside them. Elsewhere (no compiled kernel, other devices, or ``FUSED``
False) each block runs through torch operations; both paths draw the same
mask bits and agree to a few roundings (``tests/test_attention_fused.py``).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterator
from typing import Any, cast

import torch

from ..._lib._stream import KEEP_ALL_OR_NONE, keep_count, scale_for

# Elements of one block's score matrix: 2**22 (16 MiB in float32). Few blocks make few torch calls:
# on a busy machine each call's parallel region can wait a time slice for its threads (measured: 16
# blocks of 2**20 took three times as long as 4 of 2**22 at L = 1024 beside other busy processes).
# The compiled pass reads each row while it is in L1, whatever the block's size.
BLOCK = 1 << 22

# The compiled per-block pass on the CPU (``Kernels.attention``, philox_dropout.c) where the kernel is
# built; False: every block through the torch operations (the tests compare the two).
FUSED = True

# The CUDA kernels (part of the Triton backend): ``module.forward`` / ``module.backward`` with this
# module's ``forward`` / ``backward`` contract, or None where they are not available.
_cuda: list[Any] = []


def _cuda_module() -> Any:
    """``xdrop._kernels.cuda._attention_triton`` where Triton imports, else None (tried once)."""
    if not _cuda:
        from .._engines import triton_available

        module: Any = None
        if triton_available():
            from ..cuda import _attention_triton

            module = _attention_triton
        _cuda.append(module)
    return _cuda[0]


def bias_layout(bias: Any, n: int, length: int, keys: int) -> tuple[Any, int]:
    """``(bias4, inner)``: ``bias`` as ``(Bo, Bi, Lb, Sb)`` and ``Ni``, row ``n`` adding ``bias4[n // Ni, n % Ni]``."""
    if bias.ndim == 3:
        bias = bias[:, None]
    if bias.ndim != 4:
        raise ValueError(f"bias must be (Bo, Bi, Lb, Sb) or (Nb, Lb, Sb), got bias.shape={tuple(bias.shape)}")
    bo, bi, lb, sb = bias.shape
    inner = bi if bi > 1 else n // bo if bo > 1 else max(n, 1)
    if lb not in (1, length) or sb not in (1, keys) or n % inner or bo not in (1, n // inner):
        raise ValueError(
            f"bias of shape {tuple(bias.shape)} does not broadcast over the weights' ({n}, {length}, {keys}) "
            "as (outer rows, inner rows, L, S)"
        )
    return bias, inner


def _contract_bias(bias: Any, n: int) -> Any:
    """``bias`` as the device kernels take it, ``(1 or n, Lb, Sb)``: a copy where it serves groups of rows."""
    if bias is None:
        return None
    b4, inner = bias_layout(bias, n, bias.shape[-2], bias.shape[-1])
    if b4.shape[0] * b4.shape[1] == 1:
        return b4[0]
    return b4.expand(n // inner, inner, *b4.shape[2:]).reshape(n, *b4.shape[2:])


def blocks(n: int, length: int, keys: int) -> Iterator[tuple[int, int, int, int]]:
    """``(n0, n1, i0, i1)``: whole rows ``i0:i1`` of problems ``n0:n1``, each block one flat index range."""
    if not length:  # no query rows: no block (the compiled pass takes none)
        return
    rows = max(1, BLOCK // max(keys, 1))
    if rows >= length:
        per = max(1, rows // max(length, 1))
        for n0 in range(0, n, per):
            yield n0, min(n0 + per, n), 0, length
        return
    for i in range(n):
        for i0 in range(0, length, rows):
            yield i, i + 1, i0, min(i0 + rows, length)


def _bias_runs(
    bias4: Any, inner: int, n0: int, n1: int, i0: int, i1: int
) -> Iterator[tuple[int, int, tuple[Any, ...]]]:
    """``(a, c, index)``: the block's problems ``n0 + a .. n0 + c`` add ``bias4[index]`` (a view, broadcasting)."""
    bo, bi, lb, _ = bias4.shape
    rows = slice(i0, i1) if lb > 1 else slice(0, 1)
    n = n0
    while n < n1:
        outer, at = divmod(n, inner)
        end = min(n1, (outer + 1) * inner)
        lead = slice(at, at + end - n) if bi > 1 else slice(0, 1)
        yield n - n0, end - n0, (outer if bo > 1 else 0, lead, rows)
        n = end


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Scores, softmax and products: float64 for float64, else float32 (half types as torch's CPU math path)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _scores(q: Any, k: Any, bias: Any, scale: float, is_causal: bool, n0: int, n1: int, i0: int, i1: int) -> Any:
    """Scaled, biased, causally masked scores of a block, ``(n1 - n0, i1 - i0, S)``; ``bias`` a layout's pair."""
    s = torch.matmul(q[n0:n1, i0:i1], k[n0:n1].transpose(1, 2))
    s.mul_(scale)
    if bias is not None:
        bias4, inner = bias
        for a, c, index in _bias_runs(bias4, inner, n0, n1, i0, i1):
            s[a:c].add_(bias4[index])
    if is_causal:
        j = torch.arange(s.shape[-1], device=s.device)
        i = torch.arange(i0, i1, device=s.device)
        s.masked_fill_(j[None, :] > i[:, None], -math.inf)
    return s


def _keep_drawer(device: Any, seed: int, step: int, kk: int, length: int, keys: int) -> Any:
    """``keep(n0, n1, i0, i1)``: a block's keep mask, one contiguous range of the flat indices.

    The kernel (or engine) is chosen once per call, not per block. On the CPU the compiled
    kernel draws on the calling thread: the block's products run on torch's intra-op
    threads, and the host driver's own pool beside them gains little (drawing a block's
    flags costs about a fortieth of its ``q k^T`` at E = 64) and makes two pools fight for
    the cores of a busy machine. Without the compiled kernel, the NumPy engine (and its
    threads). (With the compiled kernel on the CPU the fused pass draws the mask itself;
    this drawer serves the torch-operations path.)
    """
    if device.type == "cpu":
        from ..host import _buffers as _host
        from ..host import _native

        lib = _native.library()
        xd_mask = None if lib is None or kk in KEEP_ALL_OR_NONE else lib.xd_mask
        engine = _host.default_engine()

        def draw(start: int, count: int) -> Any:
            out = torch.empty(count, dtype=torch.bool)
            if xd_mask is None:
                _host.mask_into(out.numpy(), start, seed, step, kk, engine)
            else:
                xd_mask(start, count, seed, step, kk, out.data_ptr())
            return out
    else:
        from .._select import select_mask
        from ._ops import _namespace

        xp = _namespace()
        select = select_mask(xp, "auto", device)

        def draw(start: int, count: int) -> Any:
            return select(xp, start, count, seed, step, kk, device).to(device)

    def keep(n0: int, n1: int, i0: int, i1: int) -> Any:
        start = (n0 * length + i0) * keys
        return draw(start, (n1 - n0) * (i1 - i0) * keys).view(n1 - n0, i1 - i0, keys)

    return keep


def _fused_kernel(q: Any) -> Any:
    """The compiled block routine for q (prepared: float32 or float64) on the CPU, or None: the torch operations."""
    if not FUSED or q.device.type != "cpu":
        return None
    from ..host import _native

    lib = _native.library()
    return None if lib is None else lib.attention[q.element_size()]


# Float32 problems with feature sizes that are multiples of 16 through the compiled routine with xdrop's
# own products (``attention_mm``: the avx512 and avx2 variants'), where it is built; False: the blocks above.
OWN_PRODUCTS = True


def _mm_kernel(q: Any, v: Any) -> Any:
    """The compiled routine that also runs the products, for q and v (prepared), or None."""
    if not (FUSED and OWN_PRODUCTS) or q.device.type != "cpu" or q.dtype != torch.float32:
        return None
    (n, length, e), ev = q.shape, v.shape[2]
    if not n or not length or not e or not ev or e % 16 or ev % 16:  # nothing to compute: the blocked code's
        return None
    from ..host import _native

    lib = _native.library()
    return None if lib is None else lib.attention_mm


def _openmp_parallel() -> int:
    """The address of ``GOMP_parallel`` in the OpenMP runtime that torch's intra-op threads belong to, or 0.

    Threads of that runtime spin for a while after each torch operation; threads of ours started beside
    them would share the cores with the spinning ones (measured: the backward at L = 256 took longer on two
    threads than on one). Found where torch runs OpenMP and its runtime is a library file in torch's folder
    (the Linux wheels' ``libgomp``); elsewhere 0, and the parts run on the routine's POSIX threads. 0 also in a
    process forked from the one that found it: GNU OpenMP's threads do not survive a fork, and a parallel
    region there would wait for them for ever (as torch's own operations do).
    """
    pid = os.getpid()
    if not _gomp:
        address = 0
        try:
            if "parallel backend: OpenMP" in torch.__config__.parallel_info():
                address = _gomp_address(os.path.dirname(torch.__file__))
        except (OSError, AttributeError):
            address = 0
        _gomp.append((pid, address))
    found_in, address = _gomp[0]
    return address if found_in == pid else 0


_gomp: list[tuple[int, int]] = []


def _gomp_address(folder: str) -> int:
    """``GOMP_parallel``'s address in the loaded OpenMP library under ``folder``, or 0."""
    import ctypes

    with open("/proc/self/maps") as maps:  # Linux; elsewhere OSError, and 0
        paths = {line.split()[-1] for line in maps if "/libgomp" in line}
    for path in sorted(paths):  # torch/lib/ (the wheels torch publishes), torch.libs/ (repaired wheels)
        if path.startswith((folder + os.sep, folder + ".libs" + os.sep)):
            entry = ctypes.CDLL(path).GOMP_parallel  # the loaded copy: dlopen of its path adds a reference
            return int(ctypes.cast(entry, ctypes.c_void_p).value or 0)
    return 0


def _run_mm(kernel: Any, tensors: tuple[Any, ...], n: int, e: int, ev: int, fixed: tuple[Any, ...]) -> None:
    """One call of the compiled routine over all ``n`` problems (``tensors``: q, k, v, dout, out, lse, dq,
    dk, dv, None where unused) on torch's intra-op thread count, through its OpenMP runtime where found
    (else the routine's own POSIX threads). It returns when every part is written (the GIL released)."""
    threads = torch.get_num_threads()
    parallel = _openmp_parallel() if threads > 1 else 0
    kernel(*(0 if t is None else t.data_ptr() for t in tensors), n, e, ev, threads, parallel, *fixed)


def _forward_mm(kernel: Any, q: Any, k: Any, v: Any, bias: Any, out: Any, lse: Any, args: tuple[Any, ...]) -> None:
    """Fill ``out`` and ``lse`` with the compiled routine, products included."""
    n, _, e = q.shape
    tensors = (q, k, v, None, out, lse, None, None, None)
    _run_mm(kernel, tensors, n, e, v.shape[2], _fused_args(q, k, bias, args))


def _backward_mm(
    kernel: Any, q: Any, k: Any, v: Any, bias: Any, grads_of: tuple[Any, ...], args: tuple[Any, ...]
) -> None:
    """Write ``dq``, ``dk`` and ``dv`` with the compiled routine, products included."""
    dout, lse, dq, dk, dv, _ = grads_of
    lse = lse.detach().to(q.dtype).contiguous()
    n, _, e = q.shape
    tensors = (q, k, v, dout, None, lse, dq, dk, dv)
    _run_mm(kernel, tensors, n, e, v.shape[2], _fused_args(q, k, bias, args))


# Below this many scores a block's compiled pass runs on the calling thread alone: handing parts to
# other threads costs more than it saves.
SPLIT_MIN = 1 << 15

# Thread pools by (process, size): a forked child (a DataLoader worker) inherits the dict, not the threads.
_pools: dict[tuple[int, int], Any] = {}
_pools_lock = threading.Lock()


def _pool(threads: int) -> Any:
    """This process's pool of ``threads - 1`` threads (the calling thread is the last one)."""
    key = (os.getpid(), threads)
    with _pools_lock:
        if key not in _pools:
            from concurrent.futures import ThreadPoolExecutor

            _pools[key] = ThreadPoolExecutor(threads - 1, thread_name_prefix="xdrop-attention")
        return _pools[key]


def _join(parts: list[Any]) -> None:
    """Wait for every part, then raise the first error (a Ctrl-C included).

    The parts write the caller's tensors through their addresses: the caller must not
    unwind (and free them) while one still runs, so an interrupt waits for the rest first.
    """
    from concurrent.futures import wait

    interrupted: BaseException | None = None
    while True:
        try:
            wait(parts)
            break
        except KeyboardInterrupt as exc:
            interrupted = exc
    for part in parts:
        part.result()
    if interrupted is not None:
        raise interrupted


def _split(kernel: Any, keys: int, item: int) -> Any:
    """``kernel`` with a block's rows split into ``torch.get_num_threads()`` parts.

    The calling thread runs one part and a pool of the others' size the rest, and the call
    returns when all are done: the pass runs between a block's torch products, never beside
    them, so it uses the cores torch's intra-op threads use and adds no thread to theirs.
    """
    threads = torch.get_num_threads()
    if threads <= 1:
        return kernel
    pool = _pool(threads)

    def call(s: int, dp: int, lse: int, row0: int, rows: int, *fixed: Any) -> None:
        if rows < 2 or rows * keys < SPLIT_MIN:
            kernel(s, dp, lse, row0, rows, *fixed)
            return
        per = -(-rows // threads)
        parts = [
            pool.submit(
                kernel,
                s + r * keys * item,
                dp and dp + r * keys * item,
                lse + r * item,
                row0 + r,
                min(per, rows - r),
                *fixed,
            )
            for r in range(per, rows, per)
        ]
        try:
            kernel(s, dp, lse, row0, per, *fixed)
        finally:
            _join(parts)

    return call


def _bias_args(bias: Any) -> tuple[int, ...]:
    """The compiled routine's view of a ``(bias4, inner)`` layout: address, element strides, inner rows.

    Strides are 0 along the sizes of 1 (broadcast): the routine reads the bias by index, no copy.
    """
    if bias is None:
        return (0, 0, 0, 0, 0, 1)
    bias4, inner = bias
    strides = (0 if size == 1 else stride for size, stride in zip(bias4.shape, bias4.stride(), strict=True))
    return (bias4.data_ptr(), *strides, inner)


def _block_buffer(q: Any, n: int, length: int, keys: int) -> Any:
    """A flat buffer as large as the largest block of :func:`blocks` (its scores or their gradient)."""
    rows = max(1, BLOCK // max(keys, 1))
    size = min(n * length, rows if rows < length else rows // max(length, 1) * length) * keys
    return q.new_empty(max(size, keys))


def _prepared(q: Any, k: Any, v: Any, bias: Any) -> tuple[Any, Any, Any, Any]:
    """q, k, v detached in the compute dtype, and bias as its ``(bias4, inner)`` layout (or None)."""
    ct = _compute_dtype(q.dtype)
    q, k, v = (t.detach().to(ct) for t in (q, k, v))
    if bias is not None:
        bias = bias_layout(bias.detach().to(ct), q.shape[0], q.shape[1], k.shape[1])
    return q, k, v, bias


def forward(
    q: Any, k: Any, v: Any, bias: Any, dropout_p: float, scale: float, seed: int, step: int, is_causal: bool
) -> tuple[Any, Any]:
    """``(out, lse)`` of attention with dropout, computed block by block (see the module docs)."""
    if q.is_cuda and k.shape[1] and (cuda := _cuda_module()) is not None:  # no keys: the blocked code's zeros
        bias = _contract_bias(bias, q.shape[0])
        return cast(tuple[Any, Any], cuda.forward(q, k, v, bias, dropout_p, scale, seed, step, is_causal))
    dtype = q.dtype
    q, k, v, bias = _prepared(q, k, v, bias)
    n, length, _ = q.shape
    keys = k.shape[1]
    lse = torch.full((n, length), -math.inf, dtype=q.dtype, device=q.device)
    if keys == 0:  # no key: every row's weights are empty, its output 0 (torch's SDPA)
        return torch.zeros((n, length, v.shape[2]), dtype=dtype, device=q.device), lse
    out = q.new_empty((n, length, v.shape[2]))
    kk = keep_count(dropout_p)
    a = scale_for(kk, torch, q.dtype)  # the compute dtype's, as the JAX and Triton kernels
    mm = _mm_kernel(q, v)
    if mm is not None:
        q, k, v = (t.contiguous() for t in (q, k, v))
        _forward_mm(mm, q, k, v, bias, out, lse, (scale, is_causal, seed, step, kk, a))
        return out.to(dtype), lse
    kernel = _fused_kernel(q)
    if kernel is not None:
        _forward_fused(kernel, q, k, v, bias, out, lse, (scale, is_causal, seed, step, kk, a))
        return out.to(dtype), lse
    keep = _keep_drawer(q.device, seed, step, kk, length, keys)
    for n0, n1, i0, i1 in blocks(n, length, keys):
        s = _scores(q, k, bias, scale, is_causal, n0, n1, i0, i1)
        top = s.amax(-1, keepdim=True)
        top.masked_fill_(top == -math.inf, 0.0)  # a fully masked row: weights 0, as torch's math path
        s.sub_(top).exp_()
        total = s.sum(-1, keepdim=True)
        lse[n0:n1, i0:i1] = (top + total.log()).squeeze(-1)
        s.div_(total.masked_fill_(total == 0, 1.0))
        if dropout_p > 0:
            s.mul_(a).masked_fill_(~keep(n0, n1, i0, i1), 0.0)
        torch.matmul(s, v[n0:n1], out=out[n0:n1, i0:i1])
    return out.to(dtype), lse


def _fused_args(q: Any, k: Any, bias: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """What the compiled routine takes after a block's ``(s, dp, lse, row0, rows)``, fixed for one call."""
    scale, is_causal, seed, step, kk, a = args
    return (q.shape[1], k.shape[1], scale, *_bias_args(bias), is_causal, seed, step, kk, a, False)


def _forward_fused(kernel: Any, q: Any, k: Any, v: Any, bias: Any, out: Any, lse: Any, args: tuple[Any, ...]) -> None:
    """Fill ``out`` and ``lse``: per block, ``q k^T`` (BLAS) into one buffer, the compiled pass
    (scale, bias, causal mask, softmax, lse, keep mask and dropout scale) in place, then ``P v``."""
    n, length, _ = q.shape
    keys = k.shape[1]
    fixed = _fused_args(q, k, bias, args)
    buf = _block_buffer(q, n, length, keys)
    item = lse.element_size()
    kernel = _split(kernel, keys, item)
    for n0, n1, i0, i1 in blocks(n, length, keys):
        row0, rows = n0 * length + i0, (n1 - n0) * (i1 - i0)
        s = buf[: rows * keys].view(n1 - n0, i1 - i0, keys)
        torch.matmul(q[n0:n1, i0:i1], k[n0:n1].transpose(1, 2), out=s)
        kernel(s.data_ptr(), 0, lse.data_ptr() + row0 * item, row0, rows, *fixed)
        torch.matmul(s, v[n0:n1], out=out[n0:n1, i0:i1])


def _add_bias_grad(dbias: Any, inner: int, ds: Any, n0: int, n1: int, i0: int, i1: int) -> None:
    """Add a block's score gradient ``ds`` into ``dbias`` (the bias's layout), summed where the bias broadcasts."""
    _, bi, lb, sb = dbias.shape
    for a, c, index in _bias_runs(dbias, inner, n0, n1, i0, i1):
        g = ds[a:c]
        if bi == 1:
            g = g.sum(0, keepdim=True)
        if lb == 1:
            g = g.sum(1, keepdim=True)
        if sb == 1:
            g = g.sum(2, keepdim=True)
        dbias[index].add_(g)


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
    seed: int,
    step: int,
    is_causal: bool,
    bias_grad: bool = False,
) -> tuple[Any, ...]:
    """``(dq, dk, dv)``, and ``dbias`` if ``bias_grad``: each block's weights computed again from ``lse``,
    the mask drawn again."""
    if q.is_cuda and k.shape[1] and not bias_grad and (cuda := _cuda_module()) is not None:
        return cast(
            tuple[Any, Any, Any],
            cuda.backward(
                dout, q, k, v, _contract_bias(bias, q.shape[0]), out, lse, dropout_p, scale, seed, step, is_causal
            ),
        )
    dtypes = (q.dtype, k.dtype, v.dtype)
    bias_in = bias
    q, k, v, bias = _prepared(q, k, v, bias)
    n, length, _ = q.shape
    keys = k.shape[1]
    dout = dout.detach().to(q.dtype).contiguous()
    contiguous = torch.contiguous_format  # the compiled routines index them as C-contiguous
    # every row of dq is written where there are keys
    dq = torch.empty_like(q, memory_format=contiguous) if keys else torch.zeros_like(q)
    dk = torch.zeros_like(k, memory_format=contiguous)
    dv = torch.zeros_like(v, memory_format=contiguous)
    dbias = None if bias is None else torch.zeros_like(bias[0])
    kk = keep_count(dropout_p)
    a = scale_for(kk, torch, q.dtype)
    kernel = _fused_kernel(q)
    mm = None if bias_grad else _mm_kernel(q, v)
    if mm is not None and keys:
        q, k, v = (t.contiguous() for t in (q, k, v))
        _backward_mm(mm, q, k, v, bias, (dout, lse, dq, dk, dv, None), (scale, is_causal, seed, step, kk, a))
    elif kernel is not None and keys:
        grads_of = (dout, lse, dq, dk, dv, dbias if bias_grad else None)
        _backward_fused(kernel, q, k, v, bias, grads_of, (scale, is_causal, seed, step, kk, a))
    elif keys:
        keep = _keep_drawer(q.device, seed, step, kk, length, keys)
        for n0, n1, i0, i1 in blocks(n, length, keys):
            s = _scores(q, k, bias, scale, is_causal, n0, n1, i0, i1)
            top = lse[n0:n1, i0:i1, None].to(q.dtype)
            s.sub_(top.masked_fill(top == -math.inf, 0.0)).exp_()  # P, the weights before dropout
            g = dout[n0:n1, i0:i1]
            dp = torch.matmul(g, v[n0:n1].transpose(1, 2))  # gradient of the dropped weights
            if dropout_p > 0:
                drop = ~keep(n0, n1, i0, i1)
                dropped = (s * a).masked_fill_(drop, 0.0)
                dp.mul_(a).masked_fill_(drop, 0.0)  # gradient of the weights before dropout
            else:
                dropped = s
            dv[n0:n1] += torch.matmul(dropped.transpose(1, 2), g)
            ds = s * (dp - (s * dp).sum(-1, keepdim=True))  # softmax's backward: the biased scores' gradient
            if bias_grad and dbias is not None:
                _add_bias_grad(dbias, bias[1], ds, n0, n1, i0, i1)
            ds.mul_(scale)
            torch.matmul(ds, k[n0:n1], out=dq[n0:n1, i0:i1])
            dk[n0:n1] += torch.matmul(ds.transpose(1, 2), q[n0:n1, i0:i1])
    grads = tuple(t.to(d) for t, d in zip((dq, dk, dv), dtypes, strict=True))
    if not bias_grad:
        return grads
    if dbias is None:
        raise ValueError("bias_grad needs a bias")
    return (*grads, dbias.reshape(bias_in.shape).to(bias_in.dtype))


def _backward_fused(
    kernel: Any, q: Any, k: Any, v: Any, bias: Any, grads_of: tuple[Any, ...], args: tuple[Any, ...]
) -> None:
    """Accumulate ``dq``, ``dk``, ``dv`` (and ``dbias``): per block, ``q k^T`` and ``dout v^T`` (BLAS) into
    two buffers, the compiled pass turning them into the dropped weights and the scores' gradient
    ``dS`` (before the score scale, which the products apply), then the four products."""
    dout, lse, dq, dk, dv, dbias = grads_of
    n, length, _ = q.shape
    keys = k.shape[1]
    scale = args[0]
    fixed = _fused_args(q, k, bias, args)
    lse = lse.detach().to(q.dtype).contiguous()
    sbuf, dsbuf = _block_buffer(q, n, length, keys), _block_buffer(q, n, length, keys)
    item = lse.element_size()
    kernel = _split(kernel, keys, item)
    for n0, n1, i0, i1 in blocks(n, length, keys):
        row0, rows = n0 * length + i0, (n1 - n0) * (i1 - i0)
        s = sbuf[: rows * keys].view(n1 - n0, i1 - i0, keys)
        ds = dsbuf[: rows * keys].view(n1 - n0, i1 - i0, keys)
        g = dout[n0:n1, i0:i1]
        torch.matmul(q[n0:n1, i0:i1], k[n0:n1].transpose(1, 2), out=s)
        torch.matmul(g, v[n0:n1].transpose(1, 2), out=ds)
        kernel(s.data_ptr(), ds.data_ptr(), lse.data_ptr() + row0 * item, row0, rows, *fixed)
        dv[n0:n1].baddbmm_(s.transpose(1, 2), g)  # s: the dropped weights
        if dbias is not None:
            _add_bias_grad(dbias, bias[1], ds, n0, n1, i0, i1)
        dq_block = dq[n0:n1, i0:i1]
        torch.baddbmm(dq_block, ds, k[n0:n1], beta=0, alpha=scale, out=dq_block)  # beta 0: dq_block unread
        dk[n0:n1].baddbmm_(ds.transpose(1, 2), q[n0:n1, i0:i1], alpha=scale)
