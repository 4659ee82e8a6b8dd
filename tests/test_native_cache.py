"""The compiled-kernel cache cannot be hijacked, and a bad cache entry is rebuilt, never loaded.

Each test points ``XDROP_CACHE_DIR`` at its own directory and calls
``_native._load()`` (what :func:`xdrop._kernels._native.library` runs once per
process). A planted library has a constructor that writes a marker file when
it is loaded, so "never loaded" is checked directly, not inferred.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

import xdrop
from xdrop._kernels import _host, _native

pytestmark = pytest.mark.skipif(
    shutil.which("cc") is None or bool(os.environ.get("XDROP_NO_NATIVE")), reason="no C compiler (or XDROP_NO_NATIVE)"
)

PLANT_C = r"""
#include <stdio.h>
__attribute__((constructor)) static void planted(void) {
    FILE *f = fopen("%s", "w");
    if (f) { fputs("loaded", f); fclose(f); }
}
void not_a_kernel(void) {}
"""


def private_dir(path):
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


@pytest.fixture
def cache(monkeypatch, tmp_path):
    d = private_dir(tmp_path / "cache")
    monkeypatch.setenv("XDROP_CACHE_DIR", str(d))
    monkeypatch.delenv("XDROP_NO_NATIVE", raising=False)
    return d


@pytest.fixture(scope="module")
def planted_lib(tmp_path_factory):
    """(bytes of a shared object that writes a marker when loaded, the marker path)."""
    work = tmp_path_factory.mktemp("plant")
    marker = work / "marker"
    src = work / "plant.c"
    src.write_text(PLANT_C % marker)
    so = work / "plant.so"
    subprocess.run([_native.compiler(), "-shared", "-fPIC", "-o", str(so), str(src)], check=True, capture_output=True)
    return so.read_bytes(), marker


def key_prefix():
    return _native._cache_key(_native.compiler())


def plant(directory, data, digest=None, mode=0o700):
    """Put ``data`` in the cache under this build's key; the name records ``digest`` (default: the true one)."""
    name = f"{key_prefix()}{digest or hashlib.sha256(data).hexdigest()}.so"
    path = directory / name
    path.write_bytes(data)
    path.chmod(mode)
    return path


def libraries(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".so"))


def assert_built_fresh(directory):
    lib, info = _native._load()
    assert lib is not None and info.error is None, info.error
    assert info.compiled, "a bad cache entry must be rebuilt"
    name = os.path.basename(info.path)
    data = (directory / name).read_bytes()
    assert name.endswith(f"-{hashlib.sha256(data).hexdigest()}.so")  # the hash in the name is the content's
    return lib, info


# -- a sound cache ------------------------------------------------------------------------------------


def test_fresh_build_is_private_hashed_and_reused(monkeypatch, tmp_path):
    d = tmp_path / "new" / "cache"
    monkeypatch.setenv("XDROP_CACHE_DIR", str(d))
    old_umask = os.umask(0)  # even with umask 0 the directory is private
    try:
        _, info = assert_built_fresh(d)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert [p.name for p in d.iterdir()] == [os.path.basename(info.path)]  # no temporary left behind
    assert os.path.isabs(info.compiler) and info.variant in info.variants and "base" in info.variants
    lib2, info2 = _native._load()
    assert lib2 is not None and not info2.compiled and info2.path == info.path


# -- planted, corrupt and foreign files: rebuilt, never loaded -------------------------------------------


def test_foreign_file_with_a_wrong_hash_is_rebuilt_not_loaded(cache, planted_lib):
    data, marker = planted_lib
    planted = plant(cache, data, digest="0" * 64)
    assert_built_fresh(cache)
    assert not marker.exists(), "the planted library was loaded"
    assert not planted.exists()


def test_truncated_library_is_rebuilt_not_loaded(cache, tmp_path):
    other = private_dir(tmp_path / "other")
    os.environ["XDROP_CACHE_DIR"] = str(other)  # the monkeypatched variable: restored by the fixture
    _, info = _native._load()
    good = (other / os.path.basename(info.path)).read_bytes()
    os.environ["XDROP_CACHE_DIR"] = str(cache)
    # A new inode under the recorded name: this process never mapped it (a truncated mapped file would SIGBUS).
    truncated = plant(cache, good[: len(good) // 2], digest=hashlib.sha256(good).hexdigest())
    _, info2 = assert_built_fresh(cache)
    assert (cache / os.path.basename(info2.path)).stat().st_size == len(good)
    assert truncated.name == os.path.basename(info2.path)  # same content, so the same name: rewritten whole


def test_symlinked_library_is_not_followed(cache, planted_lib, tmp_path):
    data, marker = planted_lib
    target = tmp_path / "elsewhere.so"
    target.write_bytes(data)
    link = cache / f"{key_prefix()}{hashlib.sha256(data).hexdigest()}.so"
    link.symlink_to(target)
    assert_built_fresh(cache)
    assert not marker.exists(), "the symlinked library was loaded"
    assert not link.is_symlink() and target.read_bytes() == data  # link removed, its target untouched


def test_library_without_the_kernels_is_rebuilt(cache, planted_lib):
    data, marker = planted_lib
    planted = plant(cache, data)  # a true hash: loads, but has none of the xd_* symbols
    lib, _ = assert_built_fresh(cache)
    assert not planted.exists()
    out = np.empty(8, np.bool_)
    lib.xd_mask(0, 8, 1, 2, 1 << 31, out.ctypes.data)  # the rebuilt one has them
    marker.unlink(missing_ok=True)  # it did load (that is how the missing symbols were seen)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to give a file away")
def test_library_owned_by_another_user_is_rebuilt_not_loaded(cache, planted_lib):
    data, marker = planted_lib
    planted = plant(cache, data)
    os.chown(planted, 12345, 12345)
    assert_built_fresh(cache)
    assert not marker.exists()


def test_group_writable_library_is_rebuilt_not_loaded(cache, planted_lib):
    data, marker = planted_lib
    plant(cache, data, mode=0o770)
    assert_built_fresh(cache)
    assert not marker.exists()


# -- unsafe directories and settings: refused, the NumPy engine takes over ---------------------------------


def assert_refused(match):
    lib, info = _native._load()
    assert lib is None and info.refused and info.error is not None
    assert "kernel cache refused" in info.error and match in info.error, info.error
    return info


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o1777])
def test_group_or_world_writable_directory_is_refused(cache, planted_lib, mode):
    data, marker = planted_lib
    plant(cache, data)  # would pass every file check
    cache.chmod(mode)
    assert_refused("writable by group or others")
    assert not marker.exists()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to give a directory away")
