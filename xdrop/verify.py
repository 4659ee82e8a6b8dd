"""The three properties, measured on every backend in the registry: ``python -m xdrop verify``.

This module runs the matrix and writes it; the parts live beside it, one role
each:

- :mod:`xdrop._testing._backends`: the registry, which backends exist and how to load one;
- :mod:`xdrop._cli.verify._properties`: the three checks (equivalence, expectation,
  gradient) and the reference builders they use;
- :mod:`xdrop._cli.verify._report`: the plain-text table, its legend, the host's versions.

A backend that is not installed, or has no device, is reported as skipped,
which is not a failure; a crash is a failed cell. The names the tests and
other tools use are re-exported here (``verify.load``, ``verify.Backend``, ...).
"""

from __future__ import annotations

import datetime
import json
import platform
import socket
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ._cli.verify._cell import Cell, central_differences
from ._cli.verify._properties import (
    CASES,
    CHECKS,
    GOLDEN_V1,
    GRADIENT_UNITS,
    KAT_10,
    PROPERTIES,
    Z_LIMIT,
    BackendResult,
    check_equivalence,
    check_expectation,
    check_gradient,
    expected_dropout,
    round_to_bfloat16,
)
from ._cli.verify._report import LEGEND, format_summary, format_table, gpu_name, library_versions, summary_legend
from ._kernels.host import _native
from ._lib._stream import STREAM_VERSION
from ._testing._backends import REGISTRY, Backend, load

__all__ = [
    "CASES",
    "CHECKS",
    "GOLDEN_V1",
    "GRADIENT_UNITS",
    "KAT_10",
    "LEGEND",
    "PROPERTIES",
    "REGISTRY",
    "Z_LIMIT",
    "Backend",
    "BackendResult",
    "Cell",
    "all_passed",
    "central_differences",
    "check_equivalence",
    "check_expectation",
    "check_gradient",
    "expected_dropout",
    "format_summary",
    "format_table",
    "gpu_name",
    "library_versions",
    "load",
    "round_to_bfloat16",
    "run",
    "run_backend",
    "summary_legend",
    "to_json",
    "write_json",
]


def run_backend(name: str) -> BackendResult:
    """Every property on one backend; a crash is a failed cell, reported, not a traceback."""
    try:
        b = load(name)
    except Exception as exc:  # an installed but broken library is a failure, not "not installed"
        return BackendResult(name, {p: Cell(False, f"error loading: {type(exc).__name__}: {exc}") for p in PROPERTIES})
    if isinstance(b, str):
        return BackendResult(name, skipped=b)
    row = BackendResult(name, device=b.describe_device(), dtypes=b.dtypes)
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


def run(names: list[str] | None = None) -> dict[str, BackendResult]:
    """Run every property on every named backend (all known ones by default)."""
    return {name: run_backend(name) for name in names or list(REGISTRY)}


def all_passed(results: dict[str, BackendResult]) -> bool:
    """True if no cell failed (skipped backends do not count)."""
    return all(row.passed for row in results.values())


def host_kernel() -> dict[str, Any]:
    """Which host kernel NumPy and torch-CPU arrays ran on: the compiled variant, or why the NumPy engine."""
    info = _native.build_info()
    return {"variant": info.variant, "variants": list(info.variants), "error": info.error}


def describe_host_kernel() -> str:
    """A few lines for the report: which host kernel ran NumPy and torch-CPU arrays, and why that one."""
    import os

    from ._cli.verify._report import wrap

    kernel = host_kernel()
    if kernel["error"]:
        text = (
            f"host kernel: the NumPy engine ({_native.SLOWDOWN}), "
            f"because the compiled kernel could not be loaded: {kernel['error']}"
        )
        return wrap(text, "  ")
    variant, runs = kernel["variant"], kernel["variants"]
    if os.environ.get(_native.VARIANT_ENV, "").strip():
        why = f"{_native.VARIANT_ENV}={variant} asks for it"
    else:
        why = f"it is the fastest variant this CPU runs ({_native.VARIANT_ENV} would override)"
    text = f"host kernel: compiled, variant {variant} (this CPU runs {', '.join(runs)}), because {why}."
    return wrap(text, "  ")


def to_json(results: dict[str, BackendResult]) -> dict[str, Any]:
    """The matrix as JSON-ready data, with the host, date, library versions and GPU."""
    return {
        "stream_version": STREAM_VERSION,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": {"name": socket.gethostname(), "platform": platform.platform(), "machine": platform.machine()},
        "versions": library_versions(),
        "gpu": gpu_name(),
        "host_kernel": host_kernel(),
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


def write_json(results: dict[str, BackendResult], path: str | Path) -> None:
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
