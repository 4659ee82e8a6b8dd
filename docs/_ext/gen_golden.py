"""Stream spec v1's golden vectors as a table, each case re-derived by this build's xdrop."""

from __future__ import annotations

import json
import math

import numpy as np
from _common import GENERATED, ROOT, md_table, write_if_changed

GOLDEN = ROOT / "tests" / "data" / "golden_v1.json"
PAGE = GENERATED / "golden_v1.md"
OUTPUTS = ROOT / "tests" / "data" / "golden_outputs_v1.json"
OUTPUTS_PAGE = GENERATED / "golden_outputs_v1.md"
NUMPY_DTYPES = {"float16": np.uint16, "float32": np.uint32, "float64": np.uint64}


def packed_bits(mask: np.ndarray) -> str:
    """The spec's packing: flat row-major, 8 bits a byte, MSB first, in hex."""
    return np.packbits(mask.reshape(-1).astype(np.uint8)).tobytes().hex()


def _output_bits(case: dict) -> list[int]:
    """This build's xdrop on NumPy for one golden output case, as bit patterns."""
    import xdrop

    uint = NUMPY_DTYPES[case["dtype"]]
    shape = tuple(case["shape"])
    x = np.array([int(h, 16) for h in case["x"].split()], uint).view(case["dtype"]).reshape(shape)
    p, kw = float.fromhex(case["p"]), dict(case["kwargs"])
    if "noise_shape" in kw:
        kw["noise_shape"] = tuple(kw["noise_shape"])
    with np.errstate(invalid="ignore", over="ignore"):  # 0 * inf = NaN is part of the spec
        if case["function"] == "dropout_backward":
            zeros = np.zeros(shape, case["dtype"])
            _, cache = getattr(xdrop, case["forward"])(zeros, p, seed=case["seed"], step=case["step"], **kw)
            out = xdrop.dropout_backward(x, cache)
        else:
            out = getattr(xdrop, case["function"])(x, p, seed=case["seed"], step=case["step"], **kw)
    return [int(b) for b in np.ascontiguousarray(out).reshape(-1).view(uint)]


def _same_bits(got: list[int], want: list[int], dtype: str) -> bool:
    """Equal patterns, except that a NaN matches any NaN (the spec leaves NaN bits open)."""
    info = np.finfo(dtype)
    frac = info.nmant
    exp_mask = (1 << info.nexp) - 1

    def nan(b: int) -> bool:
        return (b >> frac) & exp_mask == exp_mask and b & ((1 << frac) - 1) != 0

    return len(got) == len(want) and all(g == w or (nan(g) and nan(w)) for g, w in zip(got, want, strict=True))


def generate_outputs() -> list[str]:
    """The golden output table; returns the cases this build's xdrop on NumPy fails to reproduce."""
    spec = json.loads(OUTPUTS.read_text())
    rows, mismatches = [], []
    for i, case in enumerate(spec["cases"]):
        name = case["function"] + (f" of `{case['forward']}`" if "forward" in case else "")
        if case["dtype"] not in NUMPY_DTYPES:
            verdict = "not on NumPy (no bfloat16)"
        elif _same_bits(_output_bits(case), [int(h, 16) for h in case["out"].split()], case["dtype"]):
            verdict = "equal"
        else:
            verdict = "**DIFFER**"
            mismatches.append(f"golden output case {i} ({name}, {case['dtype']}): this build differs")
        p = float.fromhex(case["p"])
        rows.append(
            [
                str(i),
                name,
                case["dtype"],
                f"`{tuple(case['shape'])}`",
                f"`{p!r}`",
                f"`{case['kwargs']}`" if case["kwargs"] else "",
                verdict,
            ]
        )
    text = (
        f"Read at build time from `tests/data/golden_outputs_v1.json` ({len(rows)} cases; inputs and outputs "
        "are bit patterns in the file). The last column compares this build's xdrop on NumPy with the frozen "
        "output bits (a NaN matches any NaN); a difference fails the docs build.\n\n"
        + md_table(["case", "function", "dtype", "shape", "p", "arguments", "output bits"], rows)
    )
    write_if_changed(OUTPUTS_PAGE, text)
    return mismatches


def generate() -> list[str]:
    """Write the pages; return the cases this build's xdrop fails to reproduce."""
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
    return mismatches + generate_outputs()
