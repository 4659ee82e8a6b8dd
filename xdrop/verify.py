"""The three properties, measured on every installed backend.

Shared by ``python -m xdrop verify`` and the tests (``tests/conftest.py`` builds
its backend fixture on :data:`LOADERS`). Each check returns a measured figure
and a verdict; a backend that is not installed, or has no device, is reported
as such, which is not a failure.

Adding a backend is one entry in :data:`LOADERS`: a function that imports the
library (``ImportError`` means "not installed") and returns a :class:`Backend`,
or a string saying why it cannot run here (e.g. "no CUDA device").
"""

from __future__ import annotations

import datetime
import importlib
import importlib.metadata
import json
import math
import platform
import socket
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from . import _dropout
from ._compat import compat_namespace
from ._compat import device as array_device
from ._stream import STREAM_VERSION, keep_count, round_to_significand, significand_bits
from .random import philox4x32

# Random123 tests/kat_vectors, philox4x32 10 (counter, key, expected).
KAT_10 = (
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
)
# Three cases of tests/data/golden_v1.json (a test checks they are copied
# faithfully): (seed, step, shape, p as float.hex, keep bits as MSB-first hex).
GOLDEN_V1 = (
    (42, 0, (3, 5), "0x1.999999999999ap-4", "f7fe"),
    (4294967295, 4294967296, (37,), "0x1.3333333333333p-2", "b7b7ffa1d0"),
    (18446744073709551615, 18446744073709551615, (64,), "0x1.0000000000000p-1", "f45eb368e60f3e81"),
)
PROPERTIES = ("equivalence", "expectation", "gradient", "sharding")
Z_LIMIT = 5.0  # two-sided false-alarm rate 5.7e-7 per z-score
EXPECTATION_N = 2**16
EXPECTATION_PS = (0.1, 0.5, 0.9)
SEED = 2**63 + 1  # above 2**32 and 2**63, so both key words and the sign bit matter
# dx = fl(dout * fl(1/keep)): relative error (1+d1)(1+d2)-1 <= 2u + u**2, plus the reference's own
# rounding where longdouble is no wider than float64.
GRADIENT_UNITS = 2.01 if np.finfo(np.longdouble).nmant >= 63 else 3.01
CASES = [((), 0.5), ((1,), 0.5), ((7,), 0.1), ((3, 5), 1 / 3), ((2, 3, 4), 0.9), ((1000,), 0.5), ((4, 0), 0.5)]


@dataclass
class Cell:
    """One property on one backend: a measured figure and a verdict."""

    passed: bool
    figure: str
    detail: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass(frozen=True)
