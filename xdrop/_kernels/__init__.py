"""Dropout kernels: the pure-standard reference and, per backend, fast paths.

A dropout kernel takes ``(x, xp, seed, step, k, scale)`` and returns
``where(keep, x * scale, 0)`` with the keep decisions of stream spec v1 over
the flat row-major indices of ``x``. A mask kernel takes
``(xp, start, n, seed, step, k, device)`` and returns the keep decisions of
flat indices ``start .. start + n - 1`` as a 1-d bool array. Every fast path
must equal the reference bit for bit; the tests compare them on the same inputs.

``impl`` chooses: ``"auto"`` the fastest available for the array,
``"reference"`` the pure-standard one, ``"blocked"`` the blocked NumPy host
kernel, ``"compiled"`` the compiled C host kernel (both for NumPy arrays and
torch CPU tensors), ``"cuda"`` the CUDA kernels: Triton for torch CUDA tensors
when triton loads, else the NVRTC kernel through CuPy (always for CuPy arrays).
Dask runs the host kernel ``impl`` names on each chunk.

Selection depends only on the array's type, device kind and ``impl``, so it
is cached (:data:`_SELECTED`): a call pays one dict lookup, not the checks.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from .._checks import IMPLS, check_impl
from .._compat import (
    array_type,
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

__all__ = ["IMPLS", "check_impl", "select", "select_mask"]

# impl name -> the host engine name that _host uses for it.
HOST_ENGINES = {"blocked": "numpy", "compiled": "c"}
HOST_IMPLS = tuple(HOST_ENGINES)
# (array type, device key, impl) -> dropout kernel. Bounded: types x devices x impls.
_SELECTED: dict[tuple[Any, ...], Kernel] = {}


def _device_type(device: Any) -> str | None:
    if device is None:
        return None
    return str(getattr(device, "type", device)).split(":")[0]


def _family(xp: ModuleType, device: Any) -> str:
    """Which fast paths apply: "host" (NumPy, torch CPU), "cuda" (CuPy, torch CUDA) or "none".

    Torch tensors on any other device (meta, mps, ...) take the reference, which
    runs wherever torch's own operations do.
    """
    if is_numpy_namespace(xp):
        return "host"
    if is_torch_namespace(xp):
        return {None: "host", "cpu": "host", "cuda": "cuda"}.get(_device_type(device), "none")
    if is_cupy_namespace(xp):
        return "cuda"
    return "none"


def _engine(xp: ModuleType, impl: str, family: str) -> str:
    """The fast path that ``impl`` names for this family: a host engine ("numpy", "c"), "cuda" or "reference"."""
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
    return HOST_ENGINES.get(impl, impl)


def _check_dask_impl(xp: ModuleType, impl: str) -> None:
    """Dask chunks run the host kernels: refuse another impl now, not at compute time."""
    if impl not in ("auto", "reference"):
        _engine(xp, impl, "host")


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


def _device_key(x: Any, name: str) -> Any:
    """What kernel choice depends on besides the type: torch's device kind, Dask's chunk type."""
    if name == "torch":
        return x.device.type
    if name == "dask":
        return type(getattr(x, "_meta", None))
    return None


def select(xp: ModuleType, x: Any, impl: str) -> Kernel:
    """The dropout kernel for ``x`` in namespace ``xp``: ``impl="reference"`` forces the reference.

    Raises here, before any draw, if ``impl`` does not apply to ``x``.
    """
    at = array_type(x)
    key = (type(x), _device_key(x, at.name if at else ""), impl)
    kernel = _SELECTED.get(key)
    if kernel is None:
        kernel = _select(xp, x, check_impl(impl))
        if impl in ("auto", "reference"):  # an explicit engine is re-checked each call (it may be unavailable)
            _SELECTED[key] = kernel
    return kernel


# Below this many elements a C-contiguous float32/float64 NumPy array calls the C kernel
# directly: one ctypes call, no range splitting, no closures (the per-call cost is the point).
SMALL = _host.PARALLEL_MIN
_C_FUNCTIONS = {np.dtype(np.float32): "xd_dropout_f32", np.dtype(np.float64): "xd_dropout_f64"}


def _address(a: np.ndarray) -> int:
    """The address of ``a``'s first element."""
    address: int = a.__array_interface__["data"][0]
    return address


