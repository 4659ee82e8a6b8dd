"""The three properties, measured on every installed backend.

Shared by ``python -m xdrop verify`` and the tests. Each check returns a
measured figure and whether it passes; a backend that is not installed or has
no device is reported as such, which is not a failure.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from types import ModuleType
from typing import Any

import numpy as np

from . import _dropout
from ._compat import compat_namespace
from ._stream import keep_count
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
PROPERTIES = ("equivalence", "expectation", "gradient")
Z_LIMIT = 5.0  # two-sided false-alarm rate 5.7e-7 per check


@dataclass
class Cell:
    """One property on one backend: a measured figure and a verdict."""

    passed: bool
    figure: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Backend:
    """How to reach a backend: its namespace, a device, and converters."""

    name: str
    xp: ModuleType
    device: Any
    to_numpy: Callable[[Any], np.ndarray]
    from_numpy: Callable[[np.ndarray], Any]


def _torch(cuda: bool) -> Backend | str:
    torch = importlib.import_module("torch")
    if cuda and not torch.cuda.is_available():
        return "no CUDA device"
    xp = compat_namespace("torch")
    dev = torch.device("cuda" if cuda else "cpu")
    return Backend(
        "torch-cuda" if cuda else "torch",
        xp,
        dev,
        lambda a: a.detach().cpu().numpy(),
        lambda a: torch.asarray(a.copy(), device=dev),
    )


def _cupy() -> Backend | str:
    cupy = importlib.import_module("cupy")
    try:
        if cupy.cuda.runtime.getDeviceCount() == 0:
            return "no CUDA device"
    except Exception as exc:  # no driver
        return f"no CUDA device ({type(exc).__name__})"
    xp = compat_namespace("cupy")
    return Backend("cupy", xp, None, lambda a: a.get(), cupy.asarray)


def _numpy() -> Backend:
    xp = compat_namespace("numpy")
    return Backend("numpy", xp, None, np.asarray, np.asarray)


def _strict() -> Backend:
    xp = importlib.import_module("array_api_strict")
    return Backend("array_api_strict", xp, None, np.from_dlpack, xp.asarray)


def _jax() -> Backend:
    jax = importlib.import_module("jax")
    # The checks are written in float64, which JAX has only with x64: this row turns it on for the process.
    # The x64-free path (JAX's default) is what tests/test_jax.py and the jax test session check.
    jax.config.update("jax_enable_x64", True)
    jnp = importlib.import_module("jax.numpy")
    return Backend("jax", jnp, None, np.asarray, jnp.asarray)


def _dask() -> Backend:
    da = importlib.import_module("dask.array")
    xp = compat_namespace("dask.array")

    def from_numpy(a: np.ndarray) -> Any:  # uneven chunks, about two per axis
        return da.from_array(a, chunks=tuple((d + 2) // 2 or 1 for d in a.shape))

    return Backend("dask", xp, None, lambda a: np.asarray(a.compute()), from_numpy)


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
    """The backend, or a reason it is unavailable ("not installed", "no CUDA device")."""
    try:
        return LOADERS[name]()
    except ImportError:
        return "not installed"


CASES = [((), 0.5), ((1,), 0.5), ((7,), 0.1), ((3, 5), 1 / 3), ((2, 3, 4), 0.9), ((1000,), 0.5), ((4, 0), 0.5)]


def check_equivalence(b: Backend) -> Cell:
    """Bits differing from the NumPy reference, plus the Random123 KAT."""
    differing = total = 0
    rng = np.random.default_rng(0)
    for dtype in ("float32", "float64"):
        for shape, p in CASES:
            x = rng.standard_normal(shape).astype(dtype)
            ref = _dropout.dropout(x, p, seed=2**63 + 1, step=5, impl="reference")
            got = b.to_numpy(_dropout.dropout(b.from_numpy(x), p, seed=2**63 + 1, step=5))
            if got.dtype != ref.dtype or got.shape != ref.shape:
                differing += ref.nbytes * 8 or 1
                continue
            diff = np.bitwise_xor(got.reshape(-1).view(np.uint8), ref.reshape(-1).view(np.uint8))
            differing += int(np.unpackbits(diff).sum())
            total += ref.nbytes * 8
    kat_bad = 0
    for ctr, key, want in KAT_10:
        words = philox4x32([b.from_numpy(np.asarray([c], dtype=np.uint32)) for c in ctr], key)
        got_words = tuple(int(b.to_numpy(b.xp.astype(w, b.xp.int64))[0]) for w in words)
        kat_bad += got_words != want
    return Cell(
        differing == 0 and kat_bad == 0,
        f"{differing} bits differ / {total}; KAT {3 - kat_bad}/3",
        {"differing_bits": differing, "kat_failures": kat_bad},
    )


def check_expectation(b: Backend, n: int = 2**18) -> Cell:
    """z-score of mean(dropout(ones)) - 1, and the exact identity scale * keep - 1."""
    worst_z = 0.0
    for p in (0.1, 0.5, 0.9):
        keep = keep_count(p) / 2**32
        out = b.to_numpy(_dropout.dropout(b.from_numpy(np.ones(n)), p, seed=12345, step=int(p * 10)))
        z = (float(out.mean()) - 1.0) / math.sqrt((1 - keep) / keep / n)
        worst_z = max(worst_z, abs(z))
    k = keep_count(0.3)
    scale = float(b.to_numpy(_dropout.dropout(b.from_numpy(np.ones(4096)), 0.3, seed=1)).max())
    identity = float(abs(Fraction(scale) * Fraction(k, 2**32) - 1))
    ok = worst_z < Z_LIMIT and identity <= 2.0**-53
    return Cell(
        ok, f"|z|max={worst_z:.2f}; |s*keep-1|={identity:.1e}", {"max_abs_z": worst_z, "identity_error": identity}
    )


def check_gradient(b: Backend) -> Cell:
    """max |dropout_backward - dout*mask/keep|, and torch autograd vs backward."""
    rng = np.random.default_rng(1)
    x, dout = rng.standard_normal((64, 33)), rng.standard_normal((64, 33))
    _out, cache = _dropout.dropout_forward(b.from_numpy(x), 0.3, seed=77, step=2)
    dx = b.to_numpy(_dropout.dropout_backward(b.from_numpy(dout), cache))
    mask = _dropout.keep_mask(x.shape, 0.3, seed=77, step=2, xp=np)
    err = float(np.max(np.abs(dx - dout * mask / (keep_count(0.3) / 2**32))))
    autograd = 0.0
    if b.name.startswith("torch"):
        xt = b.from_numpy(x).requires_grad_()
        _dropout.dropout(xt, 0.3, seed=77, step=2).backward(b.from_numpy(dout))
        autograd = float(np.max(np.abs(b.to_numpy(xt.grad) - dx)))
    if b.name == "jax":
        jax = importlib.import_module("jax")
        grad = jax.grad(lambda a: b.xp.vdot(_dropout.dropout(a, 0.3, seed=77, step=2), b.from_numpy(dout)))
        autograd = float(np.max(np.abs(b.to_numpy(grad(b.from_numpy(x))) - dx)))
    ok = err <= 1e-15 * float(np.max(np.abs(dout))) * 2 and autograd == 0.0
    return Cell(
        ok,
        f"max err {err:.1e}" + (f"; autograd {autograd:.0e}" if b.name.startswith(("torch", "jax")) else ""),
        {"max_error": err, "autograd_error": autograd},
    )


CHECKS: dict[str, Callable[[Backend], Cell]] = {
    "equivalence": check_equivalence,
    "expectation": check_expectation,
    "gradient": check_gradient,
}


def run(names: list[str] | None = None) -> dict[str, dict[str, Cell] | str]:
    """Run every property on every named backend (all known ones by default)."""
    results: dict[str, dict[str, Cell] | str] = {}
    for name in names or list(LOADERS):
        b = load(name)
        if isinstance(b, str):
            results[name] = b
            continue
        row = {}
        for prop, check in CHECKS.items():
            try:
                row[prop] = check(b)
            except Exception as exc:  # a crash is a failed cell, reported, not a traceback
                row[prop] = Cell(False, f"error: {type(exc).__name__}: {exc}")
        results[name] = row
    return results


def format_table(results: dict[str, dict[str, Cell] | str]) -> str:
    """A plain-text matrix: backends down, properties across."""
    header = ["backend", *PROPERTIES]
    rows = []
    for name, row in results.items():
        if isinstance(row, str):
            rows.append([name, f"skipped: {row}", "", ""])
        else:
            rows.append([name, *(("PASS " if c.passed else "FAIL ") + c.figure for c in row.values())])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(r: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def all_passed(results: dict[str, dict[str, Cell] | str]) -> bool:
    return all(c.passed for row in results.values() if not isinstance(row, str) for c in row.values())
