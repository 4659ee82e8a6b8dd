"""The CPU attention operator's compiled per-block pass against its torch operations.

``_attention_torch.FUSED`` picks the path: the compiled pass (the scaled, biased,
causally masked softmax, its log-sum-exp, the keep mask and the dropout scale in
one pass per block, on each compiled variant this CPU runs) or every block
through torch operations (the path that runs without the compiled kernel, here
also with the NumPy engine drawing the masks). The mask bits must be the same
and the values the same to a few roundings of the compute dtype (the two
compute e^x with different routines): out, lse and every gradient, the bias's
included, for each bias form the operator takes.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from helpers import recording_sizes

import xdrop

torch = pytest.importorskip("torch", reason="the torch operator needs torch")

from xdrop._kernels.host import _native  # noqa: E402
from xdrop._kernels.torch import _attention as _attention_torch  # noqa: E402

SEED, STEP, SCALE = 98765432101234, 5, 0.7
B, H = 2, 3
N = B * H
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
# Operator-form biases over N = B * H rows: by batch, by head, one row of keys per problem,
# 3-d (N, L, 1) broadcast along the keys, and one with rows whose every key is -inf.
BIASES = ["none", "batch", "heads", "keys", "3d", "masked"]


def _bias(case, L, S, dtype):
    g = torch.Generator().manual_seed(3)
    shape = {
        "batch": (B, 1, L, S),
        "heads": (1, H, L, S),
        "keys": (B, H, 1, S),
        "3d": (N, L, 1),
        "masked": (1, H, L, S),
    }
    if case == "none":
        return None
    bias = torch.randn(shape[case], generator=g, dtype=torch.float64)
    if case == "masked":
        bias[0, 1, L // 2] = -torch.inf  # a row of head 1 with no key, in each batch
        bias[0, 2, 0, : S // 2] = -torch.inf
    return bias.to(dtype)


def _run(fused, monkeypatch, q, k, v, bias, p, causal):
    """``(out, lse, dq, dk, dv[, dbias])`` of the operator with ``FUSED = fused``."""
    monkeypatch.setattr(_attention_torch, "FUSED", fused)
    out, lse = _attention_torch.forward(q, k, v, bias, p, SCALE, SEED, STEP, causal)
    dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(9)).to(out.dtype)
    grads = _attention_torch.backward(dout, q, k, v, bias, out, lse, p, SCALE, SEED, STEP, causal, bias is not None)
    return out, lse, *grads


def _close(name, got, want, eps):
    """Equal where not finite, and within a few roundings of the largest magnitude elsewhere."""
    assert got.shape == want.shape and got.dtype == want.dtype, name
    finite = torch.isfinite(want)
    assert torch.equal(torch.isfinite(got), finite) and torch.equal(got[~finite], want[~finite]), name
    got, want = got[finite].double(), want[finite].double()
    if want.numel():
        err = (got - want).abs().max().item()
        assert err <= eps * max(want.abs().max().item(), 1.0), (name, err)


@pytest.fixture(params=[*_native.VARIANTS, "numpy"])
def kernels(request, monkeypatch):
    """One compiled variant (skipped where this CPU does not run it), or none: the NumPy engine draws the masks."""
    if request.param == "numpy":
        monkeypatch.setattr(_native, "library", lambda variant=None: None)
        return request.param
    lib = _native.library(request.param)
    if lib is None:
        pytest.skip(f"compiled variant {request.param!r} not available (this CPU runs {_native.build_info().variants})")
    monkeypatch.setattr(_native, "library", lambda variant=None: lib)
    return request.param


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("L, S", [(13, 16), (7, 1)])
def test_fused_pass_equals_the_torch_operations(kernels, dtype, L, S, monkeypatch):
    """Blocks of 5 query rows (L not a multiple of them), and of whole problems; every bias form, causal or not.

    v is the identity, so out is the dropped weights: its zeros are the keep mask (the weights
    themselves are never 0 here but in rows with no key and above the causal diagonal).
    """
    g = torch.Generator().manual_seed(1)
    q = torch.randn(N, L, 8, generator=g).to(dtype)
    k = torch.randn(N, S, 8, generator=g).to(dtype)
    v = torch.eye(S, dtype=dtype).expand(N, S, S)
    ct = torch.float64 if dtype == torch.float64 else torch.float32
    # roundings of the compute dtype (a gradient sums S products of them); the half types' results
    # are rounded once more, to the type
    eps = 64 * torch.finfo(ct).eps + (torch.finfo(dtype).eps if dtype in (torch.float16, torch.bfloat16) else 0.0)
    for block in (5 * S, 1 << 20):
        monkeypatch.setattr(_attention_torch, "BLOCK", block)
        for case in BIASES:
            bias = _bias(case, L, S, dtype)
            for causal in (False, True):
                for p in (0.0, 0.25):
                    fused = _run(True, monkeypatch, q, k, v, bias, p, causal)
                    plain = _run(False, monkeypatch, q, k, v, bias, p, causal)
                    where = (kernels, dtype, L, S, block, case, causal, p)
                    assert torch.equal(fused[0] != 0, plain[0] != 0), where  # the mask bits
                    for name, a, b in zip(["out", "lse", "dq", "dk", "dv", "dbias"], fused, plain, strict=False):
                        _close((name, *where), a, b, eps)


def test_fused_mask_bits_are_keep_mask(kernels, monkeypatch):
    """The compiled pass's keep decisions are stream v1's at ``(n L + i) S + j``, on each variant."""
    monkeypatch.setattr(_attention_torch, "FUSED", True)
    L, S = 20, 37  # rows start at flat indices off the Philox blocks of 4
    q = torch.zeros(N, L, 4)
    v = torch.eye(S).expand(N, S, S)
    out, _ = _attention_torch.forward(q, torch.zeros(N, S, 4), v, None, 0.3, 1.0, SEED, STEP, False)
    want = xdrop.keep_mask((N, L, S), 0.3, seed=SEED, step=STEP, xp=np)
    assert np.array_equal((out != 0).numpy(), want)


def test_fused_pass_runs_no_softmax_operation(monkeypatch):
    """With the compiled kernel, a block's softmax and mask are the compiled pass's: torch runs only the products."""
    from torch.utils._python_dispatch import TorchDispatchMode

    if _native.library() is None:
        pytest.skip("without the compiled kernel every block runs through torch operations")
    ops = set()

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            ops.add(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    monkeypatch.setattr(_attention_torch, "BLOCK", 64)
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(N, 16, 8, generator=g) for _ in range(3))
    bias = torch.randn(B, 1, 16, 16, generator=g)
    with Record():
        out, lse = _attention_torch.forward(q, k, v, bias, 0.25, SCALE, SEED, STEP, True)
        _attention_torch.backward(torch.ones_like(out), q, k, v, bias, out, lse, 0.25, SCALE, SEED, STEP, True, True)
    assert not ops & {"exp", "exp_", "amax", "masked_fill_", "masked_fill", "log", "div_"}, ops


@pytest.mark.parametrize("threads", [2, 3])
def test_rows_split_across_threads_give_the_same_bits(threads, monkeypatch):
    """A block's rows split into ``torch.get_num_threads()`` parts (here every block, however small) give
    the same out, lse and gradients, bit for bit, as the whole block on the calling thread."""
    if _native.library() is None:
        pytest.skip("the split runs the compiled pass, which is not built")
    g = torch.Generator().manual_seed(4)
    q, k = torch.randn(N, 11, 8, generator=g), torch.randn(N, 9, 8, generator=g)
    v = torch.randn(N, 9, 5, generator=g)
    bias = torch.randn(1, H, 11, 9, generator=g)
    monkeypatch.setattr(_attention_torch, "BLOCK", 4 * 9)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        runs = []
        for split_min in (1, 1 << 62):
            monkeypatch.setattr(_attention_torch, "SPLIT_MIN", split_min)
            runs.append(_run(True, monkeypatch, q, k, v, bias, 0.25, True))
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)


@pytest.fixture(params=["avx512", "avx2"])
def own_products(request):
    """A variant's routine with its own products, or a skip where this CPU does not run the variant."""
    lib = _native.library(request.param)
    if lib is None or lib.attention_mm is None:
        pytest.skip(f"compiled variant {request.param!r} not available (this CPU runs {_native.build_info().variants})")
    return lib


