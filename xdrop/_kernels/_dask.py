"""Dask kernels: lazy, chunk-invariant dropout through ``map_blocks``.

Each chunk is a block of the whole array (itself possibly a block of a larger
one, given by ``global_shape``/``global_start``): it draws the keep decisions
of its own *global* flat indices with the NumPy mask kernel (a fast path, or
the reference for ``impl="reference"``) through :func:`xdrop._lib._sharding.block_keep`,
so any chunking gives the bits of NumPy on the whole array, nothing is computed
at call time, and a task's memory is bounded by a small multiple of its chunk.
Each task learns where its chunk lies from its ``block_id`` and the regular
chunk size along each axis (O(ndim) per task, and nothing built per chunk at
call time: a lazy mask of 2**48 elements, 2**21 chunks, builds in about two
seconds, mostly Dask's own bookkeeping of chunk sizes); chunks of irregular
sizes, which only a user's array has, take their place from Dask's
``block_info``, a dict Dask builds per chunk when the array is built. Either
way the graph grows linearly with the number of chunks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .._lib._compat import array_namespace, numpy_namespace
from .._lib._sharding import CALL_COST_IN_DRAWS, MAX_SPAN_FACTOR, Block, MaskFn, block_keep
from .._lib._stream import STREAM_VERSION
from ._engines import numpy_mask

__all__ = ["CALL_COST_IN_DRAWS", "MAX_SPAN_FACTOR", "chunk_keep", "dask_dropout", "dask_mask"]


def chunk_keep(shape: tuple[int, ...], origin: tuple[int, ...], cshape: tuple[int, ...], mask: MaskFn) -> np.ndarray:
    """Keep decisions (bool, ``cshape``) of the chunk at ``origin`` of an array of ``shape``.

    ``mask(start, n)`` gives the 1-d decisions of flat indices ``start .. start + n - 1``.
    """
    return np.asarray(block_keep(numpy_namespace(), Block(shape, origin), cshape, mask))


def _numpy_mask(seed: int, step: int, k: int, impl: str) -> MaskFn:
    xp = numpy_namespace()
    kernel = numpy_mask(xp, impl)
    return lambda start, n: np.asarray(kernel(xp, start, n, seed, step, k, None))


Spacing = tuple[int, ...]


def regular_spacing(chunks: tuple[tuple[float, ...], ...]) -> Spacing | None:
    """Each axis's chunk size where every chunk along it but the last has that size (Dask's own
    layouts), so chunk ``i`` starts at ``i * size``; else ``None``."""
    sizes = []
    for axis in chunks:
        first = axis[0]
        if axis[:-1].count(first) != len(axis) - 1 or axis[-1] > first:  # count: no Python loop per chunk
            return None
        sizes.append(int(first))
    return tuple(sizes)


def _origin(
    start: tuple[int, ...], spacing: Spacing | None, block_id: tuple[int, ...] | None, block_info: Any
) -> tuple[int, ...]:
    """The chunk's first index along each axis in the global array (the array starts at ``start``)."""
    if spacing is not None and block_id is not None:
        return tuple(s + i * c for s, i, c in zip(start, block_id, spacing, strict=True))
    return tuple(s + lo for s, (lo, _) in zip(start, block_info[None]["array-location"], strict=True))


def _located(spacing: Spacing | None) -> Callable[..., Any]:
    """The chunk function for ``map_blocks``: one that asks Dask for ``block_id`` (lazy, O(1) to build) where
    the chunks are regular, else for ``block_info`` (built per chunk)."""
    return _at_block_id if spacing is not None else _at_block_info


def _at_block_id(chunk_fn: Callable[..., Any], block: Any, *, block_id: tuple[int, ...], **kw: Any) -> Any:
    return chunk_fn(block, block_id=block_id, block_info=None, **kw)


def _at_block_info(chunk_fn: Callable[..., Any], block: Any, *, block_info: dict[Any, Any], **kw: Any) -> Any:
    return chunk_fn(block, block_id=None, block_info=block_info, **kw)


