"""JAX kernels: stream spec v1 compiled by ``jax.jit``, with seed and step static or traced.

JAX's default mode (no x64) has no 64-bit integers, so every 64-bit quantity —
seed, step, block counter — is carried as two ``uint32`` words, exactly as the
reference does; nothing here needs ``jax_enable_x64``. The kernels are plain JAX
functions, so ``jax.jit``, ``jax.grad`` and ``jax.vmap`` apply to them: the
gradient of ``where(keep, x * scale, 0)`` is ``where(keep, dout * scale, 0)``,
dropout of the cotangent, bit for bit.

A seed or step may be a *traced* JAX integer (a step counter carried through a
jitted training loop, say): ``xdrop._lib._traced`` turns it into a ``TracedU64``
of two ``uint32`` words, which only these kernels read.
"""

from __future__ import annotations

import functools
import math
from typing import Any

from ..._lib import _sharding
from ..._lib._stream import KEEP_ALL_OR_NONE, TWO32
from ..._lib._traced import TracedU64
from ..._lib._u64 import to_words
from ...random._philox import DEFAULT_ROUNDS, philox_rounds
from ...random._words import MASK32, add_with_carry, mulhilo


def _words(value: int | TracedU64) -> tuple[Any, Any]:
    """``(low, high)`` uint32 words of a seed or step."""
    import jax.numpy as jnp

    if isinstance(value, TracedU64):
        return value.lo, value.hi
    lo, hi = to_words(value)
    return jnp.asarray(lo, dtype=jnp.uint32), jnp.asarray(hi, dtype=jnp.uint32)


def _keep_at(s0: Any, s1: Any, t0: Any, t1: Any, threshold: Any, e_lo: Any, e_hi: Any) -> Any:
    """Keep decisions of the flat indices ``e_hi * 2**32 + e_lo`` (uint32 arrays), 0 < K < 2**32.

    Each element computes the Philox block of its own index and keeps its lane:
    four times the arithmetic of computing each block once, but it fuses into
    one loop. (Interleaving the four words of each block with stack/reshape
    makes XLA:CPU about 50 times slower here.) Being elementwise in the index,
    it partitions under GSPMD like the iota it starts from.
    """
    import jax.numpy as jnp

    w0, w1, w2, w3 = philox_rounds((e_lo >> 2) | (e_hi << 30), e_hi >> 2, t0, t1, s0, s1, DEFAULT_ROUNDS)
    lane = e_lo & 3
    word = jnp.where(lane == 0, w0, jnp.where(lane == 1, w1, jnp.where(lane == 2, w2, w3)))
    return word < threshold


def _keep(s0: Any, s1: Any, t0: Any, t1: Any, threshold: Any, start_lo: Any, start_hi: Any, n: int) -> Any:
    """Keep decisions of flat indices ``start .. start + n - 1`` for 0 < K < 2**32 (n static)."""
    import jax.numpy as jnp

    e_lo, carry = add_with_carry(jnp.arange(n, dtype=jnp.uint32), start_lo)
    return _keep_at(s0, s1, t0, t1, threshold, e_lo, start_hi + carry)


def _global_index(shape: tuple[int, ...], global_shape: tuple[int, ...], starts: Any) -> tuple[Any, Any]:
    """Flat global indices of the block (``shape``, at ``starts``) of ``global_shape``, as two uint32 words.

    Built from one iota per axis, so a sharded output partitions it without communication.
    ``starts`` is a uint32 array of one start per axis, concrete or traced.
    """
    import jax
    import jax.numpy as jnp

    lo = jnp.zeros(shape, jnp.uint32)
    hi = jnp.zeros(shape, jnp.uint32)
    for axis, stride in enumerate(_sharding.strides(global_shape)):
        if global_shape[axis] == 1:
            continue
        i = jax.lax.broadcasted_iota(jnp.uint32, shape, axis) + starts[axis]  # < 2**32: checked by the caller
        p_hi, p_lo = mulhilo(i, stride & MASK32)
        p_hi = p_hi + i * jnp.uint32(stride >> 32)  # the product is below 2**64: no overflow is dropped
        lo, carry = add_with_carry(lo, p_lo)
        hi = hi + p_hi + carry
    return lo, hi


def _block_dropout(
    x: Any, s0: Any, s1: Any, t0: Any, t1: Any, threshold: Any, scale: Any, starts: Any, global_shape: tuple[int, ...]
) -> Any:
    import jax.numpy as jnp

    keep = _keep_at(s0, s1, t0, t1, threshold, *_global_index(tuple(x.shape), global_shape, starts))
    return jnp.where(keep, x * scale, jnp.zeros_like(x))


