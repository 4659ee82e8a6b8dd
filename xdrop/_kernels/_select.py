"""Kernel choice: one small object per array library, saying what xdrop must know about it at run time.

A :class:`Library` answers, for its arrays: what kernel choice depends on
besides the type (:meth:`~Library.device_key`), which family of fast paths
serves a device (:meth:`~Library.family`: host, CUDA or none), the kernels it
draws with itself whatever the family (Dask's lazy chunks, JAX's jitted
kernels), its host and CUDA kernels, whether a traced seed or step is accepted
(:meth:`~Library.accepts_traced`), and whether its calls go through the
registered torch operator. The functions below ask the object of the array's
library (:func:`library_of`) instead of testing namespaces one by one, so a
new backend with fast paths is one subclass and one :data:`LIBRARIES` entry;
one without them needs nothing (:class:`Library` itself: the reference).

The library is recognised once, by :data:`xdrop._compat.NAMESPACES` (the
name an array's type is cached under).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from .._compat import array_type, namespace_name
from .._sharding import Block, block_keep, contiguous_start
from .._stream import keep_flat
from .._values import check_impl
from . import _host
from ._engines import MaskKernel, cupy_importable, device_type, engine, host_mask, triton_available
from ._numpy import Kernel, numpy_kernel
from ._reference import reference

__all__ = ["LIBRARIES", "Library", "block_mask", "library_of", "refuse_traced", "select", "select_block", "select_mask"]


class Library:
    """An array library with no fast path of its own (array-api-strict, any other standard namespace).

    Every method is a question kernel choice asks; a subclass overrides those
    its library answers differently. Methods that return a kernel return
    ``None`` where the generic choice (by family and engine) applies.
    """

    name = "generic"
    #: Its calls go through ``torch.ops.xdrop.dropout`` (one autograd path, no mask saved; autograd-recorded
    #: blocks take the mask path; under torch.compile the operator selects its kernel when it runs).
    uses_torch_operator = False
    #: Seeds drawn without one, and Generator steps, go through torch's generator (so
    #: ``torch.manual_seed`` reproduces them and checkpoint recomputation replays them).
    torch_rng = False
    #: Its masks are lazy (Dask): an eager mask's memory check does not apply.
    lazy = False

    def device_key(self, x: Any) -> Any:
        """What kernel choice depends on besides the array's type (a device kind, a chunk type)."""
        return None

    def family(self, device: Any) -> str:
        """Which fast paths serve arrays on ``device``: "host", "cuda" or "none" (the reference)."""
        return "none"

    def accepts_traced(self, impl: str) -> bool:
        """Whether a traced (JAX) seed or step may reach this library's kernels for ``impl``."""
        return False

    def own_dropout(self, xp: ModuleType, impl: str, block: Block | None = None) -> Kernel | None:
        """A dropout kernel the library draws with itself, whatever the family; ``block``: as a block."""
        return None

    def own_mask(self, xp: ModuleType, impl: str) -> MaskKernel | None:
        return None

    def own_block_mask(self, impl: str) -> Callable[..., Any] | None:
        """``f(shape, block, seed, step, k, dev)`` drawing a block's decisions itself, or None."""
        return None

    def host_dropout(self, engine: str, start: int | None = None) -> Kernel:
        """The host engine's dropout kernel (``start``: the flat index of a contiguous block)."""
        if start is None:
            return numpy_kernel(engine)
        return lambda x, xp, seed, step, k, scale: _host.dropout_array(
            np.asarray(x), seed, step, k, scale, engine, start=start
        )

    def host_mask(self, engine: str) -> MaskKernel:
        return host_mask(engine)

    def cuda_dropout(self, xp: ModuleType) -> Kernel | None:
        return None

    def cuda_mask(self, xp: ModuleType) -> MaskKernel | None:
        return None


class NumPy(Library):
    name = "numpy"

    def family(self, device: Any) -> str:
        return "host"


