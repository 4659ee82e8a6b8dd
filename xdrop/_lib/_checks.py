"""The argument gate: :func:`check_call`, which every dropout function and variant passes through.

It checks array, p, noise shape, impl, the block and training, in the order
of the bad-input table, and raises before any work is done, so nothing is
half-written; the seed is resolved last, by ``_call.resolve_seed``, so a
rejected call never advances a Generator. The single checks it is made of live
in :mod:`xdrop._lib._values` (below the stream and the block arithmetic, which use
them too) and are re-exported here, so layers, ``cs231n`` and the variants
import every check from one module.
"""

from __future__ import annotations

from typing import Any

from ._compat import ArrayType
from ._sharding import Block, ambient_placed, resolve_block, shared_axes_rule
from ._values import (
    IMPLS,
    MAX_REPR,
    MAX_U64,
    check_array,
    check_device,
    check_dtype,
    check_flag,
    check_float_array,
    check_impl,
    check_integer,
    check_mask_memory,
    check_mask_size,
    check_noise_shape,
    check_probability,
    check_sequence,
    check_shape,
    check_u64,
    max_mask_bytes,
    resolve_noise_shape,
    show,
)

__all__ = [
    "IMPLS",
    "MAX_REPR",
    "MAX_U64",
    "check_array",
    "check_call",
    "check_device",
    "check_dtype",
    "check_flag",
    "check_float_array",
    "check_impl",
    "check_integer",
    "check_mask_memory",
    "check_mask_size",
    "check_noise_shape",
    "check_probability",
    "check_sequence",
    "check_shape",
    "check_u64",
    "max_mask_bytes",
    "resolve_noise_shape",
    "show",
]


def check_call(
    x: Any,
    p: Any,
    *,
    impl: Any,
    training: Any = True,
    noise_shape: Any = None,
    rule: Any = None,
    global_shape: Any = None,
    global_start: Any = None,
) -> tuple[ArrayType, float, tuple[int, ...], Block | None] | None:
    """The gate of the dropout functions: ``(array type, p, mask shape, block)``, or ``None`` when not training.

    Checks, in this order: ``x``, ``p``, the mask shape (``rule(x.shape)`` for
    a variant, else ``noise_shape``), ``impl``, the block (``global_shape`` and
    ``global_start``, or the ambient placement; ``None`` without them), ``training``.
    The caller then selects the kernel (which may still refuse ``impl`` for this
    array) and resolves the seed last. A new keyword is checked here, before
    ``training``, so every function gets it.
    """
    at = check_array(x)
    p = check_probability(p)
    shape = tuple(x.shape)
    mask_shape = rule(shape) if rule is not None else resolve_noise_shape(noise_shape, shape)
    check_impl(impl)
    block = None
    if global_shape is not None or global_start is not None or ambient_placed():  # else no block work at all
        global_noise = rule if rule is not None else shared_axes_rule(noise_shape, shape)
        block = resolve_block(at.xp, shape, global_shape, global_start, impl, global_noise)
    if not check_flag(training, "training"):
        return None
    return at, p, mask_shape, block
