"""Kernel choice: one small object per array library, saying what xdrop must know about it at run time.

A :class:`Library` answers, for its arrays: which namespaces are its own
(``recognises``, an array-api-compat predicate), what kernel choice depends on
besides the type (:meth:`~Library.device_key`), which family of fast paths
serves a device (:meth:`~Library.family`: host, CUDA or none), the kernels it
draws with itself whatever the family (Dask's lazy chunks, JAX's jitted
kernels), its host and CUDA kernels, whether a traced seed or step is accepted
(:meth:`~Library.accepts_traced`), and whether its calls go through the
registered torch operator. The functions below ask the object of the array's
library (:func:`library_of`) instead of testing namespaces one by one, and
walk one ladder (:func:`_choose`) for each thing they choose (:class:`Chosen`:
a dropout kernel, a mask kernel, a block's kernel). A new backend is one
:data:`LIBRARIES` entry: a subclass where it has fast paths, the base
:class:`Library` (the reference) where it has none.

:data:`LIBRARIES` is the one table: :mod:`xdrop._lib._compat`, a layer below,
recognises an array's library by asking these objects (this module hands it
the table when the package is imported, as einops finds its backends among
the classes already loaded).
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from .._lib._compat import (
    array_type,
    is_array_api_strict_namespace,
    is_cupy_namespace,
    is_dask_namespace,
    is_jax_namespace,
    is_numpy_namespace,
    is_torch_namespace,
    namespace_name,
    recognise_with,
)
from .._lib._sharding import Block, block_keep, contiguous_start
from .._lib._stream import keep_flat
from .._lib._values import check_impl
from ._engines import MaskKernel, cupy_importable, device_type, engine, host_mask, triton_available
from ._reference import reference
from .host import _buffers as _host
from .host._numpy import Kernel, numpy_kernel

__all__ = [
    "LIBRARIES",
    "Chosen",
    "Library",
    "block_mask",
    "library_of",
    "refuse_traced",
    "select",
    "select_block",
    "select_mask",
]


class Chosen(enum.Enum):
    """What kernel choice chooses: the one ladder (:func:`_choose`) is walked for each."""

    #: A dropout kernel (:data:`Kernel`) for a whole array.
    DROPOUT = "dropout"
    #: A mask kernel (:data:`MaskKernel`).
    MASK = "mask"
    #: A dropout kernel for an array that is a block of a larger one; ``None`` where only the mask path applies.
    BLOCK = "block"


# What each choice gets where no fast path serves (the reference family, or a CUDA kernel that cannot load).
_FALLBACK: dict[Chosen, Any] = {Chosen.DROPOUT: reference, Chosen.MASK: keep_flat, Chosen.BLOCK: None}


class Library:
    """An array library: how its namespaces are recognised, and what kernel choice must know about its arrays.

    ``recognises`` is the array-api-compat predicate that tells its namespaces
    (:func:`xdrop._lib._compat.namespace_name` asks each library's in turn). The base
    class is a library with no fast path of its own (array-api-strict, any other
    standard namespace). Every method is a question kernel choice asks; a
    subclass overrides those its library answers differently. Methods that
    return a kernel return ``None`` where the generic choice (by family and
    engine) applies.
    """

    #: Its calls go through ``torch.ops.xdrop.dropout`` (one autograd path, no mask saved; autograd-recorded
    #: blocks take the mask path; under torch.compile the operator selects its kernel when it runs).
    uses_torch_operator = False
    #: Seeds drawn without one, and Generator steps, go through torch's generator (so
    #: ``torch.manual_seed`` reproduces them and checkpoint recomputation replays them).
    torch_rng = False
    #: Its masks are lazy (Dask): an eager mask's memory check does not apply.
    lazy = False

    def __init__(self, name: str, recognises: Callable[[ModuleType], bool]) -> None:
        self.name = name
        self.recognises = recognises

    def __repr__(self) -> str:
        return f"<{type(self).__name__} library {self.name!r}>"

    def device_key(self, x: Any) -> Any:
        """What kernel choice depends on besides the array's type (a device kind, a chunk type)."""
        return None

    def family(self, device: Any) -> str:
        """Which fast paths serve arrays on ``device``: "host", "cuda" or "none" (the reference)."""
        return "none"

    def accepts_traced(self, impl: str) -> bool:
        """Whether a traced (JAX) seed or step may reach this library's kernels for ``impl``."""
        return False

    def own(self, what: Chosen, xp: ModuleType, impl: str, block: Block | None) -> Any:
        """A kernel the library draws with itself, whatever the family (``block``: for :attr:`Chosen.BLOCK`)."""
        return None

    def own_block_mask(self, impl: str) -> Callable[..., Any] | None:
        """``f(shape, block, seed, step, k, dev)`` drawing a block's decisions itself, or None."""
        return None

    def host(self, what: Chosen, engine: str, start: int) -> Any:
        """The host engine's kernel (``start``: the flat index of a contiguous block's first element)."""
        if what is Chosen.MASK:
            return host_mask(engine)
        if what is Chosen.DROPOUT:
            return numpy_kernel(engine)
        return lambda x, xp, seed, step, k, scale: _host.dropout_array(
            np.asarray(x), seed, step, k, scale, engine, start=start
        )

    def cuda(self, what: Chosen, xp: ModuleType) -> Any:
        """The CUDA kernel for a whole array (:attr:`Chosen.DROPOUT` or :attr:`Chosen.MASK`), or None."""
        return None


class NumPy(Library):
    def family(self, device: Any) -> str:
        return "host"


class Torch(Library):
    """CPU tensors: the host kernels, zero-copy; CUDA: Triton, else CuPy's NVRTC kernel; other devices: the
    reference. Every call goes through the registered operator; DTensors are placed by ``_sharding``."""

    uses_torch_operator = True
    torch_rng = True

    def device_key(self, x: Any) -> Any:
        return x.device.type

    def family(self, device: Any) -> str:
        return {None: "host", "cpu": "host", "cuda": "cuda"}.get(device_type(device), "none")

    def host(self, what: Chosen, engine: str, start: int) -> Any:
        from .torch import _cpu as _torch

        if what is Chosen.MASK:
            return lambda xp, at, n, seed, step, k, device: _torch.cpu_mask(at, n, seed, step, k, engine, device)
        return lambda x, xp, seed, step, k, scale: _torch.cpu_dropout(x, seed, step, k, scale, engine, start)

    def cuda(self, what: Chosen, xp: ModuleType) -> Any:
        if triton_available():
            from .cuda import _triton

            return _triton.torch_mask if what is Chosen.MASK else _triton.torch_dropout
        if cupy_importable():
            from .cuda import _nvrtc as _cuda

            return _cuda.torch_mask if what is Chosen.MASK else _cuda.torch_dropout
        return None


class CuPy(Library):
    def family(self, device: Any) -> str:
        return "cuda"

    def cuda(self, what: Chosen, xp: ModuleType) -> Any:
        from .cuda import _nvrtc as _cuda

        return _cuda.cupy_mask if what is Chosen.MASK else _cuda.cupy_dropout


class Jax(Library):
    """``impl="auto"``: the jitted JAX kernels, which alone read a traced seed or step; other impls: the
    reference (a host or CUDA impl is refused: JAX arrays have no such fast path here)."""

    def accepts_traced(self, impl: str) -> bool:
        return impl == "auto"

    def own(self, what: Chosen, xp: ModuleType, impl: str, block: Block | None) -> Any:
        if impl != "auto":
            return None
        from .jax._dropout import jax_block_dropout, jax_dropout, jax_mask

        if block is None:
            return jax_mask if what is Chosen.MASK else jax_dropout
        return lambda x, xp, seed, step, k, scale: jax_block_dropout(x, seed, step, k, scale, block)

    def own_block_mask(self, impl: str) -> Callable[..., Any] | None:
        if impl != "auto":
            return None
        from .jax._dropout import jax_block_mask

        return jax_block_mask


class Dask(Library):
    """Lazy: each chunk runs the NumPy kernels ``impl`` names (refused now, not at compute time)."""

    lazy = True

    def device_key(self, x: Any) -> Any:
        return type(getattr(x, "_meta", None))

    def own(self, what: Chosen, xp: ModuleType, impl: str, block: Block | None) -> Any:
        from ._dask import dask_dropout, dask_mask

        if what is Chosen.BLOCK:
            return dask_dropout(impl, block)
        if impl not in ("auto", "reference"):  # chunks run the host kernels: refuse another impl now
            engine(xp, impl, "host")
        return dask_mask(impl) if what is Chosen.MASK else dask_dropout(impl)

    def own_block_mask(self, impl: str) -> Callable[..., Any] | None:
        from ._dask import dask_block_mask

        return lambda shape, block, seed, step, k, dev: dask_block_mask(shape, block, seed, step, k, impl)


def _never(xp: ModuleType) -> bool:
    return False


GENERIC = Library("generic", _never)
# The array libraries xdrop knows, by the short name errors and reports use, in the order their
# predicates are tried: the one table that recognises an array's library and chooses its kernels.
LIBRARIES: dict[str, Library] = {
    lib.name: lib
    for lib in (
        NumPy("numpy", is_numpy_namespace),
        Library("array_api_strict", is_array_api_strict_namespace),
        Torch("torch", is_torch_namespace),
        CuPy("cupy", is_cupy_namespace),
        Jax("jax", is_jax_namespace),
        Dask("dask", is_dask_namespace),
    )
}
recognise_with(LIBRARIES)
# Keyed by the namespace module's name: torch.compile traces a str-keyed lookup, not a module-keyed one
# (nor a functools cache).
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


def _choose(
    what: Chosen,
    lib: Library,
    xp: ModuleType,
    impl: str,
    device: Any,
    block: Block | None = None,
    shape: tuple[int, ...] = (),
) -> Any:
    """The one kernel-choice ladder: the library's own kernel, else the engine ``impl`` names for the device's
    family (a host engine, CUDA, or the reference). ``block`` and ``shape``: the block and its array's shape,
    for :attr:`Chosen.BLOCK`.

    Raises here, before any draw, if ``impl`` does not apply.
    """
    own = lib.own(what, xp, impl, block)
    if own is not None:
        return own
    start = 0
    if block is not None:  # the host kernels take a block that is one contiguous range, else the mask path
        found = contiguous_start(block, shape)
        if found is None:
            return None
        start = found
    chosen = engine(xp, impl, lib.family(device))
    if chosen in _host.ENGINES:
        return lib.host(what, chosen, start)
    if chosen == "cuda" and what is not Chosen.BLOCK:  # the CUDA kernels take whole arrays
        return lib.cuda(what, xp) or _FALLBACK[what]
    return _FALLBACK[what]


# (array type, device key, impl) -> dropout kernel. Bounded: types x devices x impls. A dict, not a
# functools cache: an explicit engine is not cached, and the key is not the choice's arguments.
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
        kernel = _choose(Chosen.DROPOUT, lib, xp, check_impl(impl), getattr(x, "device", None))
        if impl in ("auto", "reference"):  # an explicit engine is re-checked each call (it may be unavailable)
            _SELECTED[key] = kernel
    return kernel


def select_mask(xp: ModuleType, impl: str, device: Any = None) -> MaskKernel:
    """The mask kernel for namespace ``xp`` on ``device``: ``impl="reference"`` forces the reference.

    Raises here, before any draw, if ``impl`` does not apply.
    """
    check_impl(impl)
    kernel: MaskKernel = _choose(Chosen.MASK, library_of(xp), xp, impl, device)
    return kernel


def select_block(xp: ModuleType, x: Any, impl: str, block: Block) -> Kernel | None:
    """The dropout kernel for ``x`` as ``block`` of a larger array; ``None`` where only the mask path applies.

    Dask and JAX draw any block themselves; the host kernels take a block that is
    one contiguous range of the global flat indices (rows of a row-sharded array).
    """
    kernel: Kernel | None = _choose(
        Chosen.BLOCK, library_of(xp), xp, impl, getattr(x, "device", None), block, tuple(x.shape)
    )
    return kernel


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
    from .._lib._traced import TracedU64

    for w in words:
        if isinstance(w, TracedU64):
            w._refuse()
