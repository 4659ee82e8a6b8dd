"""A seed or step that is a traced JAX value: carried as two ``uint32`` words that only the JAX kernels read.

A step counter carried through a jitted training loop is a tracer, not an int:
:func:`jax_u64` turns it into a :class:`TracedU64`, which rides in the ``int``
slot of the kernel signature. Any integer use of it outside the JAX kernels
(another kernel, the reference) raises a TypeError saying what to do instead;
that is how every other backend refuses a traced value. Imports JAX only when
given a JAX value.
"""

from __future__ import annotations

from typing import Any, cast

from ..random._words import MASK32

TRACED_HELP = (
    "only dropout of a JAX array with impl='auto' accepts a traced seed or step; "
    "elsewhere pass a Python int (under jax.jit: close over it or mark it static with static_argnames)"
)


class TracedU64:
    """A seed or step given as a traced JAX value: its low and high ``uint32`` words.

    It rides in the ``int`` slot of the kernel signature while JAX traces. The
    JAX kernels read its words; any integer use elsewhere (a non-JAX kernel, the
    reference) raises a TypeError that says what to do instead.
    """

    __slots__ = ("hi", "lo", "name")

    def __init__(self, name: str, lo: Any, hi: Any) -> None:
        self.name, self.lo, self.hi = name, lo, hi

    def __repr__(self) -> str:
        return f"TracedU64({self.name}: lo={self.lo!r}, hi={self.hi!r})"

    def _refuse(self, *_: Any) -> Any:
        raise TypeError(f"{self.name} is a traced JAX value: {TRACED_HELP}")

    __and__ = __rand__ = __rshift__ = __lshift__ = __mod__ = __floordiv__ = __int__ = __index__ = _refuse


def jax_u64(value: Any, name: str) -> int:
    """A JAX integer ``value`` as a seed or step: an int if concrete, a :class:`TracedU64` if traced.

    Accepted: a 0-d integer array (traced ones must be unsigned, since a
    negative value cannot be rejected while tracing), or a ``uint32`` array of
    two words ``(low, high)`` for a 64-bit value without x64. The caller checks
    the range of a concrete value.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    dtype, shape = value.dtype, tuple(value.shape)
    if not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(f"{name} must be an integer in [0, 2**64), got a JAX array of dtype {dtype}")
    pair = shape == (2,) and dtype == jnp.uint32
    if shape != () and not pair:
        raise TypeError(
            f"{name} must be a 0-d JAX integer or a uint32 array of 2 words (low, high), got shape {shape} {dtype}"
        )
    if not isinstance(value, jax.core.Tracer):
        # Read on the host: indexing a concrete array (value[0]) under jit tracing gives a tracer.
        words = [int(w) for w in np.asarray(value).reshape(-1)]
        return words[0] | words[1] << 32 if pair else words[0]
    if pair:
        return cast(int, TracedU64(name, value[0], value[1]))
    if not jnp.issubdtype(dtype, jnp.unsignedinteger):
        raise TypeError(
            f"{name} is a traced {dtype} JAX value; traced values must be unsigned (a negative one cannot be "
            f"rejected under tracing): pass {name}.astype(jnp.uint32), or a uint32 array of 2 words (low, high)"
        )
    if dtype.itemsize <= 4:
        return cast(int, TracedU64(name, value.astype(jnp.uint32), jnp.zeros((), jnp.uint32)))
    return cast(int, TracedU64(name, (value & MASK32).astype(jnp.uint32), (value >> 32).astype(jnp.uint32)))


def next_words(words: Any) -> Any:
    """``value + 1`` on a JAX ``(low, high)`` uint32 pair, with the carry; wraps after 2**64 - 1.

    Traceable: a jitted training loop advances its step pair with it (JAX without
    ``jax_enable_x64`` has no 64-bit integer to add to).
    """
    import jax.numpy as jnp

    lo = words[0] + jnp.uint32(1)
    return jnp.stack([lo, words[1] + (lo == 0).astype(jnp.uint32)])