class Backend:
    """How to reach a backend: its namespace, a device, converters and dtypes.

    ``dtypes`` names the floating dtypes it has ("float16", "bfloat16",
    "float32", "float64"); ``autograd``, where the library differentiates,
    returns the gradient of ``sum(dropout(x, p, seed=, step=) * dout)``.
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

    def asarray(self, a: np.ndarray, dtype: str | None = None) -> Any:
        """``a`` on this backend, cast to ``dtype`` there (NumPy has no bfloat16)."""
        out = self.from_numpy(a)
        if dtype is None or dtype == a.dtype.name:
            return out
        return self.xp.astype(out, getattr(self.xp, dtype))

    def describe_device(self) -> str:
        """The device its arrays land on, as array-api-compat names it."""
        return str(array_device(self.from_numpy(np.zeros(1))))


def _torch(cuda: bool) -> Backend | str:
    torch = importlib.import_module("torch")
    if cuda and not torch.cuda.is_available():
        return "no CUDA device"
    dev = torch.device("cuda" if cuda else "cpu")

    def to_numpy(a: Any) -> np.ndarray:
        t = a.detach().cpu()
        out: np.ndarray = (t.float() if t.dtype == torch.bfloat16 else t).numpy()
        return out

    def autograd(x: Any, dout: Any, p: float, seed: int, step: int) -> Any:
        leaf = x.detach().clone().requires_grad_()
        _dropout.dropout(leaf, p, seed=seed, step=step).backward(dout)
        return leaf.grad

    return Backend(
        "torch-cuda" if cuda else "torch",
        compat_namespace("torch"),
        dev,
        to_numpy,
        lambda a: torch.asarray(a.copy(), device=dev),  # copy: torch rejects negative strides
        ("float16", "bfloat16", "float32", "float64"),
        autograd,
    )


def _cupy() -> Backend | str:
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
    )


def _numpy() -> Backend:
    return Backend("numpy", compat_namespace("numpy"), None, np.asarray, np.asarray, ("float16", "float32", "float64"))


def _strict() -> Backend:
    xp = importlib.import_module("array_api_strict")
    return Backend("array_api_strict", xp, None, np.from_dlpack, xp.asarray)


def _jax() -> Backend:
    jax = importlib.import_module("jax")
    jnp = importlib.import_module("jax.numpy")

    def autograd(x: Any, dout: Any, p: float, seed: int, step: int) -> Any:
        return jax.grad(lambda a: jnp.vdot(_dropout.dropout(a, p, seed=seed, step=step), dout))(x)

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
    da = importlib.import_module("dask.array")
    xp = compat_namespace("dask.array")

    def from_numpy(a: np.ndarray) -> Any:  # uneven chunks, about two per axis
        return da.from_array(a, chunks=tuple((d + 2) // 2 or 1 for d in a.shape))

    # array-api-compat's dask namespace exposes no float16
    return Backend("dask", xp, None, lambda a: np.asarray(a.compute()), from_numpy, ("float32", "float64"))


LOADERS: dict[str, Callable[[], Backend | str]] = {
    "numpy": _numpy,
    "array_api_strict": _strict,
    "torch": lambda: _torch(False),
    "torch-cuda": lambda: _torch(True),
    "cupy": _cupy,
    "jax": _jax,
    "dask": _dask,
}


def load(name: str) -> Backend | str:
    """The backend, or why it is unavailable ("not installed", "no CUDA device")."""
    try:
        return LOADERS[name]()
    except ImportError as exc:
        return f"not installed ({exc.name or exc})"


# -- property 1: seeded equivalence ---------------------------------------------------------------


def round_to_bfloat16(a: np.ndarray) -> np.ndarray:
    """float32 values rounded half-even to bfloat16, returned as float32 (finite inputs)."""
    bits = np.array(a, dtype=np.float32).view(np.uint32)  # np.array keeps 0-d shapes
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)
    return rounded.view(np.float32)


def expected_dropout(x: np.ndarray, p: float, seed: int, step: int, dtype: str) -> np.ndarray:
    """The NumPy reference of ``dropout`` on ``x`` in ``dtype``, in NumPy.

    For bfloat16, which NumPy lacks, ``x`` holds bfloat16 values as float32:
    the product of two bfloat16 values is exact in float32, so rounding it once
    to bfloat16 is the correctly rounded bfloat16 product.
    """
    if dtype != "bfloat16":
        out: np.ndarray = _dropout.dropout(x.astype(dtype), p, seed=seed, step=step, impl="reference")
        return out
    keep = _dropout.keep_mask(x.shape, p, seed=seed, step=step, xp=np, impl="reference")
    k = keep_count(p)
    scale = round_to_significand(Fraction(2**32, k), 8) if k else 0.0  # bfloat16 has 8 significant bits
    return np.where(keep, round_to_bfloat16(x * np.float32(scale)), np.float32(0))


def _bits_differing(got: np.ndarray, want: np.ndarray) -> int:
    if got.dtype != want.dtype or got.shape != want.shape:
        return max(want.nbytes * 8, 1)
    diff = np.bitwise_xor(got.reshape(-1).view(np.uint8), want.reshape(-1).view(np.uint8))
    return int(np.unpackbits(diff).sum())


def _pack_hex(bits: np.ndarray) -> str:
    return np.packbits(bits.reshape(-1).astype(np.uint8)).tobytes().hex()


def check_equivalence(b: Backend) -> Cell:
    """Bits differing from the NumPy reference in every dtype; golden vectors; Random123 KAT."""
    differing = total = 0
    rng = np.random.default_rng(0)
    for dtype in b.dtypes:
        for shape, p in CASES:
            x = rng.standard_normal(shape).astype("float32" if dtype == "bfloat16" else dtype)
            xb = b.asarray(x, dtype)
            x_seen = b.to_numpy(xb)  # bfloat16: the rounded input, as float32
            want = expected_dropout(x_seen, p, SEED, 5, dtype)
            differing += _bits_differing(b.to_numpy(_dropout.dropout(xb, p, seed=SEED, step=5)), want)
            total += want.size * (16 if dtype == "bfloat16" else want.itemsize * 8)
    golden_bad = 0
    for seed, step, shape, p_hex, keep_hex in GOLDEN_V1:
        mask = _dropout.keep_mask(shape, float.fromhex(p_hex), seed=seed, step=step, xp=b.xp, device=b.device)
        golden_bad += _pack_hex(b.to_numpy(mask)) != keep_hex
    kat_bad = 0
    for ctr, key, want_words in KAT_10:
        words = philox4x32([b.from_numpy(np.asarray([c], dtype=np.uint32)) for c in ctr], key)
        got_words = tuple(int(b.to_numpy(b.xp.astype(w, b.xp.int64))[0]) for w in words)
        kat_bad += got_words != want_words
    n_golden, n_kat = len(GOLDEN_V1), len(KAT_10)
    return Cell(
        differing == 0 and golden_bad == 0 and kat_bad == 0,
        f"{differing}/{total} bits differ; golden {n_golden - golden_bad}/{n_golden}; KAT {n_kat - kat_bad}/{n_kat}",
        {"differing_bits": differing, "total_bits": total, "golden_failures": golden_bad, "kat_failures": kat_bad},
    )


# -- property 2: the 1/p expectation --------------------------------------------------------------


def _half_ulps_at_one(value: Fraction, dtype: str, b: Backend) -> float:
    """|value - 1| in units of the dtype's rounding error bound 2**-bits."""
    bits = 8 if dtype == "bfloat16" else significand_bits(b.xp, getattr(b.xp, dtype))
    return float(abs(value - 1) * 2**bits)


