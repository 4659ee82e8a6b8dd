"""The Triton kernels (torch CUDA without CuPy) against the reference, on the CPU.

``TRITON_INTERPRET=1`` makes Triton run kernels on CPU tensors with NumPy
semantics for every operation, so the Philox arithmetic, the 64-bit counter
and index handling and the keep/scale/round step of ``xdrop/_kernels/cuda/_triton.py``
are checked on every CI run without a GPU. The variable must be set before the
kernels are decorated and would turn every other Triton user in the process
into the interpreter, so the kernels run once in a child process over the
whole case table below (this file is also that child's script); each test then
compares one case with the reference, computed here.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

import numpy as np
import pytest
from kernel_child import run_child

import xdrop
from xdrop._lib._stream import keep_count, keep_flat

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None or importlib.util.find_spec("torch") is None,
    reason="the Triton kernels need triton and torch (pip install triton torch)",
)

TOP = (1 << 64) - 1

# Mask cases: (start, n, seed, step, p). Starts cross the 2**32 block boundary
# (flat index 2**34) and reach the last index 2**64 - 1; seeds and steps use
# both words; p covers the edges of its 2**-32 resolution.
MASK_CASES = [
    (0, 1, 0, 0, 0.5),
    (0, 4099, 0x5EED, 0, 0.5),
    (1, 1023, 1, 1, 0.3),
    (3, 1030, 2**32 - 1, 2**32, 0.7),
    ((1 << 34) - 6, 13, 2**32, 2**32 - 1, 0.5),
    ((1 << 34) - 1029, 2100, 0xDEADBEEFCAFEF00D, 2**63, 0.25),
    ((1 << 36) + 2, 517, 2**63 + 11, 2**33 + 5, 0.9),
    (TOP - 2052, 2053, TOP, TOP, 0.5),
    (TOP, 1, 7, 9, 0.5),
    (TOP - 6, 5, 2**40 + 1, 0, 0.5),
    (0, 777, 3, 4, 0.0),  # K = 2**32: keep all
    (0, 777, 3, 4, 1.0),  # K = 0: drop all
    (0, 777, 3, 4, 2.0**-32),  # K = 2**32 - 1
    (0, 777, 3, 4, 2.0**-33),  # rounds to K = 2**32
    (0, 777, 3, 4, 1 - 2.0**-32),  # K = 1
    (0, 2000, 12, 2**64 - 2, 1 - 3 * 2.0**-32),
]
# Dropout cases: (dtype, shape, seed, step, p, transposed input).
DROPOUT_CASES = [
    (dtype, shape, seed, step, p, False)
    for dtype in ("float16", "float32", "float64")
    for shape, seed, step, p in [
        ((1,), 0, 0, 0.5),
        ((3,), 5, 1, 0.3),
        ((1025,), 2**32 + 7, 2**32 + 3, 0.1),
        ((37, 61), TOP, TOP, 0.7),
        ((4096,), 2**63, 17, 0.999),
        ((257,), 9, 0, 0.0),
        ((257,), 9, 0, 1.0),
        ((300,), 9, 0, 2.0**-32),
        ((300,), 9, 0, 1 - 2.0**-32),
    ]
] + [
    ("float32", (33, 40), 21, 22, 0.4, True),
    ("float16", (1 << 12,), 1, 2, 1 - 2.0**-17, False),  # float16 scale 2**17: overflows to inf
    ("bfloat16", (2049,), 3, 4, 0.35, False),
    ("bfloat16", (16, 17), TOP, 2**35, 0.9, True),
]
# seed/step given as int64 device tensors (two's complement for >= 2**63): 0-d, 1-d.
TENSOR_WORD_CASES = [(2**63 + 5, 2**40 + 1, 0), (TOP, 12345, 1), (77, TOP - 1, 1)]


def as_int64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def input_array(index: int, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """Deterministic inputs over many magnitudes, with NaN, infinities, signed zeros and subnormals."""
    rng = np.random.default_rng(1000 + index)
    n = int(np.prod(shape))
    x = rng.standard_normal(n) * 10.0 ** rng.integers(-8, 6, n)
    specials = [np.nan, np.inf, -np.inf, 0.0, -0.0, 6e-8, -3e-39, 65504.0, 1e300, 5e-324]
    x[: min(n, len(specials))] = specials[: min(n, len(specials))]
    with np.errstate(over="ignore"):  # 1e300 becomes inf in the narrower types, on purpose
        # NumPy has no bfloat16: the torch side converts float32 to it
        return x.astype("float32" if dtype == "bfloat16" else dtype).reshape(shape)


def _torch_input(torch: Any, index: int, dtype: str, shape: tuple[int, ...], transposed: bool, dev: str = "cpu") -> Any:
    x = torch.from_numpy(input_array(index, dtype, shape)).to(dev).to(getattr(torch, dtype))
    return x.t() if transposed else x


def _bits(torch: Any, t: Any) -> np.ndarray:
    """The raw bits of a float tensor (bfloat16 has no NumPy dtype), NaN as one pattern.

    IEEE leaves a NaN product's payload and sign to the implementation (x86
    and CUDA differ), so every NaN becomes -1 (all ones); other bits are compared exactly.
    """
    width = {2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
    t = t.contiguous().cpu()
    return torch.where(torch.isnan(t), -1, t.view(width)).numpy()


def _run_child(out_path: str, dev: str) -> None:
    """In the child: run every case through the Triton kernels on ``dev``, save the results.

    ``dev`` is "cpu" under ``TRITON_INTERPRET=1``, or "cuda" for the compiled kernels on a device.
    """
    import torch

    from xdrop._kernels.cuda import _triton
    from xdrop._lib._stream import scale_for

    results: dict[str, np.ndarray] = {}
    for i, (start, n, seed, step, p) in enumerate(MASK_CASES):
        results[f"mask{i}"] = _triton.triton_mask(start, n, seed, step, keep_count(p), dev).cpu().numpy()
    for i, (dtype, shape, seed, step, p, transposed) in enumerate(DROPOUT_CASES):
        x = _torch_input(torch, i, dtype, shape, transposed, dev)
        k = keep_count(p)
        out = _triton.triton_dropout(x, seed, step, k, scale_for(k, torch, x.dtype))
        assert tuple(out.shape) == tuple(x.shape) and out.dtype == x.dtype
        results[f"dropout{i}"] = _bits(torch, out)
    for i, (seed, step, ndim) in enumerate(TENSOR_WORD_CASES):
        words = [torch.tensor(as_int64(v) if ndim == 0 else [as_int64(v), -1], device=dev) for v in (seed, step)]
        results[f"words_mask{i}"] = _triton.triton_mask(5, 1029, *words, keep_count(0.5), dev).cpu().numpy()
        x = _torch_input(torch, i, "float32", (1029,), False, dev)
        k = keep_count(0.2)
        results[f"words_dropout{i}"] = _bits(torch, _triton.triton_dropout(x, *words, k, scale_for(k, torch, x.dtype)))
    np.savez(out_path, **results)


@pytest.fixture(scope="module", params=["interpreter", "cuda"])
def kernel_results(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """All results of one child run: the interpreter on the CPU, or the compiled kernels on a CUDA device."""
    return run_child(__file__, request.param, tmp_path_factory.mktemp("triton"))


@pytest.mark.parametrize("case", range(len(MASK_CASES)))
def test_mask_matches_reference(kernel_results, case):
    start, n, seed, step, p = MASK_CASES[case]
    expected = keep_flat(np, start, n, seed, step, keep_count(p), None)
    got = kernel_results[f"mask{case}"]
    assert got.dtype == np.bool_ and got.shape == (n,)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("case", range(len(DROPOUT_CASES)))
def test_dropout_matches_reference_bits(kernel_results, case):
    import torch

    dtype, shape, seed, step, p, transposed = DROPOUT_CASES[case]
    if dtype == "bfloat16":  # NumPy has no bfloat16: the reference on torch CPU tensors
        x = _torch_input(torch, case, dtype, shape, transposed)
        expected = _bits(torch, xdrop.dropout(x, p, seed=seed, step=step, impl="reference"))
    else:
        x_np = input_array(case, dtype, shape)
        x_np = x_np.T if transposed else x_np
        with np.errstate(invalid="ignore", over="ignore"):
            ref = xdrop.dropout(x_np, p, seed=seed, step=step, impl="reference")
        expected = _bits(torch, torch.from_numpy(np.ascontiguousarray(ref)))
    got = kernel_results[f"dropout{case}"]
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("case", range(len(TENSOR_WORD_CASES)))
def test_seed_and_step_as_int64_tensors(kernel_results, case):
    import torch

    seed, step, _ = TENSOR_WORD_CASES[case]
    np.testing.assert_array_equal(
        kernel_results[f"words_mask{case}"], keep_flat(np, 5, 1029, seed, step, keep_count(0.5), None)
    )
    ref = xdrop.dropout(input_array(case, "float32", (1029,)), 0.2, seed=seed, step=step, impl="reference")
    np.testing.assert_array_equal(kernel_results[f"words_dropout{case}"], _bits(torch, torch.from_numpy(ref)))


def test_cases_reach_the_edges():
    """The case table really covers what the module docstring promises (a guard against trimming it)."""
    starts = [(s, s + n) for s, n, *_ in MASK_CASES]
    assert any(s < 1 << 34 < e for s, e in starts)  # block index crosses 2**32
    assert any(e == 1 << 64 for _, e in starts)  # the last index
    ks = {keep_count(p) for *_, p in MASK_CASES}
    assert {0, 1, 1 << 32, (1 << 32) - 1} <= ks
    assert any(n % 4 and n > 1024 for _, n, *_ in MASK_CASES)


if __name__ == "__main__":
    _run_child(sys.argv[1], sys.argv[2])