def _block_keep(
    s0: Any,
    s1: Any,
    t0: Any,
    t1: Any,
    threshold: Any,
    starts: Any,
    shape: tuple[int, ...],
    global_shape: tuple[int, ...],
) -> Any:
    return _keep_at(s0, s1, t0, t1, threshold, *_global_index(shape, global_shape, starts))


def _dropout(x: Any, s0: Any, s1: Any, t0: Any, t1: Any, threshold: Any, scale: Any) -> Any:
    import jax.numpy as jnp

    zero = jnp.zeros((), dtype=jnp.uint32)
    keep = _keep(s0, s1, t0, t1, threshold, zero, zero, x.size).reshape(x.shape)
    return jnp.where(keep, x * scale, jnp.zeros_like(x))


@functools.cache
def _compiled() -> tuple[Any, Any]:
    """The jitted kernels, built on first use (``import xdrop`` must not import jax).

    Only shapes are static: one compilation per shape and dtype, whatever p, seed and step.
    """
    import jax

    return jax.jit(_dropout), jax.jit(_keep, static_argnames=("n",))


@functools.cache
def _compiled_block() -> tuple[Any, Any]:
    """The jitted block kernels: static global shape (and mask shape), traced starts."""
    import jax

    return (
        jax.jit(_block_dropout, static_argnames=("global_shape",)),
        jax.jit(_block_keep, static_argnames=("shape", "global_shape")),
    )


def _starts(block: _sharding.Block) -> Any:
    """The block's starts as one uint32 array (entries may be traced)."""
    import jax.numpy as jnp

    if any(d > TWO32 for d in block.shape):
        raise ValueError(f"the JAX kernels take global_shape axes of at most 2**32, got global_shape={block.shape}")
    return (
        jnp.stack([jnp.asarray(s, dtype=jnp.uint32) for s in block.start]) if block.start else jnp.zeros(0, jnp.uint32)
    )


def jax_block_dropout(x: Any, seed: int, step: int, k: int, scale: float, block: _sharding.Block) -> Any:
    """Dropout of the JAX array ``x`` as ``block`` of a larger array (starts may be traced)."""
    import jax.numpy as jnp

    _check_size(x.size)
    starts = _starts(block)
    if k in KEEP_ALL_OR_NONE or x.size == 0:
        return jnp.where(jnp.full(x.shape, k == TWO32), x * scale, jnp.zeros_like(x))
    threshold = jnp.asarray(k, dtype=jnp.uint32)
    fn = _compiled_block()[0]
    return fn(x, *_words(seed), *_words(step), threshold, jnp.asarray(scale, dtype=x.dtype), starts, block.shape)


def jax_block_mask(shape: tuple[int, ...], block: _sharding.Block, seed: int, step: int, k: int, dev: Any) -> Any:
    """Keep decisions (bool, ``shape``) of ``block`` for JAX (starts may be traced)."""
    import jax
    import jax.numpy as jnp

    _check_size(math.prod(shape))
    starts = _starts(block)
    if k in KEEP_ALL_OR_NONE or math.prod(shape) == 0:
        keep = jnp.full(shape, k == TWO32)
    else:
        threshold = jnp.asarray(k, dtype=jnp.uint32)
        keep = _compiled_block()[1](*_words(seed), *_words(step), threshold, starts, shape, block.shape)
    return keep if dev is None else jax.device_put(keep, dev)


def _check_size(n: int) -> None:
    if n > TWO32:
        raise ValueError(f"the JAX kernels draw at most 2**32 elements at once, got {n}")


def jax_dropout(x: Any, xp: Any, seed: int, step: int, k: int, scale: float) -> Any:
    """The dropout kernel for JAX arrays: one compiled XLA computation per shape and dtype."""
    import jax.numpy as jnp

    _check_size(x.size)
    if k in KEEP_ALL_OR_NONE or x.size == 0:
        return jnp.where(jnp.full(x.shape, k == TWO32), x * scale, jnp.zeros_like(x))
    threshold = jnp.asarray(k, dtype=jnp.uint32)
    return _compiled()[0](x, *_words(seed), *_words(step), threshold, jnp.asarray(scale, dtype=x.dtype))


def jax_mask(xp: Any, start: int, n: int, seed: int, step: int, k: int, dev: Any) -> Any:
    """The mask kernel for JAX: keep decisions of flat indices ``start .. start + n - 1``."""
    import jax
    import jax.numpy as jnp

    _check_size(n)
    if k in KEEP_ALL_OR_NONE or n == 0:
        keep = jnp.full((n,), k == TWO32)
    else:
        threshold = jnp.asarray(k, dtype=jnp.uint32)
        keep = _compiled()[1](*_words(seed), *_words(step), threshold, *_words(start), n=n)
    return keep if dev is None else jax.device_put(keep, dev)
