"""The compiled host kernel: ``philox_dropout.c`` built at first use, loaded with ctypes.

Optional: when no C compiler is found, the build fails, the cache is refused or
``XDROP_NO_NATIVE`` is set, :func:`library` returns ``None`` (the reason is in
:func:`build_info`) and the NumPy engine takes over.

The cache runs code, so it is guarded like one:

- the directory (``XDROP_CACHE_DIR``, else ``$XDG_CACHE_HOME/xdrop``, else
  ``~/.cache/xdrop``; relative paths are refused or, for ``XDG_CACHE_HOME`` and
  ``HOME``, ignored as the XDG spec says) is created 0700 and used only if it is
  a real directory (not a symlink) owned by this user and not writable by group
  or others;
- every file is opened through that directory's descriptor with
  ``O_NOFOLLOW``, must be a regular file owned by this user, of sane size, and
  its SHA-256 must equal the one in its name (recorded at build) before it is
  loaded, from the very descriptor that was hashed; anything else is deleted
  and rebuilt, so a truncated or planted file is never mapped;
- a build compiles in a fresh private temporary directory, rejects empty
  output, writes the library under a temporary name in the cache, fsyncs
  it, renames it into place and fsyncs the directory; temporaries left
  by a killed build and builds unused for :data:`STALE_BUILD_S` are removed;
- ``CC`` must be an absolute path or a bare name looked up in the absolute
  entries of ``PATH`` (never the current directory); the compiler used is in
  :attr:`BuildInfo.compiler`.

The library holds several variants of the kernels (``"base"``, and
``"avx2"`` on x86-64): :func:`library` picks the best one this CPU runs.
ctypes releases the GIL during a call, so threads run the kernel in parallel.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import secrets
import shutil
import stat
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._stream import STREAM_VERSION

SOURCE = Path(__file__).with_name("philox_dropout.c")
# No -march=native: the cache may be shared by machines with different CPUs (the
# AVX2 functions carry target attributes and are chosen at load by cpuid).
FLAGS = ("-O3", "-std=c99", "-shared", "-fPIC")
# In the cache name: a library built for another stream version is never loaded.
STREAM_TAG = f"stream{STREAM_VERSION}"
# Variants in order of preference, and their bit in xd_variants().
VARIANTS = ("avx2", "base")
_VARIANT_BITS = {"base": 1, "avx2": 2}
_KERNEL_NAMES = ("xd_mask", "xd_dropout_f32", "xd_dropout_f64")
MAX_LIBRARY_BYTES = 64 << 20
# Temporaries older than this belong to a killed build (a build times out after BUILD_TIMEOUT_S).
BUILD_TIMEOUT_S = 120
STALE_TEMP_S = 600
STALE_BUILD_S = 30 * 24 * 3600
_PREFIX = "philox_dropout-"
_TEMP_PREFIX = ".tmp-"
_BUILD_DIR_PREFIX = "xdrop-build-"


class CacheRefused(Exception):
    """The cache directory or a path setting is unsafe: no library is built or loaded."""


class BuildFailed(Exception):
    """The compiler failed, produced nothing, or the result lacks the kernels."""


@dataclass(frozen=True)
class BuildInfo:
    """How the compiled kernel was obtained: for the benchmark's report and error messages."""

    path: str | None
    compiled: bool  # False when a cached build was loaded
    seconds: float  # build (if any) plus load
    error: str | None
    compiler: str | None = None  # absolute path of the compiler
    variant: str | None = None  # the variant library() returns by default
    variants: tuple[str, ...] = ()  # all variants this CPU runs
    refused: bool = False  # the cache was refused as unsafe (a warning was given)