class Torch(Library):
    """CPU tensors: the host kernels, zero-copy; CUDA: Triton, else CuPy's NVRTC kernel; other devices: the
    reference. Every call goes through the registered operator; DTensors are placed by ``_sharding``."""

    name = "torch"
    uses_torch_operator = True
    torch_rng = True

    def device_key(self, x: Any) -> Any:
        return x.device.type

    def family(self, device: Any) -> str:
        return {None: "host", "cpu": "host", "cuda": "cuda"}.get(device_type(device), "none")

    def host_dropout(self, engine: str, start: int | None = None) -> Kernel:
        from . import _torch

        at = 0 if start is None else start
        return lambda x, xp, seed, step, k, scale: _torch.cpu_dropout(x, seed, step, k, scale, engine, at)

    def host_mask(self, engine: str) -> MaskKernel:
        from . import _torch

        return lambda xp, start, n, seed, step, k, device: _torch.cpu_mask(start, n, seed, step, k, engine, device)

    def cuda_dropout(self, xp: ModuleType) -> Kernel | None:
        if triton_available():
            from . import _triton

            return _triton.torch_dropout
        if cupy_importable():
            from . import _cuda

            return _cuda.torch_dropout
        return None

    def cuda_mask(self, xp: ModuleType) -> MaskKernel | None:
        if triton_available():
            from . import _triton

            return _triton.torch_mask
        if cupy_importable():
            from . import _cuda

            return _cuda.torch_mask
        return None


class CuPy(Library):
    name = "cupy"

    def family(self, device: Any) -> str:
        return "cuda"

    def cuda_dropout(self, xp: ModuleType) -> Kernel | None:
        from . import _cuda

        return _cuda.cupy_dropout

    def cuda_mask(self, xp: ModuleType) -> MaskKernel | None:
        from . import _cuda

        return _cuda.cupy_mask


class Jax(Library):
    """``impl="auto"``: the jitted JAX kernels, which alone read a traced seed or step; other impls: the
    reference (a host or CUDA impl is refused: JAX arrays have no such fast path here)."""

    name = "jax"

    def accepts_traced(self, impl: str) -> bool:
        return impl == "auto"

    def own_dropout(self, xp: ModuleType, impl: str, block: Block | None = None) -> Kernel | None:
        if impl != "auto":
            return None
        from ._jax import jax_block_dropout, jax_dropout

        if block is None:
            return jax_dropout
        return lambda x, xp, seed, step, k, scale: jax_block_dropout(x, seed, step, k, scale, block)

    def own_mask(self, xp: ModuleType, impl: str) -> MaskKernel | None:
        if impl != "auto":
            return None
        from ._jax import jax_mask

        return jax_mask

    def own_block_mask(self, impl: str) -> Callable[..., Any] | None:
        if impl != "auto":
            return None
        from ._jax import jax_block_mask

        return jax_block_mask


class Dask(Library):
    """Lazy: each chunk runs the NumPy kernels ``impl`` names (refused now, not at compute time)."""

    name = "dask"
    lazy = True

    def device_key(self, x: Any) -> Any:
        return type(getattr(x, "_meta", None))

    def own_dropout(self, xp: ModuleType, impl: str, block: Block | None = None) -> Kernel | None:
        from ._dask import dask_dropout

        if block is None:
            _check_chunk_impl(xp, impl)
            return dask_dropout(impl)
        return dask_dropout(impl, block)

    def own_mask(self, xp: ModuleType, impl: str) -> MaskKernel | None:
        from ._dask import dask_mask

        _check_chunk_impl(xp, impl)
        return dask_mask(impl)

    def own_block_mask(self, impl: str) -> Callable[..., Any] | None:
        from ._dask import dask_block_mask

        return lambda shape, block, seed, step, k, dev: dask_block_mask(shape, block, seed, step, k, impl)


def _check_chunk_impl(xp: ModuleType, impl: str) -> None:
    """Dask chunks run the host kernels: refuse another impl now, not at compute time."""
    if impl not in ("auto", "reference"):
        engine(xp, impl, "host")


GENERIC = Library()
LIBRARIES: dict[str, Library] = {lib.name: lib for lib in (NumPy(), Torch(), CuPy(), Jax(), Dask())}
# Keyed by the namespace module's name: torch.compile traces a str-keyed lookup, not a module-keyed one.
_OF_NAMESPACE: dict[str, Library] = {}
# Library name -> what to run before library_of first returns that library (the package registers
# torch's operator here: the operator's module imports this one).
FIRST_SEEN: dict[str, Callable[[], None]] = {}


