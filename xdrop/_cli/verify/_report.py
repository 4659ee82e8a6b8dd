"""How a verify matrix is shown: the plain-text table, its legend, and the host it ran on.

:mod:`xdrop.verify` prints :func:`format_summary` and :func:`summary_legend` (or, with
``--wide``, :func:`format_table` and :data:`LEGEND`), and puts
:func:`library_versions` and :func:`gpu_name` into its JSON report.
"""

from __future__ import annotations

import importlib.metadata
import platform
import sys
from typing import TYPE_CHECKING

from ..._testing._backends import REGISTRY
from ._properties import PROPERTIES

if TYPE_CHECKING:
    from ._properties import BackendResult

WIDTH = 100  # the default report fits a terminal this wide

# What each property checks, in plain words: the compact report's legend.
SUMMARY_LEGEND = {
    "equivalence": "dropout gives bit for bit the NumPy reference's output, in every dtype; the frozen "
    "masks of stream v1 and the published Philox test vectors are matched",
    "expectation": "the mean of the output equals the input: the kept fraction is what p asks for "
    "(a z-score test) and kept values are scaled by exactly 1/(probability of keeping)",
    "gradient": "the backward pass equals dropout of the incoming gradient bit for bit, the formula "
    "dout*mask/keep to rounding, autograd where the library has it, and finite differences",
    "sharding": "a block drawn on its own (global_shape/global_start) has the same bits as that block "
    "of the whole array",
    "attention": "attention dropout drops exactly the entries keep_mask gives, its values match the "
    "formula, and its gradient matches finite differences",
}

# The figures of the wide table (``--wide``) and the JSON, label by label.
LEGEND = """\
equivalence: "N/M bits differ": bits of dropout's output that differ from the NumPy reference, over every
             dtype the backend has (must be 0); "golden": the frozen stream-v1 masks matched;
             "KAT": the Random123 known-answer tests of Philox4x32-10 matched.
expectation: "|z|max": the largest z-score of mean(dropout(ones)) against its expected value over
             p in {0.1, 0.5, 0.9} (must stay below 5: a false alarm once in 1.7 million checks);
             "|s*keep-1|": how far the scale s times the probability of keeping is from 1, in units u
             (one rounding of the dtype; at most 1 unit, so E[out] = x to one rounding).
gradient:    "bwd vs dropout(dout)": bits differing between dropout_backward and dropout of dout
             (must be 0); "err": the worst error against dout*mask/keep in units u (at most 2);
             "fd": the relative error against finite differences in float64 (below 1e-6);
             "autograd": bits differing from the library's autograd (must be 0).
sharding:    blocks drawn with global_shape/global_start whose bits equal the whole array's block
             (all must).
attention:   "mask": entries whose dropped/kept state differs from keep_mask (must be 0); "err": the
             relative error against the formula; "grad fd": the gradient against finite differences."""


def wrap(text: str, indent: str = "", width: int = WIDTH) -> str:
    """``text`` wrapped to ``width`` columns, every line after the first indented by ``indent``."""
    import textwrap

    return textwrap.fill(text, width, subsequent_indent=indent, break_on_hyphens=False)


def format_summary(results: dict[str, BackendResult]) -> str:
    """The default report: PASS/FAIL per backend and property (under 100 columns), then each failure's figure."""
    header = ["backend", "device", *PROPERTIES]
    rows, notes = [], []
    for name, row in results.items():
        if row.skipped is not None:
            rows.append([name, "-", *["not run"] * len(PROPERTIES)])
            notes.append(wrap(f"{name} not run: {row.skipped}", "  "))
            continue
        rows.append([name, row.device or "?", *("PASS" if c.passed else "FAIL" for c in row.cells.values())])
        for prop, cell in row.cells.items():
            if not cell.passed:
                notes.append(wrap(f"{name} {prop} FAILED: {cell.figure}", "  "))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    # the device column (e.g. array-api-strict's "Device('CPU_DEVICE')") gives way: the table fits WIDTH
    widths[1] = max(len(header[1]), min(widths[1], WIDTH - sum(widths) + widths[1] - 2 * (len(widths) - 1)))

    def line(r: list[str]) -> str:
        cells = [c if len(c) <= w else c[: w - 3] + "..." for c, w in zip(r, widths, strict=True)]
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows), *notes])


def summary_legend() -> str:
    """What each column of :func:`format_summary` checks, one wrapped entry per property."""
    pad = max(map(len, PROPERTIES)) + 2
    return "\n".join(wrap(f"{p + ':':<{pad}}{SUMMARY_LEGEND[p]}", " " * pad) for p in PROPERTIES)


def format_table(results: dict[str, BackendResult]) -> str:
    """The wide plain-text matrix (``--wide``): backends down, properties across, each cell's figures."""
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
    from ... import __version__

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
