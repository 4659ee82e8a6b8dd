"""ONNX translation of ``torch.ops.xdrop.dropout``: stream spec v1 in standard ONNX operators.

``torch.onnx.export(..., dynamo=True)`` translates each node of the exported
graph with an onnxscript function; :func:`dropout` is the one for xdrop's
operator (:func:`translations` maps the operator to it). It writes the keep
decisions of stream spec v1 (:mod:`xdrop._lib._stream`) as ONNX nodes, so an ONNX
runtime draws the same masks as eager torch:

- the words of Philox4x32-10 are ``uint64`` tensors holding values in
  ``[0, 2**32)``: a 32x32-bit product fits in ``uint64`` exactly, its high
  word is ``product >> 32`` and its low word ``product & (2**32 - 1)``; key
  additions are masked the same way, and xors of words stay words;
- ``(seed, step)`` arrive as the operator's int64 tensor of shape ``(2,)``
  (two's-complement bits of the u64 values), cast to ``uint64``;
- the operators used are ``Mul``, ``Add``, ``BitShift``, ``BitwiseAnd``,
  ``BitwiseXor`` and ``GreaterOrEqual`` on ``uint64``, ``Cast``, ``Range``,
  ``Gather``, ``Expand``, ``ReduceProd``, ``Div``, ``Reshape``, ``Concat``, ``Slice``, ``Where``
  (opset 18), all of which ONNX Runtime's CPU kernels implement for these
  types; none of them rounds, so the mask is exact;
- the output is ``where(keep, x * a, c)`` (``x * a + b`` for alpha dropout),
  the product and the sum each rounded once to ``x``'s dtype, as torch rounds
  them (float16 and bfloat16 through float32, where they are exact).

The operator's ``(k, a, b, c)`` are constants of the graph (torch.export
records them); its ``noise_shape`` may hold dynamic sizes (``dynamic_shapes``).
:func:`export` is ``xdrop.torch.onnx_export``: it also turns the tensors the
``(seed, step)`` pairs are built from (the layers' buffers) into graph inputs.
This module imports onnxscript: only ``onnx_export`` imports it, never
``import xdrop`` or ``import xdrop.torch``.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx_ir as ir
import torch
from onnxscript import opset18

from ..._lib._stream import WORDS_PER_BLOCK, keep_count, scale_for
from ...random._philox import DEFAULT_ROUNDS, PHILOX_M0, PHILOX_M1, PHILOX_W0, PHILOX_W1
from ...random._words import MASK32
from . import _attention_op  # noqa: F401  (registers xdrop::attention)
from . import _ops as _torch_ops

# onnxscript's typed opset: the words here are uint64, which its stubs' type variables do not all admit.
op: Any = opset18
# Dtypes whose product is taken in float32 and rounded back once, as torch's CPU kernels do.
_NARROW = {ir.DataType.FLOAT16, ir.DataType.BFLOAT16}


def _u64(value: int) -> Any:
    """A uint64 scalar constant."""
    return op.Constant(value=ir.tensor(np.array(value, dtype=np.uint64)))


def _i64(values: Sequence[int]) -> Any:
    """An int64 1-d constant."""
    return op.Constant(value=ir.tensor(np.array(values, dtype=np.int64)))


def _mulhilo(word: Any, multiplier: int) -> tuple[Any, Any]:
    """High and low 32-bit words of ``word * multiplier`` (a word times a constant below 2**32)."""
    product = op.Mul(word, _u64(multiplier))  # < 2**64: exact in uint64
    return op.BitShift(product, _u64(32), direction="RIGHT"), op.BitwiseAnd(product, _u64(MASK32))


def _philox(c0: Any, c1: Any, c2: Any, c3: Any, k0: Any, k1: Any) -> tuple[Any, Any, Any, Any]:
    """Philox4x32-10 on uint64 words (xdrop.random._philox.philox_rounds, in ONNX nodes)."""
    for r in range(DEFAULT_ROUNDS):
        if r:
            k0 = op.BitwiseAnd(op.Add(k0, _u64(PHILOX_W0)), _u64(MASK32))
            k1 = op.BitwiseAnd(op.Add(k1, _u64(PHILOX_W1)), _u64(MASK32))
        hi0, lo0 = _mulhilo(c0, PHILOX_M0)
        hi1, lo1 = _mulhilo(c2, PHILOX_M1)
        c0, c1, c2, c3 = op.BitwiseXor(op.BitwiseXor(hi1, c1), k0), lo1, op.BitwiseXor(op.BitwiseXor(hi0, c3), k1), lo0
    return c0, c1, c2, c3


def _shape(shape: Sequence[Any]) -> Any:
    """An int64 1-d tensor of ``shape``, whose entries are ints or int64 scalars (dynamic sizes)."""
    if all(isinstance(d, int) for d in shape):
        return _i64(list(shape))
    return op.Concat(*(_i64([d]) if isinstance(d, int) else op.Reshape(d, _i64([1])) for d in shape), axis=0)


def drop_mask(seed_step: Any, k: int, shape: Sequence[Any]) -> Any:
    """Where stream v1 drops (bool, ``shape``, ``word >= k``) for the int64 pair ``seed_step``, as ONNX nodes.

    ``shape`` may hold dynamic sizes (int64 scalars): the flat index count is computed in the graph.
    """
    pair = op.Cast(seed_step, to=ir.DataType.UINT64)  # two's-complement bits: the u64 seed and step
    low = op.BitwiseAnd(pair, _u64(MASK32))
    high = op.BitShift(pair, _u64(32), direction="RIGHT")
    k0, c2 = op.Gather(low, _i64([0]), axis=0), op.Gather(low, _i64([1]), axis=0)
    k1, c3 = op.Gather(high, _i64([0]), axis=0), op.Gather(high, _i64([1]), axis=0)
    dims = _shape(shape)
    n = op.ReduceProd(dims, keepdims=1)  # shape (1,); 1 for a 0-d mask
    blocks_needed = op.Div(op.Add(n, _i64([WORDS_PER_BLOCK - 1])), _i64([WORDS_PER_BLOCK]))  # ceil, n >= 0
    blocks = op.Range(op.Constant(value_int=0), op.Squeeze(blocks_needed, _i64([0])), op.Constant(value_int=1))
    block = op.Cast(blocks, to=ir.DataType.UINT64)
    c0 = op.BitwiseAnd(block, _u64(MASK32))
    c1 = op.BitShift(block, _u64(32), direction="RIGHT")
    words = _philox(c0, c1, op.Expand(c2, op.Shape(block)), op.Expand(c3, op.Shape(block)), k0, k1)
    # Lane j of block b is flat index 4 b + j: stack the four words on a last axis, flatten, cut to n.
    flat = op.Reshape(op.Concat(*(op.Unsqueeze(w, _i64([1])) for w in words), axis=1), _i64([-1]))
    flat = op.Slice(flat, _i64([0]), n)
    drop = op.GreaterOrEqual(flat, _u64(k))  # k <= 2**32: k = 2**32 keeps every element, k = 0 none
    return op.Reshape(drop, dims)


def _scalar_like(value: float, dtype: ir.DataType) -> Any:
    return op.Constant(value=ir.tensor(np.array(value, dtype=dtype.numpy())))


def _rounded(binary: Callable[[Any, Any], Any], x: Any, value: float, dtype: ir.DataType) -> Any:
    """``binary(x, value)`` rounded once to ``dtype``: float16 and bfloat16 through float32, where the product
    or sum of two such numbers is exact before the one rounding (as torch's CPU kernels compute them)."""
    if dtype not in _NARROW:
        return binary(x, _scalar_like(value, dtype))
    return op.Cast(binary(op.Cast(x, to=ir.DataType.FLOAT), _scalar_like(value, ir.DataType.FLOAT)), to=dtype)


def dropout(
    x: Any,
    seed_step: Any,
    k: int,
    noise_shape: Sequence[int],
    a: float,
    b: float,
    c: float,
    impl: str = "auto",
) -> Any:
    """``torch.ops.xdrop.dropout(x, seed_step, k, noise_shape, a, b, c, impl)`` in ONNX nodes (``impl`` is unused:
    every kernel draws the same bits)."""
    _SEEN.append(seed_step)
    dtype = x.dtype
    drop = drop_mask(seed_step, k, noise_shape)
    kept = _rounded(op.Mul, x, a, dtype)
    if b != 0.0:  # alpha dropout: x * a, rounded, plus b, rounded (no add when b = 0: -0.0 stays -0.0)
        kept = _rounded(op.Add, kept, b, dtype)
    # ONNX Runtime's CPU Where has no bfloat16 kernel: select in float32, which holds every bfloat16 exactly.
    select = ir.DataType.FLOAT if dtype == ir.DataType.BFLOAT16 else dtype
    if select != dtype:
        kept = op.Cast(kept, to=select)
    # ONNX Runtime's CPU Where returns +0 where it selects a -0 from its first operand (X), and keeps the
    # second's (Y) bits: the kept values go in Y; a constant -0 goes in Y too, negated around the Where.
    if math.copysign(1.0, c) < 0:
        out = op.Neg(op.Where(drop, _scalar_like(-c, select), op.Neg(kept)))
    else:
        out = op.Where(drop, _scalar_like(c, select), kept)
    return out if select == dtype else op.Cast(out, to=dtype)


_TORCH_DTYPES = {
    ir.DataType.FLOAT: torch.float32,
    ir.DataType.FLOAT16: torch.float16,
    ir.DataType.BFLOAT16: torch.bfloat16,
    ir.DataType.DOUBLE: torch.float64,
}


def _bias_added(scores: Any, bias: Any) -> Any:
    """``scores (N, L, S) + bias``, as the operator reads ``bias``.

    ``(Bo, Bi, Lb, Sb)``: rows ``N = No * Ni`` (``Ni`` is ``Bi`` where it is not 1, else
    ``N // Bo``), row ``n`` adding ``bias[n // Ni, n % Ni]``; ``(Nb, Lb, Sb)``: row ``n``
    adding ``bias[n // (N // Nb)]``.
    """
    shape = op.Shape(scores)
    rows = op.Shape(scores, start=0, end=1)
    if len(bias.shape) == 3:
        bias = op.Unsqueeze(bias, _i64([1]))  # (Nb, 1, Lb, Sb): Nb outer groups of N // Nb rows
    outer, inner = op.Shape(bias, start=0, end=1), op.Shape(bias, start=1, end=2)
    inner = op.Where(op.Equal(inner, _i64([1])), op.Div(rows, outer), inner)
    grouped = op.Reshape(scores, op.Concat(op.Div(rows, inner), inner, op.Shape(scores, start=1), axis=0))
    return op.Reshape(op.Add(grouped, bias), shape)


def attention(
    q: Any,
    k: Any,
    v: Any,
    bias: Any,
    seed_step: Any,
    dropout_p: float,
    scale: float,
    is_causal: bool,
) -> tuple[Any, Any]:
    """``torch.ops.xdrop.attention`` in ONNX nodes: ``(out, lse)``, the weights dropped with stream v1's mask
    at flat index ``(n * L + i) * S + j`` (the mask is exact; the matmuls and the softmax round as the
    runtime rounds them)."""
    _SEEN.append(seed_step)
    dtype = q.dtype
    scores = op.Mul(op.MatMul(q, op.Transpose(k, perm=[0, 2, 1])), _scalar_like(scale, dtype))
    if bias is not None:
        scores = _bias_added(scores, bias)
    if is_causal:  # key j > query i is masked out
        i = op.Range(
            op.Constant(value_int=0), op.Squeeze(op.Shape(q, start=1, end=2), _i64([0])), op.Constant(value_int=1)
        )
        j = op.Range(
            op.Constant(value_int=0), op.Squeeze(op.Shape(k, start=1, end=2), _i64([0])), op.Constant(value_int=1)
        )
        above = op.Greater(op.Unsqueeze(j, _i64([0])), op.Unsqueeze(i, _i64([1])))
        scores = op.Where(above, _scalar_like(-math.inf, dtype), scores)
    top = op.ReduceMax(scores, _i64([-1]), keepdims=1)
    top = op.Where(op.Equal(top, _scalar_like(-math.inf, dtype)), _scalar_like(0.0, dtype), top)  # a masked row
    weights = op.Exp(op.Sub(scores, top))
    total = op.ReduceSum(weights, _i64([-1]), keepdims=1)
    lse_dtype = ir.DataType.DOUBLE if dtype == ir.DataType.DOUBLE else ir.DataType.FLOAT
    lse = op.Cast(op.Squeeze(op.Add(top, op.Log(total)), _i64([-1])), to=lse_dtype)
    zero = _scalar_like(0.0, dtype)
    weights = op.Div(weights, op.Where(op.Equal(total, zero), _scalar_like(1.0, dtype), total))
    if dropout_p > 0:
        kk = keep_count(dropout_p)
        weights = op.Mul(weights, _scalar_like(scale_for(kk, torch, _TORCH_DTYPES[dtype]), dtype))
        shape = op.Shape(weights)
        dims = [op.Squeeze(op.Gather(shape, _i64([d]), axis=0), _i64([0])) for d in range(3)]
        weights = op.Where(drop_mask(seed_step, kk, dims), zero, weights)
    return op.MatMul(weights, v), lse


def translations() -> dict[Any, Callable[..., Any]]:
    """The ``custom_translation_table`` for ``torch.onnx.export``: xdrop's operators to their translations."""
    return {torch.ops.xdrop.dropout.default: dropout, torch.ops.xdrop.attention.default: attention}


# The ``seed_step`` values the translations received during the running export (one export at a time).
_SEEN: list[Any] = []
_LOCK = threading.Lock()


def state_initializers(graph: Any, seen: Sequence[Any]) -> list[Any]:
    """The initializers that the ``seed_step`` values in ``seen`` are computed from (buffers' seeds and steps),
    in graph order."""
    found: dict[str, Any] = {}
    stack = list(seen)
    visited: set[int] = set()
    while stack:
        value = stack.pop()
        if id(value) in visited:
            continue
        visited.add(id(value))
        if value.name in graph.initializers and graph.initializers[value.name] is value:
            found[value.name] = value
            continue
        node = value.producer()
        if node is not None:
            stack.extend(v for v in node.inputs if v is not None)
    return [v for name, v in graph.initializers.items() if name in found]


def export(model: Any, args: tuple[Any, ...], kwargs: dict[str, Any] | None, options: dict[str, Any]) -> Any:
    """``torch.onnx.export(model, args, dynamo=True)`` with xdrop's translations, the state as graph inputs.

    Each seed and step tensor that a dropout's ``(seed, step)`` is built from
    (a layer's buffers) becomes an input of the ONNX graph whose default is its
    value at export; the graph is optimized (constant folding) only after that,
    so no mask is folded into a constant.
    """
    table = {**translations(), **(options.pop("custom_translation_table", None) or {})}
    optimize = options.pop("optimize", True)
    options.setdefault("verbose", False)  # torch prints its progress to stdout unless told
    with _LOCK:
        _SEEN.clear()
        _torch_ops.ONNX_EXPORT[:] = [True]
        try:
            program: Any = torch.onnx.export(
                model, args, kwargs=kwargs, dynamo=True, custom_translation_table=table, optimize=False, **options
            )
        finally:
            _torch_ops.ONNX_EXPORT[:] = []
        graph = program.model.graph
        known = {id(v) for v in graph.inputs}
        graph.inputs.extend(v for v in state_initializers(graph, _SEEN) if id(v) not in known)
        _SEEN.clear()
    if optimize:
        # The pass that merges equal initializers logs a warning for each one that is a graph input: the
        # state inputs are so by design (two layers' equal steps must stay two inputs).
        dedup = logging.getLogger("onnx_ir.passes.common.initializer_deduplication")
        level = dedup.level
        dedup.setLevel(logging.ERROR)
        try:
            program.optimize()
        finally:
            dedup.setLevel(level)
    return program
