"""How a verify matrix is shown: the plain-text table, its legend, and the host it ran on.

:mod:`xdrop.verify` prints :func:`format_table` and :data:`LEGEND`, and puts
:func:`library_versions` and :func:`gpu_name` into its JSON report.
"""

from __future__ import annotations

import importlib.metadata
import platform
import sys
from typing import TYPE_CHECKING

from ._backends import REGISTRY
from ._properties import PROPERTIES

if TYPE_CHECKING:
    from ._properties import BackendResult

LEGEND = """\
equivalence: bits of dropout differing from the NumPy reference, over every dtype the backend has (must be 0);
             golden stream-v1 masks and Random123 known answers matched.
expectation: worst |z| of mean(dropout(ones)) against scale*keep (limit 5, false alarm 5.7e-7), and
             |scale*keep - 1| in units u of the dtype's rounding (at most 1): E[out] = x to one rounding.
gradient:    bits differing between dropout_backward and dropout of dout (and autograd, where the
             library has it); worst error against dout*mask/keep in units u (at most 2); finite
             differences in float64 (relative, below 1e-6).
sharding:    tiles drawn with global_shape/global_start whose bits equal the whole array's tile (all must)."""


def format_table(results: dict[str, BackendResult]) -> str:
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


def library_versions() -> dict[str, str]:
    """Versions of xdrop and of the registry's libraries this process has imported."""
    from . import __version__

    versions = {"xdrop": __version__, "python": platform.python_version()}
    try:  # by distribution name: _compat is the one module that names the compat layer's package
        versions["array-api-compat"] = importlib.metadata.version("array-api-compat")
    except importlib.metadata.PackageNotFoundError:
        versions["array-api-compat"] = "unknown"
    for entry in REGISTRY.values():
        for mod in entry.modules:
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