def check_expectation(b: Backend, n: int = EXPECTATION_N) -> Cell:
    """E[out] = x: a z-score of the kept fraction, and the exact identity scale * keep = 1.

    ``out = dropout(ones)`` takes the values 0 and ``scale``; its mean has
    expectation ``scale * keep``. The z-score tests the draws against that (a
    biased threshold fails it); ``|scale * keep - 1|`` must be at most one
    rounding of the dtype (a scale that is not 1/keep fails it). Together:
    E[out] = x up to one rounding. Worst over dtypes and p.
    """
    worst_z = worst_identity = 0.0
    for dtype in b.dtypes:
        ones = b.asarray(np.ones(n, dtype="float32" if dtype == "bfloat16" else dtype), dtype)
        for p in EXPECTATION_PS:
            keep = keep_count(p) / 2**32
            out = b.to_numpy(_dropout.dropout(ones, p, seed=12345, step=int(p * 10))).astype(np.float64)
            scale = float(out.max())
            z = (float(out.mean()) / scale - keep) / math.sqrt(keep * (1 - keep) / n) if scale > 0 else math.inf
            worst_z = max(worst_z, abs(z))
            identity = _half_ulps_at_one(Fraction(scale) * Fraction(keep_count(p), 2**32), dtype, b)
            worst_identity = max(worst_identity, identity)
    ok = worst_z < Z_LIMIT and worst_identity <= 1.0
    return Cell(
        ok,
        f"|z|max={worst_z:.2f}; |s*keep-1|={worst_identity:.2f} u",
        {"max_abs_z": worst_z, "identity_error_units": worst_identity, "n": n, "p": list(EXPECTATION_PS)},
    )


# -- property 3: the gradient identity ------------------------------------------------------------


def central_differences(
    f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, dout: np.ndarray, h: float = 1e-6
) -> np.ndarray:
    """Numerical vector-Jacobian product: d/dx_i sum(f(x) * dout), by central differences."""
    num = np.empty_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = h
        num[i] = np.sum((f(x + e) - f(x - e)) * dout) / (2 * h)
    return num


def _finite_difference_error(b: Backend) -> float:
    """max relative |dropout_backward - central differences| in float64 on a 3x4 input."""
    rng = np.random.default_rng(2)
    x, dout = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    _out, cache = _dropout.dropout_forward(b.asarray(x), 0.5, seed=9, step=1)
    dx = b.to_numpy(_dropout.dropout_backward(b.asarray(dout), cache))
    numeric = central_differences(lambda a: b.to_numpy(_dropout.dropout(b.asarray(a), 0.5, seed=9, step=1)), x, dout)
    return float(np.max(np.abs(numeric - dx) / np.maximum(np.abs(dx), 1.0)))


