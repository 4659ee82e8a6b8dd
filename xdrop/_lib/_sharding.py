"""Blocks of a larger array: a block draws the decisions of its *global* flat indices.

The stream indexes elements by their flat row-major position, so the block of
an array of shape ``global_shape`` that starts at ``global_start`` only needs
those two tuples to draw exactly the decisions the whole array would have
there. This is what makes dropout layout-invariant: a Dask chunk, a DTensor
shard, a JAX shard or a rank's slice of the global batch each pass their place
in the whole.

A block is not one contiguous range of flat indices in general: it is ``runs``
contiguous runs (one per index of its leading axes) of ``run`` indices each.
When the runs lie close together, one range covering them all is drawn and
viewed as the block; otherwise each run is drawn on its own.
"""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass
from numbers import Integral
from types import ModuleType
from typing import Any

import numpy as np

from . import _values
from ._compat import is_jax_namespace

# Drawing one covering range instead of separate runs wastes (span - size) draws
# but saves a call per run; a call costs about as much as this many draws.
CALL_COST_IN_DRAWS = 4096
# The covering range is used only while its mask stays within this multiple of the block.
MAX_SPAN_FACTOR = 4

MaskFn = Callable[[int, int], Any]
NoiseRule = Callable[[tuple[int, ...]], tuple[int, ...]]


@dataclass(frozen=True)
class Block:
    """Where an array sits in a larger row-major array: its global shape and start.

    ``start`` holds Python ints, or (JAX only) traced unsigned JAX integers,
    e.g. derived from ``jax.lax.axis_index`` inside ``shard_map``.
    """

    shape: tuple[int, ...]
    start: tuple[Any, ...]

    @property
    def traced(self) -> bool:
        return not all(isinstance(s, int) for s in self.start)


def strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Row-major element strides of ``shape``."""
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return tuple(reversed(out))


def _is_jax_integer(value: Any) -> bool:
    if "jax" not in sys.modules:
        return False
    import jax
    import jax.numpy as jnp

    return isinstance(value, jax.Array) and value.shape == () and bool(jnp.issubdtype(value.dtype, jnp.integer))


def _start_entry(value: Any, axis: int, global_start: Any, jax_ok: bool) -> Any:
    if isinstance(value, Integral) and not isinstance(value, bool):
        if int(value) < 0:
            raise ValueError(f"global_start must be non-negative, got global_start={global_start!r}")
        return int(value)
    if _is_jax_integer(value):
        import jax
        import jax.numpy as jnp

        if not isinstance(value, jax.core.Tracer):
            return _start_entry(int(value), axis, global_start, jax_ok)
        if not jax_ok:
            raise TypeError(
                f"global_start[{axis}] is a traced JAX value: only JAX arrays with impl='auto' accept one; "
                "elsewhere pass Python ints"
            )
        if not jnp.issubdtype(value.dtype, jnp.unsignedinteger):
            raise TypeError(
                f"global_start[{axis}] is a traced {value.dtype} JAX value; traced starts must be unsigned "
                f"(a negative one cannot be rejected under tracing): pass it .astype(jnp.uint32)"
            )
        return value
    raise TypeError(
        f"global_start must be a tuple of non-negative ints, got global_start={global_start!r} "
        f"(entry {axis} of type {type(value).__name__})"
    )


def check_block(
    global_shape: Any, global_start: Any, shape: tuple[int, ...], *, jax_ok: bool = False, what: str = "x.shape"
) -> Block | None:
    """The :class:`Block` that ``global_shape`` and ``global_start`` describe for an array of ``shape``.

    ``None`` when neither is given. ``jax_ok`` allows traced JAX starts (the
    JAX kernels read them); their bounds cannot be checked while tracing.
    ``what`` names ``shape`` in messages (``"shape"`` for keep_mask's argument).
    """
    if global_shape is None and global_start is None:
        return None
    if global_shape is None or global_start is None:
        raise TypeError(
            "global_shape and global_start must be given together (or neither), got "
            f"global_shape={global_shape!r}, global_start={global_start!r}"
        )
    gshape = _values.check_shape(global_shape, "global_shape")
    _values.check_mask_size(gshape, "global_shape")
    try:
        entries = tuple(global_start)
    except TypeError:
        raise TypeError(
            f"global_start must be a tuple of non-negative ints, got global_start={global_start!r}"
        ) from None
    if len(gshape) != len(shape) or len(entries) != len(shape):
        raise ValueError(
            f"global_shape and global_start must have one entry per axis of {what}={shape}, got "
            f"global_shape={gshape}, global_start={global_start!r}"
        )
    start = tuple(_start_entry(v, a, global_start, jax_ok) for a, v in enumerate(entries))
    for a, (s, d, g) in enumerate(zip(start, shape, gshape, strict=True)):
        if isinstance(s, int) and s + d > g:
            raise ValueError(
                f"the block lies outside the global array: along axis {a}, global_start={s} + {what}={d} "
                f"> global_shape={g} (global_shape={gshape}, global_start={global_start!r}, {what}={shape})"
            )
    return Block(gshape, start)


def resolve_block(
    xp: ModuleType,
    shape: tuple[int, ...],
    global_shape: Any,
    global_start: Any,
    impl: str,
    global_noise: NoiseRule,
    what: str = "x.shape",
) -> Block | None:
    """The block (in the mask's index space) that ``global_shape``/``global_start`` give for ``shape``.

    Without them, the ambient placement's (see :func:`placed`), if any.
    ``global_noise(global_shape)`` is the global mask's shape (a variant's noise rule).
    """
    global_shape, global_start = ambient(global_shape, global_start, shape)
    jax_ok = is_jax_namespace(xp) and impl == "auto"
    block = check_block(global_shape, global_start, shape, jax_ok=jax_ok, what=what)
    return None if block is None else noise_block(block, global_noise(block.shape))


def shared_axes_rule(noise_shape: Any, shape: tuple[int, ...]) -> NoiseRule:
    """``noise_shape``'s rule on the global shape: an entry of 1 shares the decision along that axis.

    With a global array, ``noise_shape`` speaks of the global array: an entry of 1
    shares one decision along that axis of it, also where the block's own size
    there is 1 (a one-wide shard); ``None`` or the block's size means one decision
    per element along the axis.
    """
    if noise_shape is None:
        return lambda shape: shape
    ones = tuple(n is not None and n == 1 for n in noise_shape)
    return lambda shape: tuple(1 if one else d for one, d in zip(ones, shape, strict=True))


def local_noise(noise_shape: Any, shape: tuple[int, ...]) -> Any:
    """A DTensor's ``noise_shape`` (against its global ``shape``) as entries that hold for its shard."""
    if noise_shape is None:
        return None
    full = _values.resolve_noise_shape(noise_shape, shape)
    return tuple(1 if n == 1 and d != 1 else None for n, d in zip(full, shape, strict=True))


def noise_block(block: Block | None, global_noise: tuple[int, ...]) -> Block | None:
    """The block in the mask's index space: axes of size 1 in the global noise shape start at 0."""
    if block is None:
        return None
    return Block(global_noise, tuple(0 if g == 1 else s for g, s in zip(global_noise, block.start, strict=True)))


def is_whole(block: Block | None, shape: tuple[int, ...]) -> bool:
    """Whether ``block`` is the whole array (or absent): the ordinary, unsharded draw."""
    return block is None or (not block.traced and block.shape == shape and not any(block.start))


def first_and_span(block: Block, shape: tuple[int, ...]) -> tuple[int, int]:
    """The first flat global index of the block and the length of the range that covers it."""
    st = strides(block.shape)
    first = sum(o * s for o, s in zip(block.start, st, strict=True))
    span = 1 + sum((c - 1) * s for c, s in zip(shape, st, strict=True))
    return first, span


def contiguous_start(block: Block, shape: tuple[int, ...]) -> int | None:
    """The first global index when the block is one contiguous run of flat indices, else ``None``."""
    if block.traced or math.prod(shape) == 0:
        return None
    first, span = first_and_span(block, shape)
    return first if span == math.prod(shape) else None


def block_keep(xp: ModuleType, block: Block, shape: tuple[int, ...], mask: MaskFn) -> Any:
    """Keep decisions (bool, ``shape``) of the block, from ``mask(start, n)``: 1-d decisions of a range.

    Works in any namespace; NumPy results of the covering range are strided views (no copy).
    """
    size = math.prod(shape)
    if size == 0:
        return xp.reshape(mask(0, 0), shape)
    st = strides(block.shape)
    first, span = first_and_span(block, shape)
    if span == size:  # one contiguous range
        return xp.reshape(mask(first, size), shape)
    # axis j is the last axis the block does not cover in full: runs are contiguous from there on
    j = max(a for a in range(len(shape)) if shape[a] != block.shape[a])
    run = shape[j] * st[j]
    runs = size // run
    if span - size <= CALL_COST_IN_DRAWS * runs and span <= MAX_SPAN_FACTOR * size + CALL_COST_IN_DRAWS:
        covering = mask(first, span)
        if isinstance(covering, np.ndarray):
            covering = np.ascontiguousarray(covering)
            return np.lib.stride_tricks.as_strided(covering, shape=shape, strides=st, writeable=False)
        # Gather the block's elements from the covering range: indices of the block only (each below span).
        dev = getattr(covering, "device", None)
        itype = xp.int32 if span < 2**31 else xp.int64  # int32: JAX has no int64 by default
        index = xp.zeros(shape, dtype=itype, device=dev)
        for a, (c, s) in enumerate(zip(shape, st, strict=True)):
            if c > 1:  # an axis of length 1 adds 0 (its stride may pass int64)
                along = xp.arange(0, c * s, s, dtype=itype, device=dev)
                index = index + xp.reshape(along, tuple(c if b == a else 1 for b in range(len(shape))))
        return xp.reshape(xp.take(covering, xp.reshape(index, (size,))), shape)
    pieces = [
        xp.reshape(mask(first + sum(i * s for i, s in zip(lead, st, strict=False)), run), shape[j:])
        for lead in itertools.product(*(range(c) for c in shape[:j]))
    ]
    return xp.reshape(xp.stack(pieces), shape)


# -- where the layers put a call: an ambient block (the data-parallel global batch) -------------------

Placement = Callable[[tuple[int, ...]], tuple[tuple[int, ...], tuple[int, ...]]]
_ambient: ContextVar[Placement | None] = ContextVar("xdrop_ambient_block", default=None)
# The gate reads it directly (``AMBIENT.get() is None``: no block work), one C call per dropout call.
AMBIENT = _ambient
# How many ``placed`` contexts are open in any thread: while none is, the gate does not read the
# ContextVar at all (one list read; torch.compile cannot trace ContextVar.get, but can this).
_PLACED = [0]


def ambient_placed() -> bool:
    """Whether a placement may be ambient in this context (cheap, and traceable by torch.compile)."""
    return _PLACED[0] > 0 and _ambient.get() is not None


@contextmanager
def placed(placement: Placement) -> Iterator[None]:
    """Calls inside that give no ``global_shape``/``global_start`` take them from ``placement(x.shape)``.

    Used by :mod:`xdrop.distributed` to put a rank's slice of the batch in the global batch.
    """
    token = _ambient.set(placement)
    _PLACED[0] += 1
    try:
        yield
    finally:
        _PLACED[0] -= 1
        _ambient.reset(token)


def ambient(global_shape: Any, global_start: Any, shape: tuple[int, ...]) -> tuple[Any, Any]:
    """``global_shape``/``global_start`` as given, or from the ambient placement when neither is."""
    placement = _ambient.get()
    if placement is None or global_shape is not None or global_start is not None:
        return global_shape, global_start
    return placement(shape)


# -- torch DTensor: the local shard is the block its placements say ----------------------------------------


def is_dtensor(x: Any) -> bool:
    """Whether ``x`` is a torch ``DTensor`` (without importing torch when it is not loaded)."""
    mod = sys.modules.get("torch.distributed.tensor")
    return mod is not None and isinstance(x, mod.DTensor)


def check_dtensor(x: Any, name: str = "x") -> None:
    """A DTensor must have only Shard and Replicate placements: a Partial one is a pending sum."""
    from torch.distributed.tensor import Replicate, Shard

    bad = [p for p in x.placements if not isinstance(p, Shard | Replicate)]
    if bad:
        raise ValueError(
            f"{name} is a DTensor with placements {tuple(x.placements)}: only Shard and Replicate are supported "
            f"({bad[0]} is not; dropout of a pending partial sum is not the sum of the dropouts): "
            f"call {name}.redistribute(placements=...) with Shard/Replicate first"
        )


def unwrap_dtensor(x: Any, global_shape: Any, global_start: Any) -> tuple[Any, Any, Any, Callable[[Any], Any]]:
    """The local shard of DTensor ``x``, its place in the global array, and how to wrap a result like ``x``.

    The place composes with a given ``global_shape``/``global_start`` (the DTensor
    itself a block of a larger array). No communication: each rank draws its block.
    """
    from torch.distributed.tensor import DTensor
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    check_dtensor(x)
    _, offset = compute_local_shape_and_global_offset(tuple(x.shape), x.device_mesh, x.placements)
    if global_shape is None and global_start is None:
        global_shape, global_start = tuple(x.shape), offset
    elif global_shape is not None and global_start is not None:
        with suppress(TypeError, ValueError):  # else the local call's block check names the bad value
            global_start = tuple(s + o for s, o in zip(global_start, offset, strict=True))
    mesh, placements, shape, stride = x.device_mesh, x.placements, x.shape, x.stride()

    def wrap(out: Any) -> Any:
        return DTensor.from_local(out, mesh, placements, run_check=False, shape=shape, stride=stride)

    return x.to_local(), global_shape, global_start, wrap
