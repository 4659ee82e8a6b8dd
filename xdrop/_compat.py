"""The one place that imports array-api-compat.

Everything xdrop needs to know about an array's library goes through here, so
that detection stays cheap (array-api-compat looks in ``sys.modules`` and never
imports a framework) and a change of compat layer touches one file.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

import array_api_compat
from array_api_compat import (
    array_namespace as _array_namespace,
)
from array_api_compat import (
    device,
    is_array_api_obj,
    is_array_api_strict_namespace,
    is_cupy_namespace,
    is_dask_namespace,
    is_jax_array,
    is_jax_namespace,
    is_numpy_namespace,
    is_torch_namespace,
    size,
    to_device,
)

__all__ = [
    "array_namespace",
    "compat_namespace",
    "device",
    "is_array_api_obj",
    "is_array_api_strict_namespace",
    "is_cupy_namespace",
    "is_dask_namespace",
    "is_jax_array",
    "is_jax_namespace",
    "is_numpy_namespace",
    "is_torch_namespace",
    "namespace_name",
    "numpy_namespace",
    "size",
    "to_device",
]


def array_namespace(*arrays: Any) -> ModuleType:
    """Return the standard namespace of ``arrays``, with a one-line error.

    Python scalars and ``None`` are ignored, as in array-api-compat.
    """
    try:
        return _array_namespace(*arrays)
    except TypeError:
        kinds = sorted({type(a).__module__ + "." + type(a).__qualname__ for a in arrays})
        raise TypeError(f"expected arrays of one supported library, got {', '.join(kinds)}") from None


def compat_namespace(library: str) -> ModuleType:
    """array-api-compat's standard wrapper of ``library`` ("numpy", "torch", "cupy", ...).

    Imports that library: call it only when the library is wanted.
    """
    return importlib.import_module(f"array_api_compat.{library}")


def numpy_namespace() -> ModuleType:
    """The standard namespace wrapping NumPy (imports NumPy, not a framework)."""
    return compat_namespace("numpy")


@functools.cache
def _namespace_checks() -> tuple[tuple[str, Callable[[ModuleType], bool]], ...]:
    # Built once from the backend registry, the one list of namespaces xdrop knows.
    from . import _backends

    checks = {e.namespace: getattr(array_api_compat, e.namespace_check) for e in _backends.REGISTRY.values()}
    return tuple(checks.items())


def namespace_name(xp: ModuleType) -> str:
    """A short, stable name for a namespace, used in reports and error messages.

    The names are the backend registry's (:mod:`xdrop._backends`); a namespace
    it does not know is named by its module.

    Examples
    --------
    >>> import numpy as np
    >>> namespace_name(compat_namespace("numpy")), namespace_name(np)
    ('numpy', 'numpy')
    """
    for name, check in _namespace_checks():
        if check(xp):
            return name
    return getattr(xp, "__name__", repr(xp))