def _numpy_kernel(engine: str) -> Kernel:
    def kernel(x: Any, xp: ModuleType, seed: int, step: int, k: int, scale: float) -> Any:
        a = x if type(x) is np.ndarray else np.asarray(x)
        flags = a.flags
        if flags.c_contiguous:
            if a.size < SMALL and engine == "c" and 0 < k < 1 << 32 and a.dtype in _C_FUNCTIONS:
                lib = _native.library()
                if lib is not None:
                    out = np.empty(a.shape, a.dtype)  # C-contiguous like a
                    by_array = lib.array_dropout.get(a.dtype.char)  # (dtype.name is slow: 5 us)
                    if by_array is not None:  # the arrays themselves: no addresses to fetch
                        if by_array(a, out, seed, step, k, scale):
                            raise RuntimeError(f"xdrop's compiled kernel refused arrays of {a.size} elements")
                        return out
                    fn = getattr(lib, _C_FUNCTIONS[a.dtype])
                    fn(_address(a), _address(out), 0, a.size, seed, step, k, scale)
                    return out
            return _host.dropout_array(a, seed, step, k, scale, engine)
        return _strided_numpy(a, seed, step, k, scale, engine)

    return kernel


def _strided_numpy(x: np.ndarray, seed: int, step: int, k: int, scale: float, engine: str) -> np.ndarray:
    """Dropout of a non-C-contiguous array into an array of the same layout (``empty_like``).

    The keep decisions are drawn in row-major order (a bool per element, a
    quarter of a float32 copy) and applied through NumPy's strided loops, so
    the bits equal those of the C-contiguous input.
    """
    out = np.empty_like(x)  # order="K": F-order and permuted layouts are kept
    keep = np.empty(x.size, np.bool_)
    _host.mask_into(keep, 0, seed, step, k, engine)
    with np.errstate(all="ignore"):  # -0 * inf at p near 1 in float16 is the specified result
        np.multiply(x, x.dtype.type(scale), out=out)
    np.copyto(out, 0, where=~keep.reshape(x.shape))  # +0, also where x is NaN or inf
    return out


def _select(xp: ModuleType, x: Any, impl: str) -> Kernel:
    if is_dask_namespace(xp):  # lazy: each chunk runs the NumPy kernels of impl
        from ._dask import dask_dropout

        _check_dask_impl(xp, impl)
        return dask_dropout(impl)
    if is_jax_namespace(xp) and impl == "auto":
        from ._jax import jax_dropout

        return jax_dropout
    family = _family(xp, getattr(x, "device", None))
    engine = _engine(xp, impl, family)
    if engine in _host.ENGINES:
        if is_torch_namespace(xp):
            from . import _torch

            return lambda x, xp, seed, step, k, scale: _torch.cpu_dropout(x, seed, step, k, scale, engine)
        return _numpy_kernel(engine)
    if engine == "cuda" and is_torch_namespace(xp) and _triton_available():
        from . import _triton

        return _triton.torch_dropout
    if engine == "cuda" and _cuda_available(xp):
        from . import _cuda

        return _cuda.cupy_dropout if is_cupy_namespace(xp) else _cuda.torch_dropout
    return reference


def select_mask(xp: ModuleType, impl: str, device: Any = None) -> MaskKernel:
    """The mask kernel for namespace ``xp`` on ``device``: ``impl="reference"`` forces the reference.

    Raises here, before any draw, if ``impl`` does not apply.
    """
    check_impl(impl)
    if is_dask_namespace(xp):
        from ._dask import dask_mask

        _check_dask_impl(xp, impl)
        return dask_mask(impl)
    if is_jax_namespace(xp) and impl == "auto":
        from ._jax import jax_mask

        return jax_mask
    if impl == "reference":
        return keep_flat
    engine = _engine(xp, impl, _family(xp, device))
    if engine in _host.ENGINES:
        if is_torch_namespace(xp):
            from . import _torch

            return lambda xp, start, n, seed, step, k, device: _torch.cpu_mask(start, n, seed, step, k, engine, device)

        def host_mask(xp: ModuleType, start: int, n: int, seed: int, step: int, k: int, device: Any) -> Any:
            out = np.empty(n, np.bool_)
            _host.mask_into(out, start, seed, step, k, engine)
            return out

        return host_mask
    if engine == "cuda" and is_torch_namespace(xp) and _triton_available():
        from . import _triton

        return _triton.torch_mask
    if engine == "cuda" and _cuda_available(xp):
        from . import _cuda

        return _cuda.cupy_mask if is_cupy_namespace(xp) else _cuda.torch_mask
    return keep_flat


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
    if engine not in _host.ENGINES:
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
    kernel = select_mask(xp, impl, dev)
    return block_keep(xp, block, shape, lambda start, n: kernel(xp, start, n, seed, step, k, dev))


def torch_dropout(
    x: Any, seed: int, step: int, k: int, noise_shape: tuple[int, ...], a: float, b: float, c: float, impl: str
) -> Any:
    """The dropout family on a torch tensor: one autograd path, the registered operator under compile."""
    from . import _torch_ops

    return _torch_ops.dropout(x, seed, step, k, noise_shape, a, b, c, impl)