class Kernels:
    """The ctypes entry points of one variant: ``xd_mask``, ``xd_dropout_f32/f64``, ``xd_block_words``."""

    def __init__(self, lib: ctypes.CDLL, variant: str) -> None:
        suffix = "" if variant == "base" else f"_{variant}"
        u64, ptr = ctypes.c_uint64, ctypes.c_void_p
        self.variant = variant
        self.handle = lib
        self.xd_mask = getattr(lib, "xd_mask" + suffix)
        self.xd_mask.argtypes = [u64, u64, u64, u64, u64, ptr]
        self.xd_dropout_f32 = getattr(lib, "xd_dropout_f32" + suffix)
        self.xd_dropout_f32.argtypes = [ptr, ptr, u64, u64, u64, u64, u64, ctypes.c_float]
        self.xd_dropout_f64 = getattr(lib, "xd_dropout_f64" + suffix)
        self.xd_dropout_f64.argtypes = [ptr, ptr, u64, u64, u64, u64, u64, ctypes.c_double]
        self.xd_block_words = lib.xd_block_words
        self.xd_block_words.argtypes = [u64, u64, u64, ptr]
        for fn in (self.xd_mask, self.xd_dropout_f32, self.xd_dropout_f64, self.xd_block_words):
            fn.restype = None
        # Entry points that take NumPy arrays themselves (see philox_dropout.c), called with the GIL
        # held: {NumPy dtype char: fn(x, out, seed, step, k, scale) -> 0 or an error code}; empty without them.
        self.array_dropout: dict[str, Any] = {}
        has_api = getattr(lib, "xd_buffer_api", None)
        if has_api is not None and has_api():
            held = ctypes.PyDLL(lib._name, handle=lib._handle)
            obj = ctypes.py_object
            for char, bits, real in (("f", "32", ctypes.c_float), ("d", "64", ctypes.c_double)):
                fn = getattr(held, f"xd_dropout_f{bits}_buf{suffix}")
                fn.argtypes = [obj, obj, u64, u64, u64, real]
                fn.restype = ctypes.c_int
                self.array_dropout[char] = fn


_lock = threading.Lock()
_state: dict[str, object] = {}


def _reinit_lock_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # a parent thread may have held it (a build) at fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_lock_in_child)


# -- where the cache is, and whether it is safe ---------------------------------------------------


def _home() -> Path:
    home = os.environ.get("HOME", "")
    if not os.path.isabs(home):  # HOME="" or relative: the account's home, never the cwd or "/"
        try:
            import pwd

            home = pwd.getpwuid(os.getuid()).pw_dir
        except (ImportError, KeyError):
            home = ""
    if not os.path.isabs(home):
        raise CacheRefused("no absolute home directory for the kernel cache; set XDROP_CACHE_DIR")
    return Path(home)


def cache_dir() -> Path:
    """The kernel cache directory (not yet checked: :func:`_open_private_dir` does that).

    Raises :class:`CacheRefused` for a relative ``XDROP_CACHE_DIR``.
    """
    configured = os.environ.get("XDROP_CACHE_DIR")
    if configured:
        if not os.path.isabs(configured):
            raise CacheRefused(f"XDROP_CACHE_DIR={configured!r} is not an absolute path")
        return Path(configured)
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(xdg):  # the XDG spec: a relative value is invalid and ignored
        return Path(xdg) / "xdrop"
    return _home() / ".cache" / "xdrop"


def _open_private_dir(path: Path) -> int:
    """A descriptor of ``path``, created 0700 if missing, after checking nobody else can write it."""
    if not hasattr(os, "O_NOFOLLOW") or not hasattr(os, "geteuid"):
        raise CacheRefused("the kernel cache needs a POSIX system (O_NOFOLLOW, owners)")
    with contextlib.suppress(FileExistsError):
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(path, 0o700)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        kind = "a symbolic link" if os.path.islink(path) else f"not usable ({exc.strerror})"
        raise CacheRefused(f"kernel cache {path} is {kind}") from None
    st = os.fstat(fd)
    problem = None
    if st.st_uid != os.geteuid():
        problem = f"is owned by uid {st.st_uid}, not this user (uid {os.geteuid()})"
    elif st.st_mode & 0o022:
        problem = f"is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}; if it is yours: chmod 700)"
    if problem:
        os.close(fd)
        raise CacheRefused(f"kernel cache {path} {problem}; set XDROP_CACHE_DIR to a private directory")
    return fd


def _fd_path(fd: int, fallback: Path) -> str:
    """A path that names exactly the open file ``fd`` (Linux), else ``fallback``."""
    proc = f"/proc/self/fd/{fd}"
    return proc if os.path.exists(proc) else str(fallback)


# -- the compiler ---------------------------------------------------------------------------------


def _which(name: str) -> str | None:
    """``name`` on the absolute entries of ``PATH`` only (no cwd, no relative entries)."""
    dirs = [d for d in os.environ.get("PATH", os.defpath).split(os.pathsep) if os.path.isabs(d)]
    found = shutil.which(name, path=os.pathsep.join(dirs)) if dirs else None
    return os.path.abspath(found) if found else None


