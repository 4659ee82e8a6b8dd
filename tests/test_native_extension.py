"""The compiled kernel is the extension built at install time: no compiler, no code cache at run time.

Without the extension (a build with no C compiler, or ``-Dkernel=disabled``)
xdrop runs on the NumPy engine and says so once. The extension's entry
points check what they are given: a wrong count, a negative integer, buffers
of different sizes or a read-only output is an error, never memory written
out of bounds.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import xdrop
from xdrop._kernels.host import _buffers as _host
from xdrop._kernels.host import _native

needs_extension = pytest.mark.skipif(
    _native._import_extension() is None, reason="xdrop was installed without the compiled kernel"
)


def reference(x, p, seed):
    return xdrop.dropout(x, p, seed=seed, impl="reference")


@needs_extension
def test_extension_reports_its_variants_and_the_default_is_the_best_this_cpu_runs(monkeypatch):
    """By cpuid: AVX-512 where the CPU has AVX-512F, else AVX2, else base; the environment variable overrides."""
    monkeypatch.delenv(_native.VARIANT_ENV, raising=False)
    lib, info = _native._load()
    assert lib is not None and info.error is None
    assert info.path is not None and os.path.basename(info.path).startswith("_philox")
    assert "base" in info.variants and set(info.variants) <= set(_native.VARIANTS)
    assert list(info.variants) == [v for v in _native.VARIANTS if v in info.variants]  # best first
    assert info.variant == lib.variant == info.variants[0]


@needs_extension
def test_variant_environment_variable_chooses_one_and_a_bad_value_is_named(monkeypatch):
    monkeypatch.setenv(_native.VARIANT_ENV, "base")
    lib, info = _native._load()
    assert lib is not None and lib.variant == info.variant == "base"
    monkeypatch.setenv(_native.VARIANT_ENV, "sse9")
    with pytest.raises(ValueError, match=r"XDROP_KERNEL_VARIANT='sse9' is not a kernel variant this CPU runs"):
        _native._load()


def test_missing_extension_falls_back_to_numpy_and_warns_once(monkeypatch):
    monkeypatch.setattr(_native, "_state", {})
    monkeypatch.setattr(_native, "_import_extension", lambda: None)
    with pytest.warns(RuntimeWarning, match=r"xdrop uses the NumPy engine, about 18x slower.*not installed"):
        assert _native.library() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process: the second call is silent
        assert _native.library() is None
        assert _host.default_engine() == "blocked"
        x = np.linspace(-1, 1, 1000, dtype=np.float32)
        assert xdrop.dropout(x, 0.5, seed=3).tobytes() == reference(x, 0.5, 3).tobytes()
    with pytest.raises(RuntimeError, match=r"needs the compiled kernel.*not installed"):
        xdrop.dropout(x, 0.5, seed=3, impl="compiled")


@needs_extension
def test_runs_with_no_compiler_reachable_and_writes_no_cache(tmp_path):
    """PATH is an empty directory and CC is /bin/false: the kernel still loads, and nothing lands in HOME."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": str(bin_dir), "CC": "/bin/false", "HOME": str(home), "XDG_CACHE_HOME": str(home / "cache")}
    # The interpreter's own settings (and Windows' SYSTEMROOT, without which Python cannot start there).
    env.update({k: v for k, v in os.environ.items() if k.startswith(("MESONPY", "PYTHON")) or k == "SYSTEMROOT"})
    code = (
        "import numpy as np, xdrop; from xdrop._kernels.host import _native;"
        "x = np.ones(1 << 20, np.float32); xdrop.dropout(x, 0.5, seed=1);"
        "print(_native.build_info().variant)"
    )
    run = [sys.executable, "-c", code]
    out = subprocess.run(run, env=env, capture_output=True, text=True, check=False, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() in _native.VARIANTS
    assert list(home.iterdir()) == []


@needs_extension
@pytest.mark.parametrize("char", ["f", "d"])
def test_array_entry_points_refuse_mismatched_or_read_only_buffers(char):
    fn = _native.library().array_dropout[char]
    dtype = np.dtype(char)
    x = np.ones(8, dtype)
    with pytest.raises(ValueError, match=r"one length, got 64 and 32 bytes|one length, got 32 and 16 bytes"):
        fn(x, np.empty(4, dtype), 1, 0, 1 << 31, 2.0)
    other = np.float64 if char == "f" else np.float32
    with pytest.raises(ValueError, match="items and one length"):
        fn(x.astype(other), np.empty(8, other), 1, 0, 1 << 31, 2.0)
    out = np.zeros(8, dtype)
    out.flags.writeable = False
    with pytest.raises((BufferError, ValueError)):
        fn(x, out, 1, 0, 1 << 31, 2.0)
    assert not out.any()
    with pytest.raises(TypeError, match="takes 6 arguments, got 5"):
        fn(x, np.empty(8, dtype), 1, 0, 1 << 31)
    with pytest.raises(OverflowError):
        fn(x, np.empty(8, dtype), -1, 0, 1 << 31, 2.0)


@needs_extension
def test_address_entry_points_check_their_arguments():
    lib = _native.library()
    w = (ctypes.c_uint32 * 4)()
    with pytest.raises(TypeError, match="takes 4 arguments, got 3"):
        lib.xd_block_words(0, 0, 0)
    with pytest.raises(OverflowError):
        lib.xd_block_words(0, 2**64, 0, ctypes.addressof(w))
    with pytest.raises(TypeError, match="takes 8 arguments"):
        lib.xd_dropout_f32(0, 0, 0, 0)
    with pytest.raises(TypeError):
        lib.xd_mask(0, 4, 1, 0, 1 << 31, "not an address")
    assert list(w) == [0, 0, 0, 0]
