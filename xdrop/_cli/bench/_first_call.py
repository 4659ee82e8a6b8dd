"""The first-call row of ``python -m xdrop bench``: ``import xdrop`` to the first 2**20-element result.

Each run is a fresh Python process (the interpreter running the bench, so the
same installed xdrop) that imports NumPy and makes a float32 input of
``FIRST_CALL_SIZE`` elements, then times ``import xdrop`` and the first
``xdrop.dropout(x, 0.5, seed=...)``. NumPy's own import is not timed: a
user's program has paid it before it has an array to drop out. The child
also says whether it imported xdrop from an editable install, whose import
hook checks the build first (a cost an installed wheel does not have).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from typing import Any

FIRST_CALL_SIZE = 1 << 20
DEFAULT_RUNS = 7
QUICK_RUNS = 2

_CHILD = f"""
import json, sys, time
import numpy as np
x = np.ones({FIRST_CALL_SIZE}, np.float32)
t0 = time.perf_counter()
import xdrop
t1 = time.perf_counter()
y = xdrop.dropout(x, 0.5, seed=7)
t2 = time.perf_counter()
editable = any("editable" in name for name in sys.modules)
print(json.dumps({{"import_s": t1 - t0, "call_s": t2 - t1, "editable": editable, "size": int(y.size)}}))
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--first-call-runs",
        type=int,
        metavar="N",
        help=f"fresh processes timing import xdrop + the first 2**20 call (default {DEFAULT_RUNS}; "
        f"--quick {QUICK_RUNS}; 0 skips)",
    )


def run(runs: int) -> dict[str, Any]:
    """Median and range of ``runs`` fresh processes; each child's figures are kept too."""
    children = []
    for _ in range(runs):
        done = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, check=True)
        children.append(json.loads(done.stdout.strip().splitlines()[-1]))
    totals = [c["import_s"] + c["call_s"] for c in children]
    return {
        "size": FIRST_CALL_SIZE,
        "runs": children,
        "median_total_s": statistics.median(totals),
        "min_total_s": min(totals),
        "max_total_s": max(totals),
        "median_import_s": statistics.median(c["import_s"] for c in children),
        "median_call_s": statistics.median(c["call_s"] for c in children),
        "editable": any(c["editable"] for c in children),
    }


def format_line(first: dict[str, Any]) -> str:
    note = " (an editable install: its import hook checks the build first)" if first["editable"] else ""
    return (
        f"\nfirst call, {len(first['runs'])} fresh processes, import xdrop + dropout of 2^20 float32: "
        f"median {first['median_total_s'] * 1e3:.1f} ms (import {first['median_import_s'] * 1e3:.1f} ms, "
        f"call {first['median_call_s'] * 1e3:.1f} ms), range {first['min_total_s'] * 1e3:.1f}-"
        f"{first['max_total_s'] * 1e3:.1f} ms{note}"
    )
