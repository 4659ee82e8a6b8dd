"""JAX attention on the CPU through the host kernel's compiled routine: two host callbacks.

Where a call runs on the CPU (``jax.lax.platform_dependent``: the choice is
made when the function is lowered) and the routine can take it (float32,
float16 or bfloat16; feature sizes E and Ev multiples of 16; no bias, no
boolean mask, at least one query and one key; the compiled kernel's avx2 or
avx512 variant), the forward and the backward of
:func:`xdrop._kernels.jax._attention.attention` are ``jax.pure_callback``
calls of :mod:`xdrop._kernels.host._attention_mm`, the routine torch's CPU
attention runs: xdrop's own matrix products, the row pass and the mask in one
pass over tiles of query rows, on the process's cores. What autograd keeps is
the same as the XLA path's (the inputs, out and one log-sum-exp per row), and
the keep decisions are stream v1's at the same flat indices (a shared mask:
``(L, S)``'s), so the two paths agree to rounding and draw the same bits.

Why: XLA:CPU computes the Philox words at about 1 ns each (a million-weight
mask took 1.05 ms, on a 2-core AMD EPYC, family 26) and its matrix products
at Eigen's speed, and the O(L) residual design draws the mask and computes
``q k^T`` again in the backward; the routine draws the words with AVX-512 or
AVX2 and runs its own FMA tiles.

A host callback does not serialize: ``jax.export`` of such a function fails
(JAX names the callback). Pass ``host_kernel=False`` to
:func:`~xdrop._kernels.jax._attention.attention` (and to
:func:`xdrop.flax.dot_product_attention`) to keep every platform on XLA.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import numpy as np

from ..._lib._stream import keep_count, scale_for
from ..host import _attention_mm as attention_mm

__all__ = ["backward", "forward", "routine"]

# False: every call through XLA's operations (the tests compare the two paths).
HOST = True


def routine(q: Any, k: Any, v: Any, bias: Any, mask: Any) -> Any:
    """The compiled routine where the call can take it on the CPU, else None."""
    import jax.numpy as jnp

    if not HOST or bias is not None or mask is not None:
        return None
    if q.dtype not in (jnp.float32, jnp.float16, jnp.bfloat16):
        return None
    (length, e), keys, ev = q.shape[-2:], k.shape[-2], v.shape[-1]
    if not (math.prod(q.shape[:-2]) and length and keys and e and ev) or e % 16 or ev % 16:
        return None
    from ..host import _native

    lib = _native.library()
    return None if lib is None else lib.attention_mm


def _fixed(cfg: Any, length: int, keys: int, words: Any) -> tuple[Any, ...]:
    """The routine's trailing arguments: sizes, scale, no bias, the stream and the dropout scale."""
    w = [int(x) for x in np.asarray(words, dtype=np.uint32)]
    kk = keep_count(cfg.dropout_p)
    a = scale_for(kk, np, np.float32)
    seed, step = w[0] | w[1] << 32, w[2] | w[3] << 32
    return (length, keys, cfg.scale, 0, 0, 0, 0, 0, 1, cfg.is_causal, seed, step, kk, a, cfg.shared)


def _problems(*arrays: Any) -> list[Any]:
    """The arrays as C-contiguous float32 ``(N, rows, features)`` NumPy arrays (views where they are)."""
    return [np.ascontiguousarray(np.asarray(x), np.float32).reshape(-1, *x.shape[-2:]) for x in arrays]


def _forward_host(q: Any, k: Any, v: Any, words: Any, *, cfg: Any, kernel: Any) -> tuple[Any, Any]:
    lead = q.shape[:-2]
    q3, k3, v3 = _problems(q, k, v)
    n, length, _ = q3.shape
    out = np.empty((n, length, v3.shape[2]), np.float32)
    lse = np.empty((n, length), np.float32)
    fixed = _fixed(cfg, length, k3.shape[1], words)
    attention_mm.forward(kernel, q3, k3, v3, out, lse, fixed, attention_mm.cpu_threads(), 0)
    return out.reshape(*lead, *out.shape[1:]), lse.reshape(*lead, length)


def _backward_host(dout: Any, q: Any, k: Any, v: Any, lse: Any, words: Any, *, cfg: Any, kernel: Any) -> Any:
    shapes = (q.shape, k.shape, v.shape)
    dout3, q3, k3, v3 = _problems(dout, q, k, v)
    lse2 = np.ascontiguousarray(np.asarray(lse), np.float32).reshape(q3.shape[:2])
    dq, dk, dv = np.empty_like(q3), np.zeros_like(k3), np.zeros_like(v3)
    fixed = _fixed(cfg, q3.shape[1], k3.shape[1], words)
    attention_mm.backward(kernel, q3, k3, v3, (dout3, lse2, dq, dk, dv), fixed, attention_mm.cpu_threads(), 0)
    return tuple(g.reshape(s) for g, s in zip((dq, dk, dv), shapes, strict=True))


def _call(fn: Any, shapes: Any, *args: Any) -> Any:
    """``jax.pure_callback``, one call per slice under ``jax.vmap`` (each slice its own call, as on XLA)."""
    import jax

    return jax.pure_callback(fn, shapes, *args, vmap_method="sequential")


def _operands(words: Any, *arrays: Any) -> tuple[Any, ...]:
    import jax.numpy as jnp

    return (*(x.astype(jnp.float32) for x in arrays), jnp.stack([jnp.asarray(w, jnp.uint32) for w in words]))


def forward(q: Any, k: Any, v: Any, words: Any, cfg: Any) -> tuple[Any, Any]:
    """``(out, lse)`` as :func:`xdrop._kernels.jax._attention._forward` gives them (lse float32)."""
    import jax
    import jax.numpy as jnp

    kernel = routine(q, k, v, None, None)
    struct: Any = jax.ShapeDtypeStruct
    shapes = (struct((*q.shape[:-1], v.shape[-1]), jnp.float32), struct(q.shape[:-1], jnp.float32))
    out, lse = _call(partial(_forward_host, cfg=cfg, kernel=kernel), shapes, *_operands(words, q, k, v))
    return out.astype(v.dtype), lse


def backward(dout: Any, q: Any, k: Any, v: Any, lse: Any, words: Any, cfg: Any) -> tuple[Any, Any, Any]:
    """``(dq, dk, dv)`` in q's, k's and v's dtypes, the mask drawn again."""
    import jax
    import jax.numpy as jnp

    kernel = routine(q, k, v, None, None)
    struct: Any = jax.ShapeDtypeStruct
    shapes = tuple(struct(x.shape, jnp.float32) for x in (q, k, v))
    grads = _call(partial(_backward_host, cfg=cfg, kernel=kernel), shapes, *_operands(words, dout, q, k, v, lse))
    dq, dk, dv = (g.astype(x.dtype) for g, x in zip(grads, (q, k, v), strict=True))
    return dq, dk, dv
