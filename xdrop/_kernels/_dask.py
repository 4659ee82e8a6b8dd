"""Dask kernels: lazy, chunk-invariant dropout through ``map_blocks``.

Each chunk computes the keep decisions of its own *global* flat indices with
the NumPy mask kernel (a fast path, or the reference for ``impl="reference"``),
so any chunking gives the bits of NumPy on the whole array, nothing is computed
at call time, and a task's memory is bounded by a small multiple of its chunk.

A chunk of an n-d array is not one contiguous range of flat indices: it is
``runs`` contiguous runs (one per index of its leading axes) of ``run`` indices
each. When the runs lie close together, one range covering them all is drawn
and viewed with the array's strides; otherwise each run is drawn on its own.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .._compat import array_namespace, numpy_namespace
from .._stream import STREAM_VERSION

# Drawing one covering range instead of separate runs wastes (span - size) draws
# but saves a call per run; a call costs about as much as this many draws.
CALL_COST_IN_DRAWS = 4096
# The covering range is used only while its mask stays within this multiple of the chunk.
MAX_SPAN_FACTOR = 4

MaskFn = Callable[[int, int], np.ndarray]


def _strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Row-major element strides of ``shape``."""
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return tuple(reversed(out))


def chunk_keep(shape: tuple[int, ...], origin: tuple[int, ...], cshape: tuple[int, ...], mask: MaskFn) -> np.ndarray:
    """Keep decisions (bool, ``cshape``) of the chunk at ``origin`` of an array of ``shape``.

    ``mask(start, n)`` gives the 1-d decisions of flat indices ``start .. start + n - 1``.
    """
    size = math.prod(cshape)
    if size == 0:
        return np.zeros(cshape, dtype=bool)
    strides = _strides(shape)
    first = sum(o * s for o, s in zip(origin, strides, strict=True))
    span = 1 + sum((c - 1) * s for c, s in zip(cshape, strides, strict=True))
    if span == size:  # one contiguous range
        return mask(first, size).reshape(cshape)
    # axis j is the last axis the chunk does not cover in full: runs are contiguous from there on
    j = max(a for a in range(len(shape)) if cshape[a] != shape[a])
    run = cshape[j] * strides[j]
    runs = size // run
    if span - size <= CALL_COST_IN_DRAWS * runs and span <= MAX_SPAN_FACTOR * size + CALL_COST_IN_DRAWS:
        covering = np.ascontiguousarray(mask(first, span))
        return np.lib.stride_tricks.as_strided(covering, shape=cshape, strides=strides, writeable=False)
    out = np.empty(cshape, dtype=bool)
    for lead in itertools.product(*(range(c) for c in cshape[:j])):
        start = first + sum(i * s for i, s in zip(lead, strides, strict=False))
        out[lead] = mask(start, run).reshape(cshape[j:])
    return out


def _numpy_mask(seed: int, step: int, k: int, impl: str) -> MaskFn:
    from . import select_mask

    xp = numpy_namespace()
    kernel = select_mask(xp, impl)
    return lambda start, n: np.asarray(kernel(xp, start, n, seed, step, k, None))


def _offsets(chunks: tuple[tuple[int, ...], ...]) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(itertools.accumulate(c[:-1], initial=0)) for c in chunks)


def _check_known(chunks: tuple[tuple[float, ...], ...], name: str) -> None:
    if any(math.isnan(c) for axis in chunks for c in axis):
        raise ValueError(
            f"{name} must have known chunk sizes, got {name}.chunks={chunks}; call {name}.compute_chunk_sizes() first"
        )


def _dropout_block(
    block: Any,
    *,
    shape: tuple[int, ...],
    offsets: tuple[tuple[int, ...], ...],
    seed: int,
    step: int,
    k: int,
    scale: float,
    impl: str,
    block_id: tuple[int, ...],
) -> Any:
    origin = tuple(offsets[axis][i] for axis, i in enumerate(block_id))
    keep = chunk_keep(shape, origin, tuple(block.shape), _numpy_mask(seed, step, k, impl))
    xp = array_namespace(block)
    if not isinstance(block, np.ndarray):  # e.g. CuPy chunks: the decisions are drawn on the host
        keep = xp.asarray(keep)
    return xp.where(keep, block * scale, xp.zeros_like(block))


def _mask_block(
    block: Any, *, offsets: tuple[int, ...], seed: int, step: int, k: int, impl: str, block_id: tuple[int]
) -> np.ndarray:
    return _numpy_mask(seed, step, k, impl)(offsets[block_id[0]], block.shape[0])


def dask_dropout(impl: str) -> Callable[[Any, Any, int, int, int, float], Any]:
    """The dropout kernel for Dask arrays; each chunk uses the NumPy kernels of ``impl``."""

    def kernel(x: Any, xp: Any, seed: int, step: int, k: int, scale: float) -> Any:
        import dask.array as da
        from dask.array.utils import meta_from_array
        from dask.base import tokenize

        _check_known(x.chunks, "x")
        token = tokenize(x, seed, step, k, scale, impl, STREAM_VERSION)
        return da.map_blocks(
            _dropout_block,
            x,
            dtype=x.dtype,
            meta=meta_from_array(x, ndim=x.ndim),
            name=f"xdrop-dropout-{token}",
            shape=tuple(x.shape),
            offsets=_offsets(x.chunks),
            seed=seed,
            step=step,
            k=k,
            scale=scale,
            impl=impl,
        )

    return kernel


def dask_mask(impl: str) -> Callable[[Any, int, int, int, int, int, Any], Any]:
    """The mask kernel for Dask: a lazy 1-d bool array in chunks of Dask's default size."""

    def kernel(xp: Any, start: int, n: int, seed: int, step: int, k: int, dev: Any) -> Any:
        import dask.array as da
        from dask.base import tokenize

        slots = da.empty((n,), dtype=bool)  # never computed: it only lays out the chunks
        offsets = tuple(start + o for o in _offsets(slots.chunks)[0])
        token = tokenize(start, n, seed, step, k, impl, STREAM_VERSION)
        return da.map_blocks(
            _mask_block,
            slots,
            dtype=bool,
            meta=np.empty((0,), dtype=bool),
            name=f"xdrop-mask-{token}",
            offsets=offsets,
            seed=seed,
            step=step,
            k=k,
            impl=impl,
        )

    return kernel
