"""The Triton attention kernels against the formula, on the CPU with Triton's interpreter.

As in ``tests/test_triton.py``, ``TRITON_INTERPRET=1`` must be set before the
kernels are decorated, so they run once in a child process over the case table
below (this file is that child's script) and each test compares one case with
the NumPy formula (``attention_math``) and with torch autograd of the formula
under the same mask, computed here in float64. A CUDA run of the same table
happens where a device is present. Sizes are small (the interpreter is slow)
but cross the 32-row and 32-key blocks and leave partial ones.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

import attention_math as am
import numpy as np
import pytest
from kernel_child import run_child

from xdrop._lib._stream import effective_keep

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None or importlib.util.find_spec("torch") is None,
    reason="the Triton kernels need triton and torch (pip install triton torch)",
)

TOP = (1 << 64) - 1

# (dtype, N, L, S, E, Ev, bias shape or None, p, seed, step, is_causal, scale)
CASES = [
    ("float64", 2, 37, 45, 8, 5, None, 0.3, 2**63 + 5, 2**32 + 1, False, None),
    ("float64", 2, 37, 45, 8, 5, (1, 37, 45), 0.5, TOP, TOP, False, 0.4),
    ("float64", 3, 33, 70, 16, 16, (3, 1, 70), 0.2, 7, 0, True, None),
    ("float64", 1, 40, 40, 8, 8, (1, 40, 40), 0.0, 1, 2, True, None),
    ("float64", 2, 5, 9, 4, 3, None, 1.0, 1, 2, False, None),
    ("float32", 2, 37, 45, 8, 5, (2, 37, 45), 0.4, 2**40, 3, False, None),
    ("float16", 1, 20, 33, 8, 8, None, 0.25, 11, 12, False, None),
]
# Mask cases: (N, L, S, p, seed, step): q = 0 (uniform weights), v = identity reads each keep decision.
MASK_CASES = [(2, 37, 45, 0.5, 2**63 + 1, 2**33), (1, 33, 64, 0.1, 5, 6), (3, 5, 7, 0.9, TOP, 0)]


def inputs(case: tuple) -> dict[str, np.ndarray]:
    dtype, n, length, keys, e, ev, bias_shape, *_ = case
    rng = np.random.default_rng(length * keys + e)
    out = {
        "q": rng.standard_normal((n, length, e)),
        "k": rng.standard_normal((n, keys, e)),
        "v": rng.standard_normal((n, keys, ev)),
        "dout": rng.standard_normal((n, length, ev)),
    }
    if bias_shape is not None:
        out["bias"] = np.where(rng.random(bias_shape) < 0.1, -np.inf, rng.standard_normal(bias_shape))
        out["bias"][..., 0] = 0.0  # key 0 open to every row: no row loses every key (see test_row_with_no_key)
    return {name: a.astype(dtype) for name, a in out.items()}


def _run_child(out_path: str, dev: str) -> None:
    import torch

    from xdrop._kernels.cuda import _attention_triton as at

    results: dict[str, np.ndarray] = {}
    for i, case in enumerate(CASES):
        _, _, _, _, _, _, _, p, seed, step, causal, scale = case
        t = {name: torch.from_numpy(a).to(dev) for name, a in inputs(case).items()}
        bias = t.get("bias")
        out, lse = at.forward(t["q"], t["k"], t["v"], bias, p, scale, seed, step, causal)
        dq, dk, dv = at.backward(t["dout"], t["q"], t["k"], t["v"], bias, out, lse, p, scale, seed, step, causal)
        for name, x in (("out", out), ("lse", lse), ("dq", dq), ("dk", dk), ("dv", dv)):
            results[f"{name}{i}"] = x.cpu().double().numpy()
    for i, (n, length, keys, p, seed, step) in enumerate(MASK_CASES):
        q = torch.zeros((n, length, 4), device=dev)
        k = torch.zeros((n, keys, 4), device=dev)
        v = torch.eye(keys, device=dev).expand(n, keys, keys)
        results[f"mask{i}"] = (at.forward(q, k, v, None, p, None, seed, step, False)[0] != 0).cpu().numpy()
    bias = torch.zeros((1, 3, 40), dtype=torch.float64, device=dev)
    bias[0, 1] = -torch.inf
    q, k, v = (torch.from_numpy(a).to(dev) for a in masked_inputs())
    out, lse = at.forward(q, k, v, bias, 0.5, None, 3, 4, False)
    grads = at.backward(torch.ones_like(out), q, k, v, bias, out, lse, 0.5, None, 3, 4, False)
    results["masked"] = out.cpu().numpy()
    results["masked_dq"], results["masked_dk"], results["masked_dv"] = (g.cpu().numpy() for g in grads)
    np.savez(out_path, **results)


def masked_inputs() -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    return [rng.standard_normal(shape) for shape in ((1, 3, 8), (1, 40, 8), (1, 40, 4))]


@pytest.fixture(scope="module", params=["interpreter", "cuda"])
def kernel_results(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return run_child(__file__, request.param, tmp_path_factory.mktemp("attention_triton"), timeout=1200)


@pytest.mark.parametrize("case", range(len(MASK_CASES)))
def test_mask_bits_equal_keep_mask(kernel_results, case):
    n, length, keys, p, seed, step = MASK_CASES[case]
    got = kernel_results[f"mask{case}"]
    assert int((got != am.keep((n, length, keys), p, seed, step)).sum()) == 0


TOL = {"float64": 1e-12, "float32": 2e-6, "float16": 2e-3}


def _grads(case: tuple) -> dict[str, np.ndarray]:
    """torch autograd of the formula, float64, with keep_mask's mask (the L*S weights kept by autograd)."""
    import torch

    _, n, length, keys, e, _, _, p, seed, step, causal, scale = case
    t = {name: torch.from_numpy(a.astype(np.float64)).requires_grad_() for name, a in inputs(case).items()}
    scale = 1 / np.sqrt(e) if scale is None else scale
    s = t["q"] @ t["k"].transpose(-1, -2) * scale
    if "bias" in t:
        s = s + t["bias"].detach()
    if causal:
        s = s.masked_fill(~torch.ones(length, keys, dtype=torch.bool).tril(), -torch.inf)
    w = torch.softmax(s, dim=-1)
    if p > 0:
        keep = torch.from_numpy(am.keep((n, length, keys), p, seed, step))
        w = torch.where(keep, w * (1 / effective_keep(p) if p < 1 else 0.0), 0.0)
    (w @ t["v"]).backward(t["dout"].detach())
    return {name: t[name].grad.numpy() for name in ("q", "k", "v")}


