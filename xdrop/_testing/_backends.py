"""The backend registry: every array library xdrop is tested and verified on, one entry each.

Read by the tests (``tests/conftest.py`` builds its ``Backend`` enum and
fixtures from it), by ``python -m xdrop verify``, by ``python -m xdrop bench``
and by the noxfile (which loads this file by path, so it imports nothing but
the standard library at import time; every library is imported inside a
loader). A tool, above the public functions its loaders call: nothing in
xdrop's run time reads it. Each entry's ``namespace`` names the
:class:`xdrop._kernels.Library` its arrays belong to (a key of
:data:`xdrop._kernels.LIBRARIES`, the run time's one table, which
recognises them and chooses their kernels), and ``namespace_check`` names
that library's array-api-compat predicate (spelled out, as this file imports
no xdrop module at import time; a test checks both against the table).

Adding a backend is one :class:`Entry` in :data:`REGISTRY`: its name, the
modules it needs, the pip packages its test session installs, whether it
needs a GPU, the array-api-compat namespace it shows up as, and a loader that
returns a :class:`Backend` (how the tests and checks reach it) or a string
saying why it cannot run here ("no CUDA device"). An ``ImportError`` from the
loader means "not installed".

Examples
--------
>>> from xdrop._testing._backends import REGISTRY, load
>>> REGISTRY["torch-cuda"].gpu, REGISTRY["torch-cuda"].namespace
(True, 'torch')
>>> load("numpy").dtypes
('float16', 'float32', 'float64')
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

__all__ = ["REGISTRY", "Backend", "Entry", "cpu_entries", "gpu_entries", "load"]


@dataclass(frozen=True)
class Backend:
    """A loaded backend: its namespace, a device, converters and dtypes.

    ``dtypes`` names the floating dtypes it has ("float16", "bfloat16",
    "float32", "float64"); ``autograd``, where the library differentiates,
    returns the gradient of ``sum(dropout(x, p, seed=, step=) * dout)``;
    ``sync`` waits for queued device work (benchmarks time with it).
    """

    name: str
    xp: ModuleType
    device: Any
    to_numpy: Callable[[Any], np.ndarray]
    from_numpy: Callable[[np.ndarray], Any]
    dtypes: tuple[str, ...] = ("float32", "float64")
    autograd: Callable[[Any, Any, float, int, int], Any] | None = None
    # A context the checks run in (JAX: x64 on, for float64).
    scope: Callable[[], AbstractContextManager[Any]] = nullcontext
    sync: Callable[[], None] = lambda: None

    def asarray(self, a: np.ndarray, dtype: str | None = None) -> Any:
        """``a`` on this backend, cast to ``dtype`` there (NumPy has no bfloat16)."""
        out = self.from_numpy(a)
        if dtype is None or dtype == a.dtype.name:
            return out
        return self.xp.astype(out, getattr(self.xp, dtype))

    def describe_device(self) -> str:
        """The device its arrays land on, as array-api-compat names it."""
        import numpy as np

        from .._lib._compat import device

        return str(device(self.from_numpy(np.zeros(1))))


@dataclass(frozen=True)
class Entry:
    """One backend in the registry.

    Attributes
    ----------
    name : str
        The name users pass (``XDROP_BACKENDS=``, ``verify --backend``).
    namespace : str
        What :func:`xdrop._lib._compat.namespace_name` calls its arrays' namespace
        (``torch`` for ``torch-cuda`` too): a key of ``xdrop._kernels.LIBRARIES``.
    namespace_check : str
        The name of that library's array-api-compat predicate (its ``recognises``).
    modules : tuple of str
        Modules it imports; their versions go into verify's report.
    packages : tuple of str
        Requirements its test session installs beside ``xdrop[test]``
        (none: it runs in the light environment with NumPy only).
    gpu : bool
        Needs a CUDA device; its session skips, saying why, without one.
    loader : callable
        Returns a :class:`Backend`, or why it cannot run here.
    """

    name: str
    namespace: str
    namespace_check: str
    modules: tuple[str, ...]
    packages: tuple[str, ...]
    gpu: bool
    loader: Callable[[], Backend | str]


def _autograd_torch(x: Any, dout: Any, p: float, seed: int, step: int) -> Any:
    from .._functional._dropout import dropout

    leaf = x.detach().clone().requires_grad_()
    dropout(leaf, p, seed=seed, step=step).backward(dout)
    return leaf.grad


def _torch(cuda: bool) -> Backend | str:
    from .._lib._compat import compat_namespace

    torch = importlib.import_module("torch")
    if cuda and not torch.cuda.is_available():
        return "no CUDA device"
    dev = torch.device("cuda" if cuda else "cpu")

    def to_numpy(a: Any) -> np.ndarray:
        t = a.detach().cpu()
        out: np.ndarray = (t.float() if t.dtype == torch.bfloat16 else t).numpy()
        return out

    return Backend(
        "torch-cuda" if cuda else "torch",
        compat_namespace("torch"),
        dev,
        to_numpy,
        lambda a: torch.asarray(a.copy(), device=dev),  # copy: torch rejects negative strides
        ("float16", "bfloat16", "float32", "float64"),
        _autograd_torch,
        sync=torch.cuda.synchronize if cuda else lambda: None,
    )


def _cupy() -> Backend | str:
    from .._lib._compat import compat_namespace

    cupy = importlib.import_module("cupy")
    try:
        if cupy.cuda.runtime.getDeviceCount() == 0:
            return "no CUDA device"
    except Exception as exc:  # CUDARuntimeError where no driver is present
        return f"no CUDA device ({type(exc).__name__})"
    return Backend(
        "cupy",
        compat_namespace("cupy"),
        None,
        lambda a: a.get(),
        cupy.asarray,
        ("float16", "float32", "float64"),
        sync=lambda: cupy.cuda.Device().synchronize(),
    )


def _numpy() -> Backend:
    import numpy as np

    from .._lib._compat import compat_namespace

    return Backend("numpy", compat_namespace("numpy"), None, np.asarray, np.asarray, ("float16", "float32", "float64"))


def _strict() -> Backend:
    import numpy as np

    xp = importlib.import_module("array_api_strict")
    return Backend("array_api_strict", xp, None, np.from_dlpack, xp.asarray)


def _jax() -> Backend:
    import numpy as np

    from .._functional._dropout import dropout

    jax = importlib.import_module("jax")
    jnp = importlib.import_module("jax.numpy")

    def autograd(x: Any, dout: Any, p: float, seed: int, step: int) -> Any:
        return jax.grad(lambda a: jnp.vdot(dropout(a, p, seed=seed, step=step), dout))(x)

    # The checks need float64, which JAX has only with x64: they run inside
    # jax.enable_x64 (a context, so the process's mode is left as it was).
    return Backend(
        "jax",
        jnp,
        None,
        np.asarray,
        jnp.asarray,
        ("float16", "float32", "float64"),
        autograd,
        lambda: jax.enable_x64(True),
    )


def _dask() -> Backend:
    import numpy as np

    from .._lib._compat import compat_namespace

    da = importlib.import_module("dask.array")
    xp = compat_namespace("dask.array")

    def from_numpy(a: np.ndarray) -> Any:  # uneven chunks, about two per axis
        return da.from_array(a, chunks=tuple((d + 2) // 2 or 1 for d in a.shape))

    # array-api-compat's dask namespace exposes no float16
    return Backend("dask", xp, None, lambda a: np.asarray(a.compute()), from_numpy, ("float32", "float64"))


REGISTRY: dict[str, Entry] = {
    e.name: e
    for e in (
        Entry("numpy", "numpy", "is_numpy_namespace", ("numpy",), (), False, _numpy),
        Entry(
            "array_api_strict",
            "array_api_strict",
            "is_array_api_strict_namespace",
            ("array_api_strict",),
            (),
            False,
            _strict,
        ),
        # triton and transformers: tests of the torch paths that use them skip without them
        Entry(
            "torch",
            "torch",
            "is_torch_namespace",
            ("torch",),
            ("torch", "triton", "transformers"),
            False,
            lambda: _torch(False),
        ),
        Entry("torch-cuda", "torch", "is_torch_namespace", ("torch",), ("torch",), True, lambda: _torch(True)),
        Entry("cupy", "cupy", "is_cupy_namespace", ("cupy",), ("cupy-cuda12x",), True, _cupy),
        Entry("jax", "jax", "is_jax_namespace", ("jax",), ("jax",), False, _jax),
        Entry("dask", "dask", "is_dask_namespace", ("dask",), ("dask[array,distributed]>=2024.8",), False, _dask),
    )
}


def cpu_entries() -> list[Entry]:
    """The backends that run without a GPU, in registry order."""
    return [e for e in REGISTRY.values() if not e.gpu]


def gpu_entries() -> list[Entry]:
    """The backends that need a CUDA device, in registry order."""
    return [e for e in REGISTRY.values() if e.gpu]


def load(name: str) -> Backend | str:
    """The backend, or why it is unavailable ("not installed (torch)", "no CUDA device").

    An unknown name raises ``KeyError``; an installed library that fails to
    load raises its own error (a broken install is a failure, not a skip).
    """
    try:
        return REGISTRY[name].loader()
    except ImportError as exc:
        return f"not installed ({exc.name or exc})"
