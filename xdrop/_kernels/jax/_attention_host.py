"""JAX attention on the CPU through the host kernel's compiled routine: two XLA custom calls.

Where a call runs on the CPU (``jax.lax.platform_dependent``: the choice is
made when the function is lowered) and the routine can take it (float32,
float16 or bfloat16; feature sizes E and Ev multiples of 16; no bias, no
boolean mask, at least one query and one key; the compiled kernel's avx2 or
avx512 variant; ``jax.ffi``), the forward and the backward of
:func:`xdrop._kernels.jax._attention.attention` are ``jax.ffi.ffi_call``
custom calls of the extension's handlers (``xla_attention.c``), which run the
routine torch's CPU attention runs on XLA's own buffers: xdrop's own matrix
products, the row pass and the mask in one pass over tiles of query rows, on
XLA's own intra-op threads (one task per core the process may use; POSIX
threads where the runtime has no pool for custom calls). What autograd keeps
is the same as the XLA path's (the inputs, out and one log-sum-exp per row),
and the keep decisions are stream v1's at the same flat indices (a shared mask:
``(L, S)``'s), so the two paths agree to rounding and draw the same bits.
Flax's ``(B, L, H, E)`` arrays go to the handlers as they are
(``heads_inner``): no transpose around the calls.

Why: XLA:CPU computes the Philox words at about 1 ns each (a million-weight
mask took 1.05 ms on a 2-core AMD EPYC, family 26) and its matrix products at
Eigen's speed, and the O(L) residual design draws the mask and computes
``q k^T`` again in the backward; the routine draws the words with AVX-512 or
AVX2 and runs its own FMA tiles. A ``jax.pure_callback`` version of the same
calls took 1 to 2 ms more per step at L = 256 (Python, copies and page faults
around each call).

A custom call of this kind does not serialize: ``jax.export`` of such a
function fails (JAX names the target). Pass ``host_kernel=False`` to
:func:`~xdrop._kernels.jax._attention.attention` to keep every platform on
XLA's operations.
"""

from __future__ import annotations

import math
import os
import threading
from typing import Any

import numpy as np

from ..._lib._stream import keep_count, scale_for

__all__ = ["backward", "forward", "routine"]

# False: every call through XLA's operations (the tests compare the two paths).
HOST = True


def routine(q: Any, k: Any, v: Any, bias: Any, mask: Any) -> Any:
    """The compiled kernel (``_native.Kernels``) whose handlers take the call on the CPU, else None."""
    import jax.numpy as jnp

    if not HOST or bias is not None or mask is not None:
        return None
    if q.dtype not in (jnp.float32, jnp.float16, jnp.bfloat16):
        return None
    (length, e), keys, ev = q.shape[-2:], k.shape[-2], v.shape[-1]
    if not (math.prod(q.shape[:-2]) and length and keys and e and ev) or e % 16 or ev % 16:
        return None
    return _library()


def _library() -> Any:
    """The compiled kernel if it has the handlers (avx2/avx512 variants, POSIX) and JAX has ``jax.ffi``."""
    import jax

    from ..host import _native

    lib = _native.library()
    if lib is None or lib.attention_mm is None or not hasattr(lib.handle, "xla_handlers"):
        return None
    return lib if hasattr(jax, "ffi") and hasattr(jax.ffi, "ffi_call") else None


_registered: set[str] = set()
_registering = threading.Lock()


def _target(lib: Any, direction: str) -> str:
    """The XLA FFI target of the variant's handler (``fwd`` or ``bwd``), registered on first use."""
    import jax

    name = f"xdrop_attention_{direction}_{lib.variant}"
    with _registering:  # two threads tracing at once register it once
        if name not in _registered:
            for key, capsule in lib.handle.xla_handlers().items():
                if key.endswith(lib.variant) and f"xdrop_{key}" not in _registered:
                    jax.ffi.register_ffi_target(f"xdrop_{key}", capsule, platform="cpu")
                    _registered.add(f"xdrop_{key}")
    return name