def compiler() -> str | None:
    """Absolute path of the C compiler: ``CC`` (absolute, or a bare name on ``PATH``), else cc, gcc, clang.

    Raises :class:`CacheRefused` for a relative ``CC`` with a slash (it would run a program
    from the current directory) and :class:`BuildFailed` for a ``CC`` that is not found.
    """
    cc = os.environ.get("CC", "").strip()
    if cc:
        if os.sep in cc or (os.altsep and os.altsep in cc):
            if not os.path.isabs(cc):
                raise CacheRefused(f"CC={cc!r} is a relative path: refused (give an absolute path or a bare name)")
            if not (os.path.isfile(cc) and os.access(cc, os.X_OK)):
                raise BuildFailed(f"CC={cc!r} is not an executable file")
            return cc
        found = _which(cc)
        if found is None:
            raise BuildFailed(f"CC={cc!r} not found on the absolute entries of PATH")
        return found
    for name in ("cc", "gcc", "clang"):
        if found := _which(name):
            return found
    return None


# -- reading, writing and cleaning the cache -------------------------------------------------------


def _read_verified(dir_fd: int, name: str, digest: str) -> int | None:
    """An open descriptor of cache file ``name`` if it is a sane regular file of ours whose SHA-256 is ``digest``."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:  # a symlink (ELOOP), vanished, unreadable
        return None
    st = os.fstat(fd)
    ok = (
        stat.S_ISREG(st.st_mode)
        and st.st_uid == os.geteuid()
        and not st.st_mode & 0o022
        and 0 < st.st_size <= MAX_LIBRARY_BYTES
    )
    if ok:
        h = hashlib.sha256()
        while chunk := os.read(fd, 1 << 20):
            h.update(chunk)
        ok = h.hexdigest() == digest
    if not ok:
        os.close(fd)
        return None
    return fd


def _unlink(dir_fd: int, name: str) -> None:
    with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
        os.unlink(name, dir_fd=dir_fd)


def _clean(dir_fd: int, keep_prefix: str) -> None:
    """Remove temporaries of killed builds and builds of other keys unused for STALE_BUILD_S."""
    now = time.time()
    for name in os.listdir(dir_fd):
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        age = now - st.st_mtime
        if (name.startswith(_TEMP_PREFIX) and age > STALE_TEMP_S) or (
            name.startswith(_PREFIX) and not name.startswith(keep_prefix) and age > STALE_BUILD_S
        ):
            _unlink(dir_fd, name)
    # Compiler work directories of killed builds, in the system temporary directory.
    tmp = Path(tempfile.gettempdir())
    with contextlib.suppress(OSError):
        for entry in os.scandir(tmp):
            if entry.name.startswith(_BUILD_DIR_PREFIX) and entry.is_dir(follow_symlinks=False):
                st = entry.stat(follow_symlinks=False)
                if st.st_uid == os.geteuid() and now - st.st_mtime > STALE_TEMP_S:
                    shutil.rmtree(entry.path, ignore_errors=True)


def _compile(cc: str) -> bytes:
    """The shared object's bytes, compiled in a fresh private temporary directory."""
    with tempfile.TemporaryDirectory(prefix=_BUILD_DIR_PREFIX) as work:
        out = Path(work) / "philox_dropout.so"
        proc = subprocess.run([cc, *FLAGS, "-o", str(out), str(SOURCE)], capture_output=True, timeout=BUILD_TIMEOUT_S)
        if proc.returncode != 0:
            detail = proc.stderr.decode(errors="replace").strip()
            raise BuildFailed(f"{cc} exited with status {proc.returncode}: {detail}")
        try:
            data = out.read_bytes()
        except FileNotFoundError:
            raise BuildFailed(f"{cc} exited 0 but wrote no library") from None
    if not data:
        raise BuildFailed(f"{cc} exited 0 but wrote an empty library")
    if len(data) > MAX_LIBRARY_BYTES:
        raise BuildFailed(f"{cc} wrote a library of {len(data)} bytes, over {MAX_LIBRARY_BYTES}")
    return data


def _store(dir_fd: int, name: str, data: bytes) -> None:
    """Write ``data`` as cache file ``name`` whole: a temporary in the same directory, fsync, rename, fsync."""
    tmp = f"{_TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(8)}.so"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o700, dir_fd=dir_fd)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        _unlink(dir_fd, tmp)
        raise
    os.fsync(dir_fd)


def _candidates(dir_fd: int, prefix: str) -> Iterator[tuple[str, str]]:
    """(name, recorded digest) of the cache files for this key, newest first."""
    names = [n for n in os.listdir(dir_fd) if n.startswith(prefix) and n.endswith(".so")]

    def mtime(n: str) -> float:
        try:
            return os.stat(n, dir_fd=dir_fd, follow_symlinks=False).st_mtime
        except FileNotFoundError:
            return 0.0

    for name in sorted(names, key=mtime, reverse=True):
        yield name, name[len(prefix) : -len(".so")]