# (N, L, S, E, Ev): one tile; keys not a multiple of 16; several tiles of rows (S = 2000: 32 rows a tile)
# with L not a multiple of them; fewer problems than threads' parts (rows split, dk and dv summed after).
MM_SHAPES = [(6, 13, 16, 16, 32), (6, 7, 1, 16, 16), (6, 9, 37, 32, 16), (2, 70, 2000, 16, 16), (1, 40, 24, 16, 48)]


@pytest.mark.parametrize("shape", MM_SHAPES, ids=str)
@pytest.mark.parametrize("openmp", [True, False], ids=["openmp", "posix-threads"])
def test_own_products_equal_the_torch_operations(own_products, shape, openmp, monkeypatch):
    """The routine that also runs the products (float32, E and Ev multiples of 16) against every block
    through torch operations: the same mask bits, values within a few float32 roundings, for each bias
    form, causal or not, p = 0, 0.25 and 1, on two threads through torch's OpenMP runtime or the routine's
    own POSIX threads."""
    lib = own_products
    monkeypatch.setattr(_native, "library", lambda variant=None: lib)
    if not openmp:
        monkeypatch.setattr(_attention_torch, "_gomp", [(os.getpid(), 0)])
    n, L, S, E, Ev = shape
    g = torch.Generator().manual_seed(5)
    q, k = torch.randn(n, L, E, generator=g), torch.randn(n, S, E, generator=g)
    v = torch.randn(n, S, Ev, generator=g)
    # a few roundings of sums of up to 2000 products, taken in another order than BLAS's, relative to
    # the largest magnitude (or 1: a gradient whose true value is 0, as dk with one key, is rounding noise)
    eps = 256 * torch.finfo(torch.float32).eps
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for case in BIASES if n == N else ["none"]:
            bias = _bias(case, L, S, torch.float32)
            for causal in (False, True):
                for p in (0.0, 0.25, 1.0):
                    own = _run(True, monkeypatch, q, k, v, bias, p, causal)
                    plain = _run(False, monkeypatch, q, k, v, bias, p, causal)
                    where = (shape, case, causal, p)
                    for name, a, b in zip(["out", "lse", "dq", "dk", "dv", "dbias"], own, plain, strict=False):
                        _close((name, *where), a, b, eps)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("shape", [(0, 4, 4), (2, 0, 4), (2, 4, 0)], ids=str)
