"""Argument checks shared by the public functions.

Each check names the argument and the offending value, and raises before any
work is done, so nothing is half-written.
"""

from __future__ import annotations

import math
import sys
from numbers import Integral, Real
from types import ModuleType
from typing import Any, cast

from ._compat import array_namespace, is_array_api_obj, is_jax_array, is_torch_namespace, namespace_name

MAX_U64 = (1 << 64) - 1


def check_probability(p: Any, name: str = "p") -> float:
    """``p`` as a float in [0, 1]; TypeError for a non-real, ValueError otherwise."""
    if isinstance(p, bool) or not isinstance(p, Real):
        raise TypeError(f"{name} must be a real number in [0, 1], got {name}={p!r} of type {type(p).__name__}")
    value = float(p)
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {name}={p!r}")
    return value


def check_u64(value: Any, name: str) -> int:
    """``value`` as an int in [0, 2**64).

    A JAX integer array is taken too: a concrete one as its value, a traced one
    as two uint32 words that only the JAX kernels read (see ``_kernels._jax``).
    """
    if "jax" in sys.modules:  # a traced value already split into words stays so
        from ._kernels._jax import TracedU64

        if isinstance(value, TracedU64):
            return cast(int, value)
    if is_jax_array(value):
        from ._kernels._jax import TracedU64, jax_u64

        value = jax_u64(value, name)
        if isinstance(value, TracedU64):
            return cast(int, value)  # it stands in for an int while JAX traces
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer in [0, 2**64), got {name}={value!r} of type {type(value).__name__}")
    if not 0 <= int(value) <= MAX_U64:
        raise ValueError(f"{name} must be an integer in [0, 2**64), got {name}={value!r}")
    return int(value)


def check_float_array(x: Any, name: str = "x") -> ModuleType:
    """The namespace of ``x``, which must be a real floating array."""
    if not is_array_api_obj(x):
        raise TypeError(
            f"{name} must be an array (NumPy, PyTorch, CuPy, JAX, Dask, ...), got {name} of type {type(x).__name__}"
        )
    xp = array_namespace(x)
    if is_torch_namespace(xp) and str(x.layout) != "torch.strided":  # sparse: no flat element order
        raise TypeError(f"{name} must be a dense (strided) tensor, got {name}.layout={x.layout}")
    if not xp.isdtype(x.dtype, "real floating"):
        raise TypeError(f"{name} must have a real floating dtype, got {name}.dtype={x.dtype}")
    return xp


def check_shape(shape: Any, name: str = "shape") -> tuple[int, ...]:
    """``shape`` as a tuple of non-negative ints (an int is a 1-d shape)."""
    dims = (shape,) if isinstance(shape, Integral) else shape
    try:
        out = tuple(int(d) for d in dims if isinstance(d, Integral) and not isinstance(d, bool) and int(d) >= 0)
        ok = len(out) == len(tuple(dims))
    except TypeError:
        ok = False
    if not ok:
        raise TypeError(f"{name} must be a tuple of non-negative ints, got {name}={shape!r}")
    return out


def check_flag(value: Any, name: str) -> bool:
    """``value`` as a bool; only ``True`` and ``False`` are accepted (``None`` would silently mean False)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {name}={value!r} of type {type(value).__name__}")
    return value


def check_mask_size(shape: tuple[int, ...], name: str = "shape") -> int:
    """The number of elements of ``shape``, which must be below 2**64 (the stream's flat indices are 64-bit)."""
    n = math.prod(shape)
    if n > MAX_U64:
        raise ValueError(
            f"{name} must have fewer than 2**64 elements (the stream's flat indices are 64-bit), "
            f"got {name}={shape!r} with {n} elements"
        )
    return n


def check_device(xp: ModuleType, device: Any, name: str = "device") -> None:
    """Raise a ValueError naming ``device`` unless ``xp`` can make arrays on it."""
    if device is None:
        return
    try:
        xp.empty(0, device=device)
    except Exception:  # each library raises its own type (ValueError, RuntimeError, AssertionError)
        raise ValueError(
            f"{name} must be a device of the {namespace_name(xp)} namespace, got {name}={device!r}"
        ) from None


def resolve_noise_shape(noise_shape: Any, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The mask shape: ``shape`` itself, or ``noise_shape`` with ``None`` filled in.

    Keras semantics: one entry per axis of ``x``; each is ``None`` (take x's
    size), x's size, or 1 (one decision shared along that axis).
    """
    if noise_shape is None:
        return shape
    try:
        entries = tuple(noise_shape)
    except TypeError:
        entries = None
    if entries is None or len(entries) != len(shape):
        raise ValueError(
            f"noise_shape must have one entry per axis of x.shape={shape}, got noise_shape={noise_shape!r}"
        )
    out = []
    for axis, (n, d) in enumerate(zip(entries, shape, strict=True)):
        if n is None:
            out.append(d)
        elif isinstance(n, Integral) and not isinstance(n, bool) and int(n) in (1, d):
            out.append(int(n))
        else:
            raise ValueError(
                f"noise_shape[{axis}] must be None, 1 or x.shape[{axis}]={d}, got noise_shape={noise_shape!r}"
            )
    return tuple(out)
