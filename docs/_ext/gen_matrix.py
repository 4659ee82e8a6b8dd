"""The backend matrix page, from ``python -m xdrop verify --json``.

Source of the figures: ``XDROP_DOCS_VERIFY_JSON=path``, a JSON file written
earlier by ``python -m xdrop verify --json`` (e.g. on a GPU host), or else
``python -m xdrop verify --json FILE`` run now, on this machine.

:func:`normalize` is the one place that reads the JSON's layout. The JSON is
saved beside the page (:data:`DATA`) so that ``docs/check_site.py`` can check
the built page against it.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import GENERATED, ROOT, md_table, write_if_changed

PAGE = GENERATED / "backend_matrix.md"
# The verify JSON the page was rendered from: docs/check_site.py compares the built page with it.
DATA = GENERATED / "backend_matrix.json"
PROPERTIES = ("equivalence", "expectation", "gradient")


def machine() -> dict[str, str]:
    info = {"platform": platform.platform(), "machine": platform.machine(), "python": platform.python_version()}
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        if names:
            info["cpu"] = f"{names[0]} ({len(names)} logical cores)"
    except OSError:
        pass
    for dist in ("xdrop", "numpy", "array-api-compat", "array-api-strict", "torch", "cupy-cuda12x", "jax", "dask"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            info[dist] = importlib.metadata.version(dist)
    return info


def from_cli() -> dict[str, Any]:
    """``python -m xdrop verify --json FILE``, run now."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "verify.json"
        proc = subprocess.run(
            [sys.executable, "-m", "xdrop", "verify", "--json", str(out)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
        )
        if not out.exists():
            raise RuntimeError(f"python -m xdrop verify --json wrote nothing (exit {proc.returncode}):\n{proc.stderr}")
        data = json.loads(out.read_text())
    data.setdefault("source", "python -m xdrop verify --json")
    return data


def _cell(value: Any) -> tuple[bool, str]:
    if isinstance(value, dict):
        passed = value.get("passed", value.get("pass", value.get("ok")))
        figure = value.get("figure", value.get("summary", ""))
        if isinstance(passed, bool):
            return passed, str(figure)
    raise ValueError(f"unrecognised verify cell {value!r}")


SKIP_KEYS = ("skipped", "reason", "unavailable")


def skip_reason(row: dict[str, Any]) -> str | None:
    """Why a row was not run, or None if it ran.

    verify's JSON says so in ``status`` (its ``reason`` is null for a backend
    that ran); other layouts mark a skipped row by a non-empty skip key.
    """
    if "status" in row:
        return str(row.get("reason") or "no reason given") if row["status"] == "skipped" else None
    given = [str(row[k]) for k in SKIP_KEYS if row.get(k)]
    return given[0] if given else None


def normalize(data: dict[str, Any]) -> dict[str, dict[str, tuple[bool, str]] | str]:
    """backend -> {property: (passed, figure)} or a skip reason."""
    results = data.get("results", data.get("backends", data))
    if isinstance(results, list):  # rows with a "backend" key
        results = {r["backend"]: {k: v for k, v in r.items() if k != "backend"} for r in results}
    table: dict[str, dict[str, tuple[bool, str]] | str] = {}
    for name, row in results.items():
        if isinstance(row, str):
            table[name] = row
        elif isinstance(row, dict) and skip_reason(row) is not None:
            table[name] = str(skip_reason(row))
        elif isinstance(row, dict):
            cells = row.get("cells", row)  # verify's JSON nests the cells; older layouts did not
            table[name] = {p: _cell(v) for p, v in cells.items() if p in PROPERTIES or isinstance(v, dict)}
        else:
            raise ValueError(f"unrecognised verify row for {name!r}: {row!r}")
    return table


def render(data: dict[str, Any], info: dict[str, str]) -> tuple[str, list[str]]:
    table = normalize(data)
    props = list(dict.fromkeys(p for row in table.values() if isinstance(row, dict) for p in row)) or list(PROPERTIES)
    rows, failures = [], []
    for name, row in table.items():
        if isinstance(row, str):
            rows.append([f"`{name}`", *[f"not run: {row}" if i == 0 else "" for i in range(len(props))]])
            continue
        cells = []
        for p in props:
            passed, figure = row.get(p, (False, "missing"))
            cells.append(f"{'PASS' if passed else '**FAIL**'}: {figure}")
            if not passed:
                failures.append(f"backend matrix: {name} / {p} fails: {figure}")
        rows.append([f"`{name}`", *cells])
    machine_rows = [[k, f"`{v}`"] for k, v in info.items()]
    text = (
        f"Generated when these docs were built, from {data['source']}.\n\n"
        + md_table(["backend", *props], rows)
        + "\n**The machine it ran on**\n\n"
        + md_table(["", ""], machine_rows)
    )
    return text, failures


def generate() -> list[str]:
    """Write the page; return any failing cells."""
    given = os.environ.get("XDROP_DOCS_VERIFY_JSON")
    if given:
        data = json.loads(Path(given).read_text())
        data.setdefault("source", f"`{Path(given).name}` (written earlier by python -m xdrop verify --json)")
        info = data.get("machine") or {"note": "the JSON names no machine"}
    else:
        data = from_cli()
        info = data.get("machine") or machine()
    text, failures = render(data, info)
    write_if_changed(PAGE, text)
    write_if_changed(DATA, json.dumps(data, indent=1, default=str) + "\n")
    return failures