@pytest.mark.parametrize("case", range(len(CASES)))
def test_forward_matches_formula(kernel_results, case):
    c = CASES[case]
    dtype, *_, p, seed, step, causal, scale = c
    a = {name: x.astype(np.float64) for name, x in inputs(c).items()}
    want = am.attention(a["q"], a["k"], a["v"], a.get("bias"), p, seed=seed, step=step, scale=scale, is_causal=causal)
    assert am.rel_err(kernel_results[f"out{case}"], want) < TOL[dtype]
    e = a["q"].shape[-1]
    s = np.einsum("nle,nse->nls", a["q"], a["k"]) * (1 / np.sqrt(e) if scale is None else scale)
    if "bias" in a:
        s = s + a["bias"]
    if causal:
        s = np.where(np.tril(np.ones(s.shape[-2:], bool)), s, -np.inf)
    with np.errstate(divide="ignore"):  # a row with no key: lse = -inf
        lse = np.log(np.exp(s).sum(-1))
    assert am.rel_err(kernel_results[f"lse{case}"], lse) < max(TOL[dtype], 1e-6)


@pytest.mark.parametrize("case", range(len(CASES)))
def test_gradients_match_autograd_of_formula(kernel_results, case):
    want = _grads(CASES[case])
    for name in ("q", "k", "v"):
        got = kernel_results[f"d{name}{case}"]
        assert got.shape == want[name].shape
        assert am.rel_err(got, want[name]) < 10 * TOL[CASES[case][0]], name


@pytest.mark.parametrize("case", [i for i, c in enumerate(CASES) if c[0] == "float64"])
def test_jax_kernel_gives_the_same_outputs(kernel_results, case):
    """The same inputs, seed and step: JAX's kernel and Triton's agree to float64 rounding (and the mask)."""
    jax = pytest.importorskip("jax", reason="jax is not installed")
    from xdrop._kernels.jax._attention import forward

    c = CASES[case]
    *_, p, seed, step, causal, scale = c
    a = inputs(c)
    scale = 1 / np.sqrt(a["q"].shape[-1]) if scale is None else scale
    with jax.enable_x64(True):
        out, lse = forward(a["q"], a["k"], a["v"], a.get("bias"), p, scale, seed, step, causal)
        out, lse = np.asarray(out), np.asarray(lse)
    assert am.rel_err(kernel_results[f"out{case}"], out) < 1e-12
    assert am.rel_err(kernel_results[f"lse{case}"], lse) < 1e-12


def test_row_with_no_key(kernel_results):
    """A row whose every key is masked out gives 0 (torch 2.13's math path) and no gradient; the other rows are
    untouched (the formula's, which gives NaN there)."""
    got = kernel_results["masked"]
    assert (got[0, 1] == 0).all() and np.isfinite(got).all()
    bias = np.zeros((1, 3, 40))
    bias[0, 1] = -np.inf
    want = am.attention(*masked_inputs(), bias, 0.5, seed=3, step=4)
    assert am.rel_err(got[0, [0, 2]], want[0, [0, 2]]) < 1e-12
    assert (kernel_results["masked_dq"][0, 1] == 0).all()
    for name in ("masked_dq", "masked_dk", "masked_dv"):
        assert np.isfinite(kernel_results[name]).all(), name


def test_bad_inputs_name_the_shapes_and_dtypes():
    """Checked before any launch, so this runs without a device or the interpreter."""
    import torch

    from xdrop._kernels.cuda import _attention_triton as at

    q = torch.zeros(2, 3, 4)
    with pytest.raises(ValueError, match=r"share a dtype .* torch\.float32, torch\.float64"):
        at.forward(q, q.double(), q, None, 0.1, None, 0, 0, False)
    with pytest.raises(ValueError, match=r"torch.Size\(\[2, 3, 4\]\), torch.Size\(\[2, 3, 5\]\)"):
        at.forward(q, torch.zeros(2, 3, 5), q, None, 0.1, None, 0, 0, False)
    with pytest.raises(ValueError, match="seed must be an int or a 0-d/1-d int64 tensor"):
        at.forward(q, q, q, None, 0.1, None, torch.zeros(1, dtype=torch.int32), 0, False)


if __name__ == "__main__":
    _run_child(sys.argv[1], sys.argv[2])
