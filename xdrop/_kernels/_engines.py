"""Which host engine an ``impl`` names, and which CUDA kernels can load here: the facts kernel choice reads.

Below :mod:`xdrop._kernels._select` (the per-library objects) and the kernels
that need a NumPy mask kernel themselves (Dask's chunks), so neither imports
the other.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from .._lib._compat import namespace_name
from .._lib._stream import keep_flat
from .host import _buffers as _host
from .host import _native

# The impls that name a host engine (the names _host's engines go by).
HOST_IMPLS = _host.ENGINES
# A mask kernel: (xp, start, n, seed, step, k, device) -> the keep decisions of start .. start + n - 1.
MaskKernel = Callable[[ModuleType, int, int, int, int, int, Any], Any]


def device_type(device: Any) -> str | None:
    """``"cpu"``, ``"cuda"``, ``"meta"``, ... of a device (or of its string), None for no device."""
    if device is None:
        return None
    return str(getattr(device, "type", device)).split(":")[0]


def engine(xp: ModuleType, impl: str, family: str) -> str:
    """The fast path that ``impl`` names for a *family* of kernels: a host engine ("blocked", "compiled"),
    "cuda" or "reference".

    ``family`` is where the array's fast paths run: "host" (NumPy, torch CPU), "cuda" (CuPy, torch CUDA) or
    "none" (the reference only). Raises if ``impl`` names a fast path of another family, or the compiled
    kernel that could not be built.
    """
    if impl == "reference":
        return impl
    if impl == "auto":
        return {"host": _host.default_engine(), "cuda": "cuda", "none": "reference"}[family]
    wanted = "host" if impl in HOST_IMPLS else "cuda"
    if family != wanted:
        raise ValueError(f"impl={impl!r} does not apply to {namespace_name(xp)} arrays on this device")
    if impl == "compiled" and _native.library() is None:
        raise RuntimeError(
            f"impl='compiled' needs the compiled kernel, which is unavailable: {_native.build_info().error}"
        )
    return impl


def cupy_importable() -> bool:
    """Whether CuPy imports (its NVRTC kernel then serves torch CUDA tensors too)."""
    try:
        import cupy  # noqa: F401
    except ImportError:  # torch CUDA without CuPy: the reference, on the device
        return False
    return True


@functools.cache
def triton_available() -> bool:
    """Whether the Triton kernels load (torch CUDA tensors then need no CuPy); checked once."""
    try:
        from .cuda import _triton  # noqa: F401
    except Exception:  # not installed, or a Triton that cannot load here: CuPy or the reference
        return False
    return True


def host_mask(engine: str) -> MaskKernel:
    """The mask kernel of a host engine, on NumPy arrays."""

    def mask(xp: ModuleType, start: int, n: int, seed: int, step: int, k: int, device: Any) -> Any:
        out = np.empty(n, np.bool_)
        _host.mask_into(out, start, seed, step, k, engine)
        return out

    return mask


def numpy_mask(xp: ModuleType, impl: str) -> MaskKernel:
    """The mask kernel ``impl`` names for NumPy arrays (also what each Dask chunk draws with)."""
    if impl == "reference":
        return keep_flat
    return host_mask(engine(xp, impl, "host"))