def _open_library(fd: int, path: Path) -> tuple[ctypes.CDLL, tuple[str, ...]]:
    """dlopen the verified descriptor ``fd``; the variants this CPU runs, each with all its kernels."""
    lib = ctypes.CDLL(_fd_path(fd, path))
    try:
        lib.xd_variants.restype = ctypes.c_int
        lib.xd_variants.argtypes = []
        bits = int(lib.xd_variants())
        variants = tuple(v for v in VARIANTS if bits & _VARIANT_BITS[v])
        for v in variants:
            suffix = "" if v == "base" else f"_{v}"
            for name in (*(n + suffix for n in _KERNEL_NAMES), "xd_block_words"):
                getattr(lib, name)
    except AttributeError as exc:
        raise BuildFailed(f"library {path.name} lacks an expected symbol: {exc}") from None
    if "base" not in variants:
        raise BuildFailed(f"library {path.name} reports no base variant")
    return lib, variants


def _cache_key(cc: str) -> str:
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    text = "\0".join([SOURCE.read_text(), STREAM_TAG, cc, version, *FLAGS])
    return f"{_PREFIX}{STREAM_TAG}-{platform.machine()}-{hashlib.sha256(text.encode()).hexdigest()[:16]}-"


def _load_from(dir_fd: int, directory: Path, prefix: str, cc: str) -> tuple[ctypes.CDLL, tuple[str, ...], str, bool]:
    """Load a verified cached build for ``prefix`` (deleting bad ones), else build one, once."""
    for attempt in range(2):
        for name, digest in _candidates(dir_fd, prefix):
            fd = _read_verified(dir_fd, name, digest)
            if fd is None:
                _unlink(dir_fd, name)  # corrupt, truncated, foreign or a symlink: never loaded
                continue
            # fd stays open: the loader may know the library by the name /proc/self/fd/<fd>,
            # which must not come to name another file (dlopen would return the old one).
            try:
                lib, variants = _open_library(fd, directory / name)
            except (OSError, BuildFailed):
                _unlink(dir_fd, name)
                continue
            with contextlib.suppress(OSError):
                os.utime(name, dir_fd=dir_fd)  # in use: not stale
            return lib, variants, str(directory / name), attempt > 0
        if attempt == 0:
            _clean(dir_fd, prefix)
            data = _compile(cc)
            _store(dir_fd, f"{prefix}{hashlib.sha256(data).hexdigest()}.so", data)
    raise BuildFailed("a freshly built library failed verification or lacks the kernels")


def _load() -> tuple[Kernels | None, BuildInfo]:
    """Build or load the library: (kernels of the best variant or None, how)."""
    t0 = time.perf_counter()
    if os.environ.get("XDROP_NO_NATIVE"):
        return None, BuildInfo(None, False, 0.0, "disabled by XDROP_NO_NATIVE")
    cc: str | None = None
    try:
        cc = compiler()
        if cc is None:
            return None, BuildInfo(None, False, 0.0, "no C compiler found")
        directory = cache_dir()
        dir_fd = _open_private_dir(directory)
        try:
            lib, variants, path, compiled = _load_from(dir_fd, directory, _cache_key(cc), cc)
        finally:
            os.close(dir_fd)
    except CacheRefused as exc:
        info = BuildInfo(None, False, time.perf_counter() - t0, f"kernel cache refused: {exc}", cc, refused=True)
        return None, info
    except (OSError, subprocess.SubprocessError, BuildFailed) as exc:
        detail = getattr(exc, "stderr", None) or str(exc)
        if isinstance(detail, bytes):
            detail = detail.decode(errors="replace")
        return None, BuildInfo(None, False, time.perf_counter() - t0, f"{type(exc).__name__}: {detail}"[:500], cc)
    info = BuildInfo(path, compiled, time.perf_counter() - t0, None, cc, variants[0], variants)
    return Kernels(lib, variants[0]), info


def library(variant: str | None = None) -> Kernels | None:
    """The kernels of ``variant`` (default: the best this CPU runs), built on first use; ``None`` if unavailable.

    When the cache is refused as unsafe, a ``RuntimeWarning`` says why, once per process.
    """
    if "lib" not in _state:
        with _lock:
            if "lib" not in _state:
                loaded, info = _load()
                _state["info"] = info
                _state["lib"] = loaded
                if info.refused:
                    warnings.warn(f"xdrop uses the NumPy engine: {info.error}", RuntimeWarning, stacklevel=2)
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
    """How :func:`library` obtained the kernel (loads it if not done yet)."""
    library()
    info = _state["info"]
    assert isinstance(info, BuildInfo)
    return info