def test_own_products_empty_shapes(own_products, shape, monkeypatch):
    """No problems, no queries or no keys: the empty results the blocked code gives (out 0 without keys)."""
    monkeypatch.setattr(_native, "library", lambda variant=None: own_products)
    n, L, S = shape
    q, k, v = torch.randn(n, L, 16), torch.randn(n, S, 16), torch.randn(n, S, 16)
    out, lse, dq, dk, dv = _run(True, monkeypatch, q, k, v, None, 0.25, False)
    assert out.shape == (n, L, 16) and lse.shape == (n, L) and not out.any()
    assert (dq.shape, dk.shape, dv.shape) == ((n, L, 16), (n, S, 16), (n, S, 16))
    assert not (dq.any() or dk.any() or dv.any())


def test_own_products_mask_bits_and_half_types(own_products, monkeypatch):
    """Its keep decisions are stream v1's at ``(n L + i) S + j`` (v the identity: out is the dropped
    weights), and float16 / bfloat16 inputs (computed in float32) take it too."""
    lib = own_products
    monkeypatch.setattr(_native, "library", lambda variant=None: lib)
    calls, routine = [], lib.attention_mm
    monkeypatch.setattr(lib, "attention_mm", lambda *a: calls.append(1) or routine(*a))
    L, S = 20, 32
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        q = torch.zeros(N, L, 16, dtype=dtype)
        v = torch.eye(S, dtype=dtype).expand(N, S, S)
        out, _ = _attention_torch.forward(q, torch.zeros(N, S, 16, dtype=dtype), v, None, 0.3, 1.0, SEED, STEP, False)
        want = xdrop.keep_mask((N, L, S), 0.3, seed=SEED, step=STEP, xp=np)
        assert np.array_equal((out != 0).numpy(), want), dtype
    assert len(calls) == 3


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")
def test_own_products_in_a_forked_child(own_products, monkeypatch):
    """In a process forked after the routine ran on torch's OpenMP threads, it runs on POSIX threads:
    GNU OpenMP's threads do not survive a fork, and a parallel region there waits for them for ever."""
    import time

    lib = own_products
    monkeypatch.setattr(_native, "library", lambda variant=None: lib)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        g = torch.Generator().manual_seed(6)
        q, k, v = (torch.randn(2, 12, 16, generator=g) for _ in range(3))
        want, _ = _attention_torch.forward(q, k, v, None, 0.25, SCALE, SEED, STEP, False)
        read, write = os.pipe()
        with warnings.catch_warnings():  # JAX, where another test imported it, warns of its threads: unused here
            warnings.filterwarnings("ignore", r"os\.fork\(\) was called", RuntimeWarning)
            pid = os.fork()
        if pid == 0:  # the child: no torch operation large enough to start a parallel region of torch's
            try:
                got, _ = _attention_torch.forward(q, k, v, None, 0.25, SCALE, SEED, STEP, False)
                os.write(write, b"1" if np.array_equal(got.numpy(), want.numpy()) else b"0")
            finally:
                os._exit(0)
        os.close(write)
        deadline = time.monotonic() + 60
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                pytest.fail("the forked child's attention call did not return within 60 s")
            time.sleep(0.05)
        assert os.read(read, 1) == b"1"
        os.close(read)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("n", [4, 1], ids=["problems>=threads", "one-problem"])
