"""The one place that imports array-api-compat.

Everything xdrop needs to know about an array's library goes through here, so
that detection stays cheap (array-api-compat looks in ``sys.modules`` and never
imports a framework) and a change of compat layer touches one file.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol

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
    "ArrayType",
    "Recognisable",
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
    "recognise_with",
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


class Recognisable(Protocol):
    """What recognition asks of an array library: its short name and the predicate that tells its namespaces."""

    name: str
    recognises: Callable[[ModuleType], bool]


# The array libraries xdrop knows, in the order their predicates are tried: the kernels layer's one table
# (xdrop._kernels._select.LIBRARIES, each a Library that carries its recognition), handed over when the
# package is imported; this layer may not import that one.
_libraries: Mapping[str, Recognisable] = {}


def recognise_with(libraries: Mapping[str, Recognisable]) -> None:
    """Recognise arrays' libraries by ``libraries`` (the kernels layer's table, set once at import)."""
    global _libraries
    _libraries = libraries


def namespace_name(xp: ModuleType) -> str:
    """A short, stable name for a namespace, used in reports and error messages.

    The name of the first library whose predicate recognises ``xp``; a
    namespace none recognises is named by its module.

    Examples
    --------
    >>> import numpy as np
    >>> namespace_name(compat_namespace("numpy")), namespace_name(np)
    ('numpy', 'numpy')
    """
    if not _libraries:
        raise RuntimeError("no array library is known yet: import xdrop, whose kernels layer lists them")
    for lib in _libraries.values():
        if lib.recognises(xp):
            return lib.name
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