def _params(words: Any, cfg: Any, q_ndim: int) -> Any:
    """The handlers' uint32[12]: the seed's and step's words (traced or not), then K, the scale and the
    dropout scale (float64 bits), the flags and the thread count, fixed when the function is traced."""
    import jax.numpy as jnp

    kk = keep_count(cfg.dropout_p)
    a = float(scale_for(kk, np, np.float32))
    doubles = np.array([cfg.scale, a], np.float64).view(np.uint32)  # little-endian: low word first
    flags = cfg.is_causal | cfg.shared << 1 | _heads_inner(cfg, q_ndim) << 2
    fixed = np.array([kk & 0xFFFFFFFF, kk >> 32, *doubles, flags, _cpu_threads()], np.uint32)
    return jnp.concatenate([jnp.stack([jnp.asarray(w, jnp.uint32) for w in words]), jnp.asarray(fixed)])


def _cpu_threads() -> int:
    """The cores this process may run on (its affinity where the platform tells it, else the CPU count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _heads_inner(cfg: Any, q_ndim: int) -> bool:
    """Whether the call takes ``(B, rows, H, F)`` arrays (Flax's layout) rather than ``(..., rows, F)``."""
    return bool(cfg.heads_inner) and q_ndim == 4


def _problems(cfg: Any, *arrays: Any) -> list[Any]:
    """The arrays as float32, ``(B, rows, H, F)`` with heads inner (as they are), else ``(N, rows, F)``."""
    import jax.numpy as jnp

    inner = _heads_inner(cfg, arrays[0].ndim)
    return [x.astype(jnp.float32) if inner else x.astype(jnp.float32).reshape(-1, *x.shape[-2:]) for x in arrays]


def _ffi(lib: Any, direction: str, shapes: Any) -> Any:
    """The variant's handler as a JAX function (each slice one call under ``jax.vmap``)."""
    import jax

    return jax.ffi.ffi_call(_target(lib, direction), shapes, vmap_method="sequential")


def forward(q: Any, k: Any, v: Any, words: Any, cfg: Any) -> tuple[Any, Any]:
    """``(out, lse)`` as :func:`xdrop._kernels.jax._attention._forward` gives them (lse float32)."""
    import jax
    import jax.numpy as jnp

    lib = _library()  # attention() chose this path: routine() took the call
    q3, k3, v3 = _problems(cfg, q, k, v)
    struct: Any = jax.ShapeDtypeStruct
    lse_shape = (q.shape[0], q.shape[2], q.shape[1]) if _heads_inner(cfg, q.ndim) else q3.shape[:-1]
    shapes = (struct((*q3.shape[:-1], v3.shape[-1]), jnp.float32), struct(lse_shape, jnp.float32))
    out, lse = _ffi(lib, "fwd", shapes)(q3, k3, v3, _params(words, cfg, q.ndim))
    return out.reshape(*q.shape[:-1], v.shape[-1]).astype(v.dtype), lse  # lse: for backward alone


def backward(dout: Any, q: Any, k: Any, v: Any, lse: Any, words: Any, cfg: Any) -> tuple[Any, Any, Any]:
    """``(dq, dk, dv)`` in q's, k's and v's dtypes, the mask drawn again."""
    import jax
    import jax.numpy as jnp

    lib = _library()
    dout3, q3, k3, v3 = _problems(cfg, dout, q, k, v)
    struct: Any = jax.ShapeDtypeStruct
    shapes = tuple(struct(x.shape, jnp.float32) for x in (q3, k3, v3))
    grads = _ffi(lib, "bwd", shapes)(dout3, q3, k3, v3, lse, _params(words, cfg, q.ndim))
    dq, dk, dv = (g.reshape(x.shape).astype(x.dtype) for g, x in zip(grads, (q, k, v), strict=True))
    return dq, dk, dv
