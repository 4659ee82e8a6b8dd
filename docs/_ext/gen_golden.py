"""Stream spec v1's golden vectors as a table, each case re-derived by this build's xdrop."""

from __future__ import annotations

import json
import math

import numpy as np
from _common import GENERATED, ROOT, md_table, write_if_changed

GOLDEN = ROOT / "tests" / "data" / "golden_v1.json"
PAGE = GENERATED / "golden_v1.md"


def packed_bits(mask: np.ndarray) -> str:
    """The spec's packing: flat row-major, 8 bits a byte, MSB first, in hex."""
    return np.packbits(mask.reshape(-1).astype(np.uint8)).tobytes().hex()


def generate() -> list[str]:
    """Write the page; return the cases this build's xdrop fails to reproduce."""
    import xdrop

    spec = json.loads(GOLDEN.read_text())
    rows, mismatches = [], []
    for i, case in enumerate(spec["cases"]):
        p = float.fromhex(case["p"])
        shape = tuple(case["shape"])
        got = packed_bits(xdrop.keep_mask(shape, p, seed=case["seed"], step=case["step"], xp=np))
        ok = got == case["keep"]
        if not ok:
            mismatches.append(f"golden case {i}: expected {case['keep']!r}, this build gives {got!r}")
        n = math.prod(shape)
        rows.append(
            [
                str(i),
                f"`{case['seed']}`",
                f"`{case['step']}`",
                f"`{shape}`",
                f"`{p!r}` (`{case['p']}`)",
                f"`{case['keep']}`" if case["keep"] else "(empty)",
                f"{sum(bin(b).count('1') for b in bytes.fromhex(case['keep']))}/{n}",
                "yes" if ok else "**NO**",
            ]
        )
    text = (
        f"Read at build time from `tests/data/golden_v1.json` (stream version {spec['stream_version']}; "
        f"bit order: {spec['bit_order']}). The last column is this build's `xdrop.keep_mask` on NumPy "
        "compared with the frozen bits; a mismatch fails the docs build.\n\n"
        + md_table(["case", "seed", "step", "shape", "p (hex)", "keep bits", "kept", "reproduced"], rows)
    )
    write_if_changed(PAGE, text)
    return mismatches
