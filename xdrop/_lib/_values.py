"""The single checks: each takes one argument, names it and its value in the error, and returns it checked.

Below everything that takes arguments (the stream's ``random.philox4x32``,
the block arithmetic, the gate :func:`xdrop._lib._checks.check_call`, the layers),
so each of them checks with the same words. The happy path is cheap: type
checks first, and what depends only on an array's ``(type, dtype)`` is found
once and cached (``_compat.array_type``, ``_FLOAT_TYPES``).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Sequence
from numbers import Integral, Real
from types import ModuleType
from typing import Any, cast

from ._compat import ArrayType, array_type, is_jax_array, namespace_name

MAX_U64 = (1 << 64) - 1
# Every impl name; each means one thing (see _kernels for what each runs).
IMPLS = ("auto", "reference", "blocked", "compiled", "cuda")
# Longest repr an error message shows in full; longer ones (p=10**400) are elided.
MAX_REPR = 60
# (type, dtype) pairs already seen to be real floating arrays xdrop can compute with.
_FLOAT_TYPES: set[tuple[type, Any]] = set()


def show(value: Any) -> str:
    """``repr(value)``, elided in the middle when longer than ``MAX_REPR`` characters."""
    text = repr(value)
    if len(text) <= MAX_REPR:
        return text
    return f"{text[:24]}...{text[-12:]} ({len(text)} characters)"


def check_impl(impl: Any) -> str:
    """``impl`` if it is one of :data:`IMPLS`."""
    if not isinstance(impl, str) or impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got impl={impl!r}")
    return impl


def check_probability(p: Any, name: str = "p") -> float:
    """``p`` as a float in [0, 1]: ``float(p)``, rounded once (a ``Decimal`` too, which is no ``numbers.Real``).

    TypeError for a non-real, ValueError otherwise.
    """
    if type(p) is float and 0.0 <= p <= 1.0:  # the common case, decided without the ABC check
        return p
    if isinstance(p, bool) or not (isinstance(p, Real) or _is_decimal(p)):
        raise TypeError(f"{name} must be a real number in [0, 1], got {name}={show(p)} of type {type(p).__name__}")
    try:
        value = float(p)
    except OverflowError:  # an int or Fraction beyond binary64 (p=10**400) is out of range, not a crash
        value = math.inf
    except ValueError:  # Decimal("sNaN")
        value = math.nan
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {name}={show(p)}")
    return value


def _is_decimal(value: Any) -> bool:
    """Whether ``value`` is a ``decimal.Decimal`` (none exists before decimal is imported: not imported here)."""
    decimal = sys.modules.get("decimal")
    return decimal is not None and isinstance(value, decimal.Decimal)


def check_u64(value: Any, name: str) -> int:
    """``value`` as an int in [0, 2**64).

    A JAX integer array is taken too: a concrete one as its value, a traced one
    as two uint32 words that only the JAX kernels read (see ``_traced``).
    """
    if type(value) is int and 0 <= value <= MAX_U64:  # the common case first
        return value
    if "jax" in sys.modules:  # a traced value already split into words stays so
        from ._traced import TracedU64

        if isinstance(value, TracedU64):
            return cast(int, value)
    if is_jax_array(value):
        from ._traced import TracedU64, jax_u64

        value = jax_u64(value, name)
        if isinstance(value, TracedU64):
            return cast(int, value)  # it stands in for an int while JAX traces
    return check_integer(value, name, 0, MAX_U64, "an integer in [0, 2**64)")


def check_integer(value: Any, name: str, low: int, high: int, what: str | None = None) -> int:
    """``value`` as an int in ``[low, high]``: TypeError for a non-integer (``bool`` too), ValueError outside.

    ``what`` describes the accepted values in the message (default ``"an integer in [low, high]"``).
    """
    if isinstance(value, bool) or not isinstance(value, Integral):
        what = what or f"an integer in [{low}, {high}]"
        raise TypeError(f"{name} must be {what}, got {name}={show(value)} of type {type(value).__name__}")
    if not low <= int(value) <= high:
        what = what or f"an integer in [{low}, {high}]"
        raise ValueError(f"{name} must be {what}, got {name}={show(value)}")
    return int(value)


def check_sequence(value: Any, name: str, length: int, items: str) -> Sequence[Any]:
    """``value`` if it is a sequence (not a string) of ``length`` entries, described as ``items``."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != length:
        raise TypeError(f"{name} must be a sequence of {length} {items}, got {name}={show(value)}")
    return value


def check_dtype(x: Any, dtype: Any, dtype_name: str, name: str) -> None:
    """``x`` (an array) must have ``dtype`` (called ``dtype_name`` in the message)."""
    if x.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype_name}, got {name}.dtype={x.dtype}")