def test_directory_owned_by_another_user_is_refused(cache):
    os.chown(cache, 12345, 12345)
    assert_refused("owned by uid 12345")


def test_symlinked_directory_is_refused(monkeypatch, tmp_path):
    real = private_dir(tmp_path / "real")
    link = tmp_path / "link"
    link.symlink_to(real)
    monkeypatch.setenv("XDROP_CACHE_DIR", str(link))
    assert_refused("symbolic link")
    assert list(real.iterdir()) == []


def test_relative_cache_dir_is_refused(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDROP_CACHE_DIR", "cache")
    assert_refused("not an absolute path")
    assert list(tmp_path.iterdir()) == []


def test_empty_home_and_relative_xdg_are_ignored(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("XDROP_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", "")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative")
    d = _native.cache_dir()
    assert d.is_absolute() and d != Path("/.cache/xdrop")
    pwd = pytest.importorskip("pwd")
    assert d == Path(pwd.getpwuid(os.getuid()).pw_dir) / ".cache" / "xdrop"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _native.cache_dir() == tmp_path / "xdg" / "xdrop"


def test_refused_cache_falls_back_to_numpy_with_a_warning(monkeypatch, cache):
    cache.chmod(0o777)
    monkeypatch.setattr(_native, "_state", {})
    with pytest.warns(RuntimeWarning, match="xdrop uses the NumPy engine: kernel cache refused"):
        assert _native.library() is None
    assert _host.default_engine() == "numpy"
    x = np.linspace(-1, 1, 1000, dtype=np.float32)
    assert xdrop.dropout(x, 0.5, seed=3).tobytes() == xdrop.dropout(x, 0.5, seed=3, impl="reference").tobytes()
    with pytest.raises(RuntimeError, match="writable by group or others"):
        xdrop.dropout(x, 0.5, seed=3, impl="compiled")


# -- the compiler ------------------------------------------------------------------------------------------


# Creates an empty file at the path after -o (only that: the source file must stay intact).
EMPTY_OUTPUT = 'while [ $# -gt 0 ]; do if [ "$1" = -o ]; then : > "$2"; fi; shift; done; exit 0'


def fake_compiler(path, body):
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return path


def test_relative_cc_is_refused_and_not_run(monkeypatch, cache, tmp_path):
    monkeypatch.chdir(tmp_path)
    fake_compiler(tmp_path / "evilcc", f"touch {tmp_path}/ran")
    monkeypatch.setenv("CC", "./evilcc")
    info = assert_refused("CC='./evilcc' is a relative path")
    assert info.compiler is None and not (tmp_path / "ran").exists()


def test_bare_cc_is_looked_up_on_absolute_path_entries_only(monkeypatch, cache, tmp_path):
    monkeypatch.chdir(tmp_path)
    fake_compiler(tmp_path / "evilcc", f"touch {tmp_path}/ran")
    monkeypatch.setenv("PATH", os.pathsep.join([".", "", "bin", os.environ["PATH"]]))
    monkeypatch.setenv("CC", "evilcc")
    lib, info = _native._load()
    assert lib is None and "not found" in (info.error or "") and not (tmp_path / "ran").exists()
    monkeypatch.delenv("CC")
    cc = os.path.basename(_native.compiler() or "")
    lib, info = _native._load()
    assert lib is not None and info.compiler == shutil.which(cc) and os.path.isabs(info.compiler)


@pytest.mark.parametrize(
    ("body", "message"),
    [("exit 0", "wrote no library"), (EMPTY_OUTPUT, "wrote an empty library")],
    ids=["no-output", "empty-output"],
)
def test_compiler_that_exits_0_without_a_library_is_a_failure_not_cached(monkeypatch, cache, tmp_path, body, message):
    monkeypatch.chdir(tmp_path)
    source = _native.SOURCE.read_bytes()
    cc = fake_compiler(tmp_path / "fakecc", body)
    monkeypatch.setenv("CC", str(cc))
    lib, info = _native._load()
    assert lib is None and message in (info.error or ""), info.error
    assert libraries(cache) == []
    assert _native.SOURCE.read_bytes() == source


def test_stale_temporaries_and_old_builds_are_cleaned_on_build(cache):
    now = time.time()
    old_tmp = cache / ".tmp-1-dead.so"
    new_tmp = cache / ".tmp-2-busy.so"  # maybe a concurrent build in progress: kept
    old_build = cache / "philox_dropout-stream0-x86_64-0000000000000000-ab.so"
    for p in (old_tmp, new_tmp, old_build):
        p.write_bytes(b"x")
    os.utime(old_tmp, (now - 2 * _native.STALE_TEMP_S,) * 2)
    os.utime(old_build, (now - 2 * _native.STALE_BUILD_S,) * 2)
    assert_built_fresh(cache)
    assert not old_tmp.exists() and not old_build.exists() and new_tmp.exists()
