"""The compiled host kernel: ``philox_dropout.c`` built at first use, loaded with ctypes.

Optional: when no C compiler is found, the build fails, or ``XDROP_NO_NATIVE``
is set, :func:`library` returns ``None`` and the NumPy kernels take over. The
shared object is cached (``XDROP_CACHE_DIR``, else ``$XDG_CACHE_HOME/xdrop`` or
``~/.cache/xdrop``) under a name that hashes the source, the compiler and its
flags, and is written under a temporary name and renamed, so a concurrent or
interrupted build never leaves a half-written library behind.

ctypes releases the GIL during a call, so threads run the kernel in parallel.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SOURCE = Path(__file__).with_name("philox_dropout.c")
# No -march=native: the cache may be shared by machines with different CPUs.
FLAGS = ("-O3", "-std=c99", "-shared", "-fPIC")


@dataclass(frozen=True)
class BuildInfo:
    """How the compiled kernel was obtained: for the benchmark's report."""

    path: str | None
    compiled: bool  # False when a cached build was loaded
    seconds: float  # build (if any) plus load
    error: str | None


_lock = threading.Lock()
_state: dict[str, object] = {}


def cache_dir() -> Path:
    if os.environ.get("XDROP_CACHE_DIR"):
        return Path(os.environ["XDROP_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "xdrop"


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


def _build(cc: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        subprocess.run([cc, *FLAGS, "-o", tmp, str(SOURCE)], check=True, capture_output=True, timeout=120)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _declare(lib: ctypes.CDLL) -> None:
    u64, ptr = ctypes.c_uint64, ctypes.c_void_p
    lib.xd_mask.argtypes = [u64, u64, u64, u64, u64, ptr]
    lib.xd_dropout_f32.argtypes = [ptr, ptr, u64, u64, u64, u64, u64, ctypes.c_float]
    lib.xd_dropout_f64.argtypes = [ptr, ptr, u64, u64, u64, u64, u64, ctypes.c_double]
    lib.xd_block_words.argtypes = [u64, u64, u64, ptr]
    for name in ("xd_mask", "xd_dropout_f32", "xd_dropout_f64", "xd_block_words"):
        getattr(lib, name).restype = None


def _load() -> tuple[ctypes.CDLL | None, BuildInfo]:
    t0 = time.perf_counter()
    if os.environ.get("XDROP_NO_NATIVE"):
        return None, BuildInfo(None, False, 0.0, "disabled by XDROP_NO_NATIVE")
    cc = _compiler()
    if cc is None:
        return None, BuildInfo(None, False, 0.0, "no C compiler found")
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
        digest = hashlib.sha256("\0".join([SOURCE.read_text(), cc, version, *FLAGS]).encode()).hexdigest()[:16]
        target = cache_dir() / f"philox_dropout-{platform.machine()}-{digest}.so"
        compiled = not target.exists()
        if compiled:
            _build(cc, target)
        lib = ctypes.CDLL(str(target))
        _declare(lib)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", None) or str(exc)
        if isinstance(detail, bytes):
            detail = detail.decode(errors="replace")
        return None, BuildInfo(None, False, time.perf_counter() - t0, f"{type(exc).__name__}: {detail}"[:500])
    return lib, BuildInfo(str(target), compiled, time.perf_counter() - t0, None)


def library() -> ctypes.CDLL | None:
    """The loaded kernel library, built on first use; ``None`` if unavailable."""
    if "lib" not in _state:
        with _lock:
            if "lib" not in _state:
                loaded, info = _load()
                _state["info"] = info
                _state["lib"] = loaded
    lib = _state["lib"]
    return lib if isinstance(lib, ctypes.CDLL) else None


def build_info() -> BuildInfo:
    """How :func:`library` obtained the kernel (loads it if not done yet)."""
    library()
    info = _state["info"]
    assert isinstance(info, BuildInfo)
    return info
