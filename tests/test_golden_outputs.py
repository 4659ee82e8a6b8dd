"""Golden output vectors: every public function's output bits, per dtype, on every backend.

``tests/data/golden_outputs_v1.json`` was written by ``tests/spec_v1.py`` (the
scalar spec written from ``docs/stream-spec.md``) through
``tests/data/make_golden_outputs_v1.py``; xdrop played no part. A NaN expected
matches any NaN: the spec leaves NaN sign and payload unspecified.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from spec_v1 import FORMATS, is_nan, noise_shape_of, outputs

import xdrop

GOLDEN = json.loads((Path(__file__).parent / "data" / "golden_outputs_v1.json").read_text())
UINT = {"float16": np.uint16, "bfloat16": np.uint16, "float32": np.uint32, "float64": np.uint64}
# NumPy has no bfloat16: its patterns travel as float32 (the high 16 bits), which is exact.
CARRIER = {"float16": np.float16, "bfloat16": np.float32, "float32": np.float32, "float64": np.float64}


def case_id(case: dict) -> str:
    name = case.get("forward", case["function"])
    return f"{name}-{case['dtype']}-{case['shape']}-p{float.fromhex(case['p']):.3g}-{case['kwargs']}"


def parse(text: str) -> list[int]:
    return [int(h, 16) for h in text.split()]


def to_carrier(bits: list[int], dtype: str) -> np.ndarray:
    if dtype == "bfloat16":
        return (np.array(bits, np.uint32) << np.uint32(16)).view(np.float32)
    return np.array(bits, UINT[dtype]).view(CARRIER[dtype])


def from_carrier(a: np.ndarray, dtype: str) -> list[int]:
    if dtype == "bfloat16":
        bits32 = np.ascontiguousarray(a, np.float32).view(np.uint32)
        assert not (bits32 & np.uint32(0xFFFF)).any()  # a bfloat16 value, exact in float32
        return (bits32 >> np.uint32(16)).astype(np.uint16).tolist()
    return np.ascontiguousarray(a, CARRIER[dtype]).view(UINT[dtype]).reshape(-1).tolist()


def kwargs_of(case: dict) -> dict:
    kw = dict(case["kwargs"])
    if "noise_shape" in kw:
        kw["noise_shape"] = tuple(kw["noise_shape"])
    return kw


def run_case(backend, case: dict) -> list[int]:
    dtype, shape = case["dtype"], tuple(case["shape"])
    p = float.fromhex(case["p"])
    x = backend.asarray(to_carrier(parse(case["x"]), dtype).reshape(shape), dtype)
    kw = kwargs_of(case)
    if case["function"] == "dropout_backward":
        zeros = backend.asarray(np.zeros(shape, CARRIER[dtype]), dtype)
        _, cache = getattr(xdrop, case["forward"])(zeros, p, seed=case["seed"], step=case["step"], **kw)
        got = xdrop.dropout_backward(x, cache)
    else:
        got = getattr(xdrop, case["function"])(x, p, seed=case["seed"], step=case["step"], **kw)
    assert got.dtype == x.dtype and tuple(got.shape) == shape
    return from_carrier(backend.to_numpy(got).reshape(-1), dtype)


def assert_bits_equal(got: list[int], want: list[int], dtype: str) -> None:
    bad = [
        (i, f"{g:x}", f"{w:x}")
        for i, (g, w) in enumerate(zip(got, want, strict=True))
        if not (g == w or (is_nan(w, dtype) and is_nan(g, dtype)))
    ]
    assert not bad, f"(index, got, expected) differ: {bad[:8]}"


def test_golden_outputs_cover_every_function_and_dtype():
    seen = {(c.get("forward", c["function"]), c["dtype"]) for c in GOLDEN["cases"]}
    functions = [
        "dropout",
        "dropout1d",
        "dropout2d",
        "dropout3d",
        "alpha_dropout",
        "feature_alpha_dropout",
        "drop_path",
        "dropout_forward",
        "alpha_dropout_forward",
        "drop_path_forward",
    ]
    assert {(f, d) for f in functions for d in FORMATS} <= seen
    assert GOLDEN["stream_version"] == xdrop.STREAM_VERSION


def spec_outputs(case: dict, flush_subnormals: bool = False) -> list[int]:
    """``tests/spec_v1.py``'s output bits for a golden case."""
    fmt, shape = case["dtype"], tuple(case["shape"])
    backward = case["function"] == "dropout_backward"
    base = case.get("forward", case["function"]).removesuffix("_forward")
    noise = noise_shape_of(base, shape)
    if "noise_shape" in case["kwargs"]:
        noise = tuple(d if e is None else e for d, e in zip(shape, case["kwargs"]["noise_shape"], strict=True))
    kind = {"alpha_dropout": "alpha", "feature_alpha_dropout": "alpha"}.get(base, "inverted")
    if base == "drop_path" and not case["kwargs"]["scale_by_keep"]:
        kind = "unscaled"
    kind = ("grad_" if backward else "") + kind
    p = float.fromhex(case["p"])
    return outputs(parse(case["x"]), shape, noise, case["seed"], case["step"], p, fmt, kind, flush_subnormals)


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=case_id)
def test_spec_reproduces_golden_outputs(case):
    """The scalar spec, rerun now, gives the stored bits (the file is its output, frozen)."""
    assert spec_outputs(case) == parse(case["out"])


def flushes_subnormals(backend, dtype: str) -> bool:
    """The documented deviation of docs/stream-spec.md: XLA on CPU flushes subnormal float32,
    float64 and bfloat16 operands and results to zero (its float16 runs in float32, where they
    are normal). Only JAX may deviate, and only where a probe shows that it flushes."""
    if backend.name != "jax" or dtype == "float16":
        return False
    tiny = to_carrier([1], dtype)  # the smallest subnormal
    return bool(backend.to_numpy(backend.asarray(tiny, dtype) * 2)[0] == 0)


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=case_id)
def test_golden_outputs(backend, case):
    dtype = case["dtype"]
    if dtype not in backend.dtypes:
        pytest.skip(f"{backend.name} has no {dtype} here")
    with backend.scope(), np.errstate(invalid="ignore", over="ignore"):  # 0 * inf = NaN is part of the spec
        got = run_case(backend, case)
    want = spec_outputs(case, flush_subnormals=True) if flushes_subnormals(backend, dtype) else parse(case["out"])
    assert_bits_equal(got, want, dtype)
