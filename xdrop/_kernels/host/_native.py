"""The compiled host kernel: ``philox_dropout.c`` built at install time into the extension ``_philox``.

meson-python compiles it when the package is built (``pip install .``, a
wheel); nothing is compiled or cached at run time. A build without a C
compiler, or with ``-Dkernel=disabled``, installs no extension: then
:func:`library` returns ``None`` (the reason is in :func:`build_info`), the
NumPy engine takes over and a ``RuntimeWarning`` says so once per process.

The extension holds the kernels in up to three variants: ``"base"`` and, on
x86-64, ``"avx2"`` and ``"avx512"``; it reports by cpuid which ones this CPU
runs, and :func:`library` uses the best of them, or the one that
``XDROP_KERNEL_VARIANT`` names (for tests and benchmarks). Every variant is
tested bit-identical to the reference on each CPU that runs it
(``tests/test_kernels.py``).
"""

from __future__ import annotations

import importlib
import os
import threading
import time
import warnings
from dataclasses import dataclass
from types import ModuleType
from typing import Any

# Also what the CUDA path compiles (NVRTC). A str, not a pathlib.Path: pathlib is ~8 ms of import xdrop.
SOURCE = os.path.join(os.path.dirname(__file__), "src", "philox_dropout.c")
# Every variant the extension may hold, best first: the first one this CPU runs is the default.
VARIANTS = ("avx512", "avx2", "base")
VARIANT_ENV = "XDROP_KERNEL_VARIANT"
# The NumPy engine's cost against the kernel's (issue #23's measurements), for the fallback warning.
SLOWDOWN = "about 18x slower at 2**24 float32 elements, and about 1 us per element at 64"


@dataclass(frozen=True)
class BuildInfo:
    """How the compiled kernel was obtained: for the benchmark's report, ``verify`` and error messages."""

    path: str | None  # the extension's file
    seconds: float  # the extension's import
    error: str | None  # why there is no kernel
    variant: str | None = None  # the variant library() returns by default
    variants: tuple[str, ...] = ()  # all variants this CPU runs, best first


class Kernels:
    """One variant's entry points: ``xd_mask``, ``xd_dropout_f32/f64`` (addresses), ``array_dropout`` (arrays).

    ``xd_mask(start, n, seed, step, k, out_address)`` and
    ``xd_dropout_f32(x_address, out_address, start, n, seed, step, k, scale)``
    release the GIL for large ``n``; ``array_dropout[char](x, out, seed, step,
    k, scale)`` takes C-contiguous NumPy arrays of the dtype with that
    character and raises ``ValueError`` when their sizes differ.
    ``attention[itemsize](s, dp, lse, ...)`` runs one float32 (4) or float64
    (8) block of the attention operator in place (``xdrop._kernels.torch._attention``);
    ``attention_mm(q, k, v, dout, out, lse, dq, dk, dv, N, E, Ev, threads,
    parallel, ...)`` runs all of it with the products included (float32; the
    avx512 and avx2 variants where POSIX threads exist, ``None`` elsewhere).
    """

    def __init__(self, module: ModuleType, variant: str) -> None:
        self.variant = variant
        self.handle = module
        self.xd_mask = getattr(module, f"mask_{variant}")
        self.xd_dropout_f32 = getattr(module, f"dropout_f32_{variant}")
        self.xd_dropout_f64 = getattr(module, f"dropout_f64_{variant}")
        self.xd_block_words = module.block_words
        self.array_dropout: dict[str, Any] = {
            "f": getattr(module, f"dropout_f32_buf_{variant}"),
            "d": getattr(module, f"dropout_f64_buf_{variant}"),
        }
        self.attention: dict[int, Any] = {
            4: getattr(module, f"attention_f32_{variant}"),
            8: getattr(module, f"attention_f64_{variant}"),
        }
        # Parts of float32 attention with the kernel's own products: the avx512 and avx2 variants.
        self.attention_mm: Any = getattr(module, f"attention_mm_f32_{variant}", None)


_lock = threading.Lock()
_state: dict[str, object] = {}


def _import_extension() -> ModuleType | None:
    """The extension module, or None when the build installed none."""
    try:  # by name: the extension is not a Python module the layer check could place
        return importlib.import_module(f"{__package__}._philox")
    except ImportError:
        return None


def _choose(available: tuple[str, ...]) -> str:
    """The variant ``XDROP_KERNEL_VARIANT`` names (it must be one this CPU runs), else the best default one."""
    wanted = os.environ.get(VARIANT_ENV, "").strip()
    if not wanted:
        return next(v for v in VARIANTS if v in available)
    if wanted not in available:
        raise ValueError(
            f"{VARIANT_ENV}={wanted!r} is not a kernel variant this CPU runs; it runs {', '.join(available)}"
        )
    return wanted


def _load() -> tuple[Kernels | None, BuildInfo]:
    """Import the extension: (kernels of the chosen variant or None, how)."""
    t0 = time.perf_counter()
    module = _import_extension()
    if module is None:
        error = "the compiled kernel is not installed (built without a C compiler, or with -Dkernel=disabled)"
        return None, BuildInfo(None, time.perf_counter() - t0, error)
    available = tuple(module.variants())
    variant = _choose(available)
    info = BuildInfo(module.__file__, time.perf_counter() - t0, None, variant, available)
    return Kernels(module, variant), info


def library(variant: str | None = None) -> Kernels | None:
    """The kernels of ``variant`` (default: the best this CPU runs); ``None`` if unavailable.

    Without the extension a ``RuntimeWarning`` names the slowdown, once per process.
    """
    if "lib" not in _state:
        with _lock:
            if "lib" not in _state:
                loaded, info = _load()
                _state["info"] = info
                _state["lib"] = loaded
                if loaded is None:
                    message = f"xdrop uses the NumPy engine, {SLOWDOWN}: {info.error}"
                    warnings.warn(message, RuntimeWarning, stacklevel=2)
    lib = _state["lib"]
    if not isinstance(lib, Kernels):
        return None
    if variant is None or variant == lib.variant:
        return lib
    if variant not in build_info().variants:
        return None
    key = f"lib-{variant}"
    if key not in _state:
        _state[key] = Kernels(lib.handle, variant)
    other = _state[key]
    assert isinstance(other, Kernels)
    return other


def build_info() -> BuildInfo:
    """How :func:`library` obtained the kernel (imports it if not done yet)."""
    library()
    info = _state["info"]
    assert isinstance(info, BuildInfo)
    return info
