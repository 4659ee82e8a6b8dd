"""The one place that imports array-api-compat.

Everything xdrop needs to know about an array's library goes through here, so
that detection stays cheap (array-api-compat looks in ``sys.modules`` and never
imports a framework) and a change of compat layer touches one file.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

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
    "NAMESPACES",
    "ArrayType",
    "array_namespace",
    "array_type",
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


# The namespaces xdrop knows, by the short name errors and reports use, and the array-api-compat
# predicate that recognises each: the one place an array's library is recognised. (The backend
# registry, xdrop._backends, names these namespaces; a test keeps the two in step.)
NAMESPACES: dict[str, Callable[[ModuleType], bool]] = {
    "numpy": is_numpy_namespace,
    "array_api_strict": is_array_api_strict_namespace,
    "torch": is_torch_namespace,
    "cupy": is_cupy_namespace,
    "jax": is_jax_namespace,
    "dask": is_dask_namespace,
}


def namespace_name(xp: ModuleType) -> str:
    """A short, stable name for a namespace, used in reports and error messages.

    The names are the keys of :data:`NAMESPACES`; a namespace it does not know
    is named by its module.

    Examples
    --------
    >>> import numpy as np
    >>> namespace_name(compat_namespace("numpy")), namespace_name(np)
    ('numpy', 'numpy')
    """
    for name, check in NAMESPACES.items():
        if check(xp):
            return name
    return getattr(xp, "__name__", repr(xp))


@dataclass(frozen=True, slots=True)
class ArrayType:
    """What xdrop needs to know about one array *type*, found once and cached.

    ``xp`` and ``name`` are the namespace and its short name; ``traced`` is
    true for JAX tracer types (the value is unknown while JAX traces).
    """

    xp: ModuleType
    name: str
    traced: bool


_TYPES: dict[type, ArrayType] = {}


def _is_jax_tracer_type(t: type) -> bool:
    if "jax" not in sys.modules:
        return False
    from jax.core import Tracer

    return issubclass(t, Tracer)


def array_type(x: Any) -> ArrayType | None:
    """The cached :class:`ArrayType` of ``type(x)``, or ``None`` if ``x`` is no supported array.

    array-api-compat is asked once per type; afterwards a dict lookup replaces
    ``array_namespace`` on the hot path (the namespace of an array depends
    only on its type in every supported library).
    """
    t = type(x)
    found = _TYPES.get(t)
    if found is not None:
        return found
    if not is_array_api_obj(x):
        return None  # not cached: error paths need not be fast, and the dict stays small
    xp = array_namespace(x)
    found = ArrayType(xp, namespace_name(xp), _is_jax_tracer_type(t))
    if t.__module__ != "numpy" or found.name == "numpy":  # JAX's float0 gradients are NumPy arrays: not cached
        _TYPES[t] = found
    return found