def library_of(xp: ModuleType) -> Library:
    """The :class:`Library` of namespace ``xp`` (cached per namespace; :data:`GENERIC` if it has none)."""
    found = _OF_NAMESPACE.get(xp.__name__)
    if found is None:
        found = LIBRARIES.get(namespace_name(xp), GENERIC)
        prepare = FIRST_SEEN.get(found.name)
        if prepare is not None:
            prepare()  # before caching: no thread finds the library before it is ready
        _OF_NAMESPACE[xp.__name__] = found
    return found


# (array type, device key, impl) -> dropout kernel. Bounded: types x devices x impls.
_SELECTED: dict[tuple[Any, ...], Kernel] = {}


def select(xp: ModuleType, x: Any, impl: str) -> Kernel:
    """The dropout kernel for ``x`` in namespace ``xp``: ``impl="reference"`` forces the reference.

    Raises here, before any draw, if ``impl`` does not apply to ``x``.
    """
    at = array_type(x)
    lib = LIBRARIES.get(at.name, GENERIC) if at is not None else GENERIC
    key = (type(x), lib.device_key(x), impl)
    kernel = _SELECTED.get(key)
    if kernel is None:
        kernel = _select(lib, xp, x, check_impl(impl))
        if impl in ("auto", "reference"):  # an explicit engine is re-checked each call (it may be unavailable)
            _SELECTED[key] = kernel
    return kernel


def _select(lib: Library, xp: ModuleType, x: Any, impl: str) -> Kernel:
    own = lib.own_dropout(xp, impl)
    if own is not None:
        return own
    chosen = engine(xp, impl, lib.family(getattr(x, "device", None)))
    if chosen in _host.ENGINES:
        return lib.host_dropout(chosen)
    if chosen == "cuda":
        return lib.cuda_dropout(xp) or reference
    return reference


def select_mask(xp: ModuleType, impl: str, device: Any = None) -> MaskKernel:
    """The mask kernel for namespace ``xp`` on ``device``: ``impl="reference"`` forces the reference.

    Raises here, before any draw, if ``impl`` does not apply.
    """
    check_impl(impl)
    lib = library_of(xp)
    own = lib.own_mask(xp, impl)
    if own is not None:
        return own
    if impl == "reference":
        return keep_flat
    chosen = engine(xp, impl, lib.family(device))
    if chosen in _host.ENGINES:
        return lib.host_mask(chosen)
    if chosen == "cuda":
        return lib.cuda_mask(xp) or keep_flat
    return keep_flat


def select_block(xp: ModuleType, x: Any, impl: str, block: Block) -> Kernel | None:
    """The dropout kernel for ``x`` as ``block`` of a larger array; ``None`` where only the mask path applies.

    Dask and JAX draw any block themselves; the host kernels take a block that is
    one contiguous range of the global flat indices (rows of a row-sharded array).
    """
    lib = library_of(xp)
    own = lib.own_dropout(xp, impl, block)
    if own is not None:
        return own
    start = contiguous_start(block, tuple(x.shape))
    if start is None:
        return None
    chosen = engine(xp, impl, lib.family(getattr(x, "device", None)))
    if chosen not in _host.ENGINES:
        return None
    return lib.host_dropout(chosen, start)


def block_mask(
    xp: ModuleType, shape: tuple[int, ...], block: Block, seed: int, step: int, k: int, dev: Any, impl: str
) -> Any:
    """Keep decisions (bool, ``shape``) of ``block``, drawn with its global flat indices."""
    check_impl(impl)
    own = library_of(xp).own_block_mask(impl)
    if own is not None:
        return own(shape, block, seed, step, k, dev)
    kernel = select_mask(xp, impl, dev)
    return block_keep(xp, block, shape, lambda start, n: kernel(xp, start, n, seed, step, k, dev))


def refuse_traced(xp: ModuleType, impl: str, *words: Any) -> None:
    """A traced JAX seed or step reaches only the JAX kernels: elsewhere say what to do."""
    if "jax" not in sys.modules or library_of(xp).accepts_traced(impl):
        return
    from .._traced import TracedU64

    for w in words:
        if isinstance(w, TracedU64):
            w._refuse()