def test_own_products_create_no_tensor_of_l_by_s(own_products, n, monkeypatch):
    """Every torch tensor the routine's forward and backward create is at most an input or output's size,
    or, where one problem's rows are split between the threads, one ``dk`` per thread: nothing of L x S
    (the tiles live in the compiled routine, one per thread)."""
    monkeypatch.setattr(_native, "library", lambda variant=None: own_products)
    sizes = []
    L = S = 96
    g = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(n, L, 16, generator=g) for _ in range(3))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with recording_sizes(sizes):
            out, lse = _attention_torch.forward(q, k, v, None, 0.25, SCALE, SEED, STEP, True)
            _attention_torch.backward(torch.ones_like(out), q, k, v, None, out, lse, 0.25, SCALE, SEED, STEP, True)
    finally:
        torch.set_num_threads(before)
    assert sizes and max(sizes) <= max(n, 2) * S * 16 < L * S


def test_own_products_bits_do_not_depend_on_the_thread_count(own_products, monkeypatch):
    """One thread or three give the same out, lse and gradients, bit for bit, where each problem's backward
    stays on one thread (as many problems as threads): a row's sums run in one order whatever the parts.
    With fewer problems than threads the forward still does (the backward then sums per-thread dk, dv)."""
    monkeypatch.setattr(_native, "library", lambda variant=None: own_products)
    g = torch.Generator().manual_seed(8)
    before = torch.get_num_threads()
    try:
        for n in (6, 1):
            q, k, v = (torch.randn(n, 50, 16, generator=g) for _ in range(3))
            runs = []
            for threads in (1, 3):
                torch.set_num_threads(threads)
                runs.append(_run(True, monkeypatch, q, k, v, None, 0.25, True))
            compared = runs[0] if n >= 3 else runs[0][:2]
            for a, b in zip(compared, runs[1], strict=False):
                assert torch.equal(a, b), n
    finally:
        torch.set_num_threads(before)
