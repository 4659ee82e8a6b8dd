"""Dropout kernels: the pure-standard reference and, per backend, fast paths.

A dropout kernel takes ``(x, xp, seed, step, k, scale)`` and returns
``where(keep, x * scale, 0)`` with the keep decisions of stream spec v1 over
the flat row-major indices of ``x``. A mask kernel takes
``(xp, start, n, seed, step, k, device)`` and returns the keep decisions of
flat indices ``start .. start + n - 1`` as a 1-d bool array. Every fast path
must equal the reference bit for bit; the tests compare them on the same inputs.

``impl`` chooses: ``"auto"`` the fastest available for the array,
``"reference"`` the pure-standard one, ``"numpy"`` the blocked NumPy host
kernel, ``"c"`` the compiled host kernel (NumPy arrays and torch CPU tensors),
``"cuda"`` the CUDA kernels: Triton for torch CUDA tensors when triton loads,
else the NVRTC kernel through CuPy (always for CuPy arrays).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from .._compat import (
    is_cupy_namespace,
    is_dask_namespace,
    is_jax_namespace,
    is_numpy_namespace,
    is_torch_namespace,
    namespace_name,
)
from .._sharding import Block, block_keep, contiguous_start
from .._stream import keep_flat
from . import _host, _native
from ._reference import reference

Kernel = Callable[[Any, ModuleType, int, int, int, float], Any]
MaskKernel = Callable[[ModuleType, int, int, int, int, int, Any], Any]

IMPLS = ("auto", "reference", "numpy", "c", "cuda")
HOST_IMPLS = ("numpy", "c")


def check_impl(impl: str) -> str:
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got impl={impl!r}")
    return impl


def _is_cuda_device(device: Any) -> bool:
    return device is not None and "cuda" in str(getattr(device, "type", device))


def _family(xp: ModuleType, device: Any) -> str:
    """Which fast paths apply: "host" (NumPy, torch CPU), "cuda" (CuPy, torch CUDA) or "none"."""
    if is_numpy_namespace(xp):
        return "host"
    if is_torch_namespace(xp):
        return "cuda" if _is_cuda_device(device) else "host"
    if is_cupy_namespace(xp):
        return "cuda"
    return "none"


def _engine(xp: ModuleType, impl: str, family: str) -> str:
    """The fast path that ``impl`` names for this family: "numpy", "c", "cuda" or "reference"."""
    if impl == "reference":
        return impl
    if impl == "auto":
        return {"host": _host.default_engine(), "cuda": "cuda", "none": "reference"}[family]
    wanted = "host" if impl in HOST_IMPLS else "cuda"
    if family != wanted:
        raise ValueError(f"impl={impl!r} does not apply to {namespace_name(xp)} arrays on this device")
    if impl == "c" and _native.library() is None:
        raise RuntimeError(f"impl='c' needs the compiled kernel, which is unavailable: {_native.build_info().error}")
    return impl


def _cuda_available(xp: ModuleType) -> bool:
    if is_cupy_namespace(xp):
        return True
    try:
        import cupy  # noqa: F401
    except ImportError:  # torch CUDA without CuPy: the reference, on the device
        return False
    return True


def _triton_available() -> bool:
    """Whether the Triton kernels load (torch CUDA tensors then need no CuPy); checked once."""
    if not _triton_state:
        try:
            from . import _triton  # noqa: F401
        except Exception:  # not installed, or a Triton that cannot load here: CuPy or the reference
            _triton_state.append(False)
        else:
            _triton_state.append(True)
    return _triton_state[0]


_triton_state: list[bool] = []


def refuse_traced(xp: ModuleType, impl: str, *words: Any) -> None:
    """A traced JAX seed or step reaches only the JAX kernels: elsewhere say what to do."""
    if "jax" not in sys.modules or (is_jax_namespace(xp) and impl == "auto"):
        return
    from ._jax import TracedU64

    for w in words:
        if isinstance(w, TracedU64):
            w._refuse()


def select(xp: ModuleType, x: Any, impl: str) -> Kernel:
    """The dropout kernel for ``x`` in namespace ``xp``: ``impl="reference"`` forces the reference."""
    check_impl(impl)
    if is_dask_namespace(xp):  # lazy: each chunk runs the NumPy kernels of impl
        from ._dask import dask_dropout

        return dask_dropout(impl)
    if is_jax_namespace(xp) and impl == "auto":
        from ._jax import jax_dropout

        return jax_dropout
    family = _family(xp, getattr(x, "device", None))
    engine = _engine(xp, impl, family)
    if engine in HOST_IMPLS:
        if is_torch_namespace(xp):
            from . import _torch

            return lambda x, xp, seed, step, k, scale: _torch.cpu_dropout(x, seed, step, k, scale, engine)
        return lambda x, xp, seed, step, k, scale: _host.dropout_array(np.asarray(x), seed, step, k, scale, engine)
    if engine == "cuda" and is_torch_namespace(xp) and _triton_available():
        from . import _triton

        return _triton.torch_dropout
    if engine == "cuda" and _cuda_available(xp):
        from . import _cuda

        return _cuda.cupy_dropout if is_cupy_namespace(xp) else _cuda.torch_dropout
    return reference


def select_mask(xp: ModuleType, impl: str) -> MaskKernel:
    """The mask kernel for namespace ``xp``: ``impl="reference"`` forces the reference."""
    check_impl(impl)
    if is_dask_namespace(xp):
        from ._dask import dask_mask

        return dask_mask(impl)
    if is_jax_namespace(xp) and impl == "auto":
        from ._jax import jax_mask

        return jax_mask
    if impl == "reference" or _family(xp, None) == "none":
        return keep_flat

    def kernel(xp: ModuleType, start: int, n: int, seed: int, step: int, k: int, device: Any) -> Any:
        family = _family(xp, device)
        engine = _engine(xp, impl, family)
        if engine in HOST_IMPLS:
            if is_torch_namespace(xp):
                from . import _torch

                return _torch.cpu_mask(start, n, seed, step, k, engine, device)
            out = np.empty(n, np.bool_)
            _host.mask_into(out, start, seed, step, k, engine)
            return out
        if engine == "cuda" and is_torch_namespace(xp) and _triton_available():
            from . import _triton

            return _triton.torch_mask(xp, start, n, seed, step, k, device)
        if engine == "cuda" and _cuda_available(xp):
            from . import _cuda

            fn = _cuda.cupy_mask if is_cupy_namespace(xp) else _cuda.torch_mask
            return fn(xp, start, n, seed, step, k, device)
        return keep_flat(xp, start, n, seed, step, k, device)

    return kernel


def select_block(xp: ModuleType, x: Any, impl: str, block: Block) -> Kernel | None:
    """The dropout kernel for ``x`` as ``block`` of a larger array; ``None`` where only the mask path applies.

    Dask and JAX draw any block themselves; the host kernels take a block that is
    one contiguous range of the global flat indices (rows of a row-sharded array).
    """
    if is_dask_namespace(xp):
        from ._dask import dask_dropout

        return dask_dropout(impl, block)
    if is_jax_namespace(xp) and impl == "auto":
        from ._jax import jax_block_dropout

        return lambda x, xp, seed, step, k, scale: jax_block_dropout(x, seed, step, k, scale, block)
    start = contiguous_start(block, tuple(x.shape))
    if start is None:
        return None
    engine = _engine(xp, impl, _family(xp, getattr(x, "device", None)))
    if engine not in HOST_IMPLS:
        return None
    if is_torch_namespace(xp):
        from . import _torch

        return lambda x, xp, seed, step, k, scale: _torch.cpu_dropout(x, seed, step, k, scale, engine, start)
    return lambda x, xp, seed, step, k, scale: _host.dropout_array(
        np.asarray(x), seed, step, k, scale, engine, start=start
    )


def block_mask(
    xp: ModuleType, shape: tuple[int, ...], block: Block, seed: int, step: int, k: int, dev: Any, impl: str
) -> Any:
    """Keep decisions (bool, ``shape``) of ``block``, drawn with its global flat indices."""
    check_impl(impl)
    if is_dask_namespace(xp):
        from ._dask import dask_block_mask

        return dask_block_mask(shape, block, seed, step, k, impl)
    if is_jax_namespace(xp) and impl == "auto":
        from ._jax import jax_block_mask

        return jax_block_mask(shape, block, seed, step, k, dev)
    kernel = select_mask(xp, impl)
    return block_keep(xp, block, shape, lambda start, n: kernel(xp, start, n, seed, step, k, dev))


def torch_dropout(
    x: Any, seed: int, step: int, k: int, noise_shape: tuple[int, ...], a: float, b: float, c: float, impl: str
) -> Any:
    """The dropout family on a torch tensor: one autograd path, the registered operator under compile."""
    from . import _torch_ops

    return _torch_ops.dropout(x, seed, step, k, noise_shape, a, b, c, impl)