def _check_known(chunks: tuple[tuple[float, ...], ...], name: str) -> None:
    if any(math.isnan(c) for axis in chunks for c in axis):
        raise ValueError(
            f"{name} must have known chunk sizes, got {name}.chunks={chunks}; call {name}.compute_chunk_sizes() first"
        )


def _dropout_block(block: Any, *, scale: float, **where: Any) -> Any:
    """Dropout of one chunk; ``where`` holds :func:`_mask_block`'s keywords."""
    keep = _mask_block(block, **where)
    xp = array_namespace(block)
    if not isinstance(block, np.ndarray):  # e.g. CuPy chunks: the decisions are drawn on the host
        keep = xp.asarray(keep)
    return xp.where(keep, block * scale, xp.zeros_like(block))


def _mask_block(
    block: Any,
    *,
    shape: tuple[int, ...],
    start: tuple[int, ...],
    seed: int,
    step: int,
    k: int,
    impl: str,
    spacing: Spacing | None,
    block_id: tuple[int, ...] | None,
    block_info: Any,
) -> np.ndarray:
    origin = _origin(start, spacing, block_id, block_info)
    return chunk_keep(shape, origin, tuple(block.shape), _numpy_mask(seed, step, k, impl))


def dask_dropout(impl: str, block: Block | None = None) -> Callable[[Any, Any, int, int, int, float], Any]:
    """The dropout kernel for Dask arrays; each chunk uses the NumPy kernels of ``impl``.

    ``block``: where the Dask array lies in a larger array (``None``: it is the whole array).
    """

    def kernel(x: Any, xp: Any, seed: int, step: int, k: int, scale: float) -> Any:
        from dask.array.utils import meta_from_array
        from dask.base import tokenize

        _check_known(x.chunks, "x")
        where = block or Block(tuple(x.shape), (0,) * x.ndim)
        token = tokenize(x, seed, step, k, scale, impl, where, STREAM_VERSION)
        meta = meta_from_array(x, ndim=x.ndim)  # type: ignore[no-untyped-call]  # dask ships no annotations for it
        return _map_chunks(_dropout_block, x, f"xdrop-dropout-{token}", meta, where, seed, step, k, impl, scale=scale)

    return kernel


def _map_chunks(
    chunk_fn: Callable[..., Any],
    array: Any,
    name: str,
    meta: Any,
    where: Block,
    seed: int,
    step: int,
    k: int,
    impl: str,
    **extra: Any,
) -> Any:
    """``chunk_fn`` over the chunks of ``array`` (a lazy array like ``meta``), each told where it lies in ``where``."""
    import dask.array as da

    spacing = regular_spacing(array.chunks)
    return da.map_blocks(  # type: ignore[no-untyped-call]  # dask ships no annotations for it
        _located(spacing),
        chunk_fn,
        array,
        dtype=meta.dtype,
        meta=meta,
        name=name,
        shape=where.shape,
        start=where.start,
        seed=seed,
        step=step,
        k=k,
        impl=impl,
        spacing=spacing,
        **extra,
    )


def dask_mask(impl: str) -> Callable[[Any, int, int, int, int, int, Any], Any]:
    """The mask kernel for Dask: a lazy 1-d bool array in chunks of Dask's default size."""

    def kernel(xp: Any, start: int, n: int, seed: int, step: int, k: int, dev: Any) -> Any:
        # flat indices start .. start + n - 1 are the block at (start,) of a 1-d array of start + n
        return dask_block_mask((n,), Block((start + n,), (start,)), seed, step, k, impl)

    return kernel


def dask_block_mask(shape: tuple[int, ...], block: Block, seed: int, step: int, k: int, impl: str) -> Any:
    """Lazy keep decisions (bool, ``shape``) of ``block``, in chunks of Dask's default size."""
    import dask.array as da
    from dask.base import tokenize

    slots = da.empty(shape, dtype=bool)  # never computed: it only lays out the chunks (Dask's regular layout)
    token = tokenize(shape, block, seed, step, k, impl, STREAM_VERSION)
    meta = np.empty((0,) * len(shape), dtype=bool)
    return _map_chunks(_mask_block, slots, f"xdrop-mask-{token}", meta, block, seed, step, k, impl)