def check_gradient(b: Backend) -> Cell:
    """dx = dout * mask / keep: backward == dropout(dout) bit for bit, == the formula, == autograd.

    In every dtype: bits differing between ``dropout_backward`` and dropout of
    ``dout`` (must be 0), and between autograd and ``dropout_backward`` where
    the library differentiates (must be 0); the error against
    ``dout * mask / keep`` computed in extended precision, in units of the dtype's
    rounding (at most 2: the scale's rounding and the product's); finite
    differences in float64 (relative error below 1e-6).
    """
    rng = np.random.default_rng(1)
    p, seed, step = 0.3, 77, 2
    x32, dout32 = rng.standard_normal((64, 33)), rng.standard_normal((64, 33))
    mask = _dropout.keep_mask(x32.shape, p, seed=seed, step=step, xp=np, impl="reference")
    differing = autograd_differing = 0
    worst_units = 0.0
    for dtype in b.dtypes:
        x = b.asarray(x32.astype("float32" if dtype == "bfloat16" else dtype), dtype)
        dout = b.asarray(dout32.astype("float32" if dtype == "bfloat16" else dtype), dtype)
        _out, cache = _dropout.dropout_forward(x, p, seed=seed, step=step)
        dx = _dropout.dropout_backward(dout, cache)
        dx_np = b.to_numpy(dx)
        differing += _bits_differing(dx_np, b.to_numpy(_dropout.dropout(dout, p, seed=seed, step=step)))
        # longdouble: on x86 its 64-bit significand makes the reference's own rounding negligible
        exact = b.to_numpy(dout).astype(np.longdouble) * mask * 2**32 / keep_count(p)
        bits = 8 if dtype == "bfloat16" else significand_bits(b.xp, getattr(b.xp, dtype))
        tiny = float(b.xp.finfo(getattr(b.xp, "float32" if dtype == "bfloat16" else dtype)).smallest_normal)
        err = np.abs(dx_np.astype(np.longdouble) - exact) / np.maximum(np.abs(exact), tiny)
        worst_units = max(worst_units, float(err.max()) * 2**bits)
        if b.autograd is not None:
            grad = b.autograd(x, dout, p, seed, step)
            autograd_differing += _bits_differing(b.to_numpy(grad), dx_np)
    fd = _finite_difference_error(b)
    ok = differing == 0 and autograd_differing == 0 and worst_units <= GRADIENT_UNITS and fd < 1e-6
    figure = f"bwd vs dropout(dout) {differing} bits; err {worst_units:.2f} u; fd {fd:.0e}"
    if b.autograd is not None:
        figure += f"; autograd {autograd_differing} bits"
    return Cell(
        ok,
        figure,
        {
            "differing_bits": differing,
            "autograd_differing_bits": autograd_differing if b.autograd is not None else None,
            "max_error_units": worst_units,
            "finite_difference_error": fd,
        },
    )


def check_sharding(b: Backend) -> Cell:
    """The sharding law: a block drawn with global_shape/global_start is the whole array's block."""
    from ._sharding import check_law

    return Cell(*check_law(b.from_numpy, b.to_numpy))


CHECKS: dict[str, Callable[[Backend], Cell]] = {
    "equivalence": check_equivalence,
    "expectation": check_expectation,
    "gradient": check_gradient,
    "sharding": check_sharding,
}


# -- the matrix -----------------------------------------------------------------------------------


@dataclass
class Row:
    """One backend: its cells, or why it did not run (``skipped``)."""

    name: str
    cells: dict[str, Cell] = field(default_factory=dict)
    skipped: str | None = None
    device: str | None = None
    dtypes: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.cells.values())


def run_backend(name: str) -> Row:
    """Every property on one backend; a crash is a failed cell, reported, not a traceback."""
    try:
        b = load(name)
    except Exception as exc:  # an installed but broken library is a failure, not "not installed"
        return Row(name, {p: Cell(False, f"error loading: {type(exc).__name__}: {exc}") for p in PROPERTIES})
    if isinstance(b, str):
        return Row(name, skipped=b)
    row = Row(name, device=b.describe_device(), dtypes=b.dtypes)
    for prop, check in CHECKS.items():
        start = time.perf_counter()
        try:
            with b.scope():
                cell = check(b)
        except Exception as exc:
            cell = Cell(False, f"error: {type(exc).__name__}: {exc}")
        cell.seconds = time.perf_counter() - start
        row.cells[prop] = cell
    return row