def check_array(x: Any, name: str = "x") -> ArrayType:
    """The cached :class:`ArrayType` of ``x``, which must be a real floating array xdrop can compute with.

    Also refused: ``numpy.matrix`` (its ``*`` is a matrix product),
    ``numpy.ma.MaskedArray`` (the result would drop its mask), dtypes wider
    than 64 bits (``numpy.longdouble`` where it is extended precision), torch
    tensors that are not dense (sparse layouts) or whose dtype has no
    arithmetic (float8), and Dask arrays of unknown chunk sizes.
    """
    at = array_type(x)
    if at is None:
        hint = ""
        if type(x).__name__ == "matrix" and type(x).__module__.startswith("numpy"):
            hint = " (numpy.matrix is not supported, its * is a matrix product: pass numpy.asarray(x))"
        raise TypeError(
            f"{name} must be an array (NumPy, PyTorch, CuPy, JAX, Dask, ...), got {name} of type "
            f"{type(x).__name__}{hint}"
        )
    if at.name == "numpy" and _is_masked(x):
        raise TypeError(
            f"{name} must be a plain array, got {name} of type {type(x).__module__}.{type(x).__name__}: "
            f"the result would lose its mask; pass {name}.data (or {name}.filled(...)) and apply {name}.mask "
            "to the result"
        )
    dtype = x.dtype
    try:
        known = (type(x), dtype) in _FLOAT_TYPES
    except TypeError:  # an unhashable dtype: check it every time
        known = False
    if not known:
        _check_dtype(at, dtype, name)
        with contextlib.suppress(TypeError):  # unhashable: not cached
            _FLOAT_TYPES.add((type(x), dtype))
    if at.name == "torch" and x.layout is not sys.modules["torch"].strided:
        raise TypeError(f"{name} must be a dense (strided) tensor, got {name}.layout={x.layout}")
    if at.name == "dask" and any(math.isnan(d) for d in x.shape):
        raise ValueError(
            f"{name} must have known chunk sizes, got {name}.chunks={x.chunks}; call {name}.compute_chunk_sizes() first"
        )
    return at


def _is_masked(x: Any) -> bool:
    """Whether NumPy array ``x`` is a ``numpy.ma.MaskedArray`` (none exists before numpy.ma is imported)."""
    ma = sys.modules.get("numpy.ma")
    return ma is not None and isinstance(x, ma.MaskedArray)


def _check_dtype(at: ArrayType, dtype: Any, name: str) -> None:
    if not at.xp.isdtype(dtype, "real floating"):
        raise TypeError(f"{name} must have a real floating dtype, got {name}.dtype={dtype}")
    bits = getattr(at.xp.finfo(dtype), "bits", 64)
    if bits > 64:  # numpy.longdouble on x86: its scale and products are not float64 arithmetic
        raise TypeError(
            f"{name} must have a real floating dtype of at most 64 bits (float16, bfloat16, float32, float64), "
            f"got {name}.dtype={dtype} ({bits} bits); convert it, e.g. {name}.astype(numpy.float64)"
        )
    if "float8" in str(dtype):  # torch's float8 types are "real floating" but have no multiply
        raise TypeError(
            f"{name} must have a real floating dtype with arithmetic (float16, bfloat16, float32, float64), "
            f"got {name}.dtype={dtype}"
        )


def check_float_array(x: Any, name: str = "x") -> ModuleType:
    """The namespace of ``x``, which must be a real floating array (see :func:`check_array`)."""
    return check_array(x, name).xp


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
    """``value`` as a bool: ``True``, ``False`` or a NumPy bool (``numpy.True_``).

    Anything else raises, ``None`` included (it would silently mean False) and
    0/1, strings or arrays.
    """
    if value is True or value is False:
        return value
    if type(value).__name__ == "bool" and type(value).__module__ == "numpy":  # numpy.bool_, not imported here
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {name}={show(value)} of type {type(value).__name__}")


def check_mask_size(shape: tuple[int, ...], name: str = "shape") -> int:
    """The number of elements of ``shape``, which must be below 2**64 (the stream's flat indices are 64-bit)."""
    n = math.prod(shape)
    if n > MAX_U64:
        raise ValueError(
            f"{name} must have fewer than 2**64 elements (the stream's flat indices are 64-bit), "
            f"got {name}={shape!r} with {n} elements"
        )
    return n


def max_mask_bytes() -> int:
    """The largest eager mask :func:`xdrop.keep_mask` builds, in bytes (one per element).

    ``XDROP_MAX_MASK_BYTES`` if set, else the host's physical memory: a bigger
    mask could not be held, and building it would only swap or be killed.
    """
    env = os.environ.get("XDROP_MAX_MASK_BYTES")
    if env:
        return int(env)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): no cap
        return MAX_U64


def check_mask_memory(shape: tuple[int, ...], n: int, name: str = "shape") -> None:
    """Refuse an eager mask larger than :func:`max_mask_bytes` before allocating anything."""
    limit = max_mask_bytes()
    if n > limit:
        raise ValueError(
            f"{name}={shape!r} needs a mask of {n} bytes, more than the {limit} bytes of this host's memory "
            "(set XDROP_MAX_MASK_BYTES to change the limit, or use a lazy Dask mask)"
        )


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


def check_noise_shape(noise_shape: Any, shape: tuple[int, ...], name: str) -> tuple[int, ...]:
    """A resolved mask shape (ints, no ``None``) that broadcasts to ``shape``: one entry per axis, 1 or the size."""
    ok = isinstance(noise_shape, tuple) and len(noise_shape) == len(shape)
    ok = ok and all(type(n) is int and n in (1, d) for n, d in zip(noise_shape, shape, strict=False))
    if not ok:
        raise ValueError(
            f"{name} must broadcast to the shape {shape}: one int per axis, each 1 or that axis' size, "
            f"got {name}={noise_shape!r}"
        )
    return tuple(noise_shape)


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