def run(names: list[str] | None = None) -> dict[str, Row]:
    """Run every property on every named backend (all known ones by default)."""
    return {name: run_backend(name) for name in names or list(LOADERS)}


def format_table(results: dict[str, Row]) -> str:
    """A plain-text matrix: backends down, properties across."""
    header = ["backend", *PROPERTIES]
    rows = []
    for name, row in results.items():
        if row.skipped is not None:
            rows.append([name, f"skipped: {row.skipped}", *[""] * (len(PROPERTIES) - 1)])
        else:
            rows.append([name, *(("PASS " if c.passed else "FAIL ") + c.figure for c in row.cells.values())])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(r: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


LEGEND = """\
equivalence: bits of dropout differing from the NumPy reference, over every dtype the backend has (must be 0);
             golden stream-v1 masks and Random123 known answers matched.
expectation: worst |z| of mean(dropout(ones)) against scale*keep (limit 5, false alarm 5.7e-7), and
             |scale*keep - 1| in units u of the dtype's rounding (at most 1): E[out] = x to one rounding.
gradient:    bits differing between dropout_backward and dropout of dout (and autograd, where the
             library has it); worst error against dout*mask/keep in units u (at most 2); finite
             differences in float64 (relative, below 1e-6).
sharding:    tiles drawn with global_shape/global_start whose bits equal the whole array's tile (all must)."""


def all_passed(results: dict[str, Row]) -> bool:
    """True if no cell failed (skipped backends do not count)."""
    return all(row.passed for row in results.values())


def library_versions() -> dict[str, str]:
    """Versions of xdrop and of the array libraries this process has imported."""
    from . import __version__

    versions = {"xdrop": __version__, "python": platform.python_version()}
    try:  # by distribution name: _compat is the one module that names the compat layer's package
        versions["array-api-compat"] = importlib.metadata.version("array-api-compat")
    except importlib.metadata.PackageNotFoundError:
        versions["array-api-compat"] = "unknown"
    for mod in ("numpy", "array_api_strict", "torch", "cupy", "jax", "dask"):
        if mod in sys.modules:
            versions[mod] = str(getattr(sys.modules[mod], "__version__", "unknown"))
    return versions


def gpu_name() -> str | None:
    """The first CUDA device's name, from a library already imported; None without one."""
    try:
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            return str(torch.cuda.get_device_name(0))
        cupy = sys.modules.get("cupy")
        if cupy is not None and cupy.cuda.runtime.getDeviceCount() > 0:
            name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
            return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # a broken driver: report no GPU name rather than fail the report
        return None
    return None


def to_json(results: dict[str, Row]) -> dict[str, Any]:
    """The matrix as JSON-ready data, with the host, date, library versions and GPU."""
    return {
        "stream_version": STREAM_VERSION,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": {"name": socket.gethostname(), "platform": platform.platform(), "machine": platform.machine()},
        "versions": library_versions(),
        "gpu": gpu_name(),
        "properties": list(PROPERTIES),
        "passed": all_passed(results),
        "backends": {
            name: {
                "status": "skipped" if row.skipped is not None else ("pass" if row.passed else "fail"),
                "reason": row.skipped,
                "device": row.device,
                "dtypes": list(row.dtypes),
                "cells": {prop: asdict(cell) for prop, cell in row.cells.items()},
            }
            for name, row in results.items()
        },
    }


def write_json(results: dict[str, Row], path: str | Path) -> None:
    """Write :func:`to_json` to ``path`` whole, never through a symlink.

    The text goes to a new temporary file in the same directory (created with
    ``O_EXCL`` under a random name, so nothing planted is followed), is
    ``fsync``-ed, then renamed over ``path``: a reader sees the old file or the
    new one, and a symlink at ``path`` is replaced, not written through.
    Raises ``OSError`` (nothing left behind) when ``path`` cannot be written.
    """
    import os
    import tempfile

    path = Path(path)
    text = json.dumps(to_json(results), indent=1, default=str) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; a report is for reading
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
