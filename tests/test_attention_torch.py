"""The torch operator ``torch.ops.xdrop.attention``: mask bits, values and gradients against the reference.

The expected mask is NumPy's ``keep_mask`` (itself tested against the scalar
spec); the expected values and gradients are torch autograd through the
pure-standard reference with the same mask (``xdrop._functional._attention_reference``).
Small ``BLOCK`` settings make every test cross block boundaries: blocks of
several problems, of whole problems and of a few query rows.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import recording_sizes

import xdrop

torch = pytest.importorskip("torch", reason="the torch operator needs torch")
from torch._dynamo.testing import CompileCounterWithBackend  # noqa: E402

from xdrop._functional._attention_reference import sdpa_reference  # noqa: E402
from xdrop._kernels.torch import _attention as _attention_torch  # noqa: E402
from xdrop._kernels.torch import _attention_op  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore:Dynamo detected a call to a `functools.lru_cache`:UserWarning"),
    pytest.mark.filterwarnings(r"ignore:`torch\.jit\.script(_method)?` is deprecated:DeprecationWarning"),
]

P = 0.25
SEED, STEP = 123456789012345, 3
# Elements per block: 1 row of 16 keys; a few rows; whole problems; several problems per block.
BLOCKS = [16, 48, 16 * 12, 1 << 20]


@pytest.fixture(params=BLOCKS, ids=lambda b: f"block{b}")
def block(request, monkeypatch):
    monkeypatch.setattr(_attention_torch, "BLOCK", request.param)
    return request.param


def _xp():
    import array_api_compat.torch as xp

    return xp


def _qkv(lead=(2, 3), L=12, S=16, E=8, Ev=5, dtype=torch.float64, grad=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    made = [torch.randn(*lead, n, e, generator=g, dtype=dtype) for n, e in ((L, E), (S, E), (S, Ev))]
    return [t.requires_grad_(grad) for t in made]


def test_mask_bits_are_keep_mask(block):
    lead, L, S = (2, 3), 12, 16
    q, k, _ = _qkv(lead, L, S, grad=False)
    v = torch.eye(S, dtype=torch.float64).expand(*lead, S, S)
    out = xdrop.scaled_dot_product_attention(q * 0.1, k * 0.1, v, dropout_p=P, seed=SEED, step=STEP)
    want = xdrop.keep_mask((*lead, L, S), P, seed=SEED, step=STEP, xp=np)
    got = (out != 0).numpy()
    assert np.count_nonzero(got != want) == 0, f"{np.count_nonzero(got != want)} mask bits differ"


def _bias_for(case, lead, L, S):
    g = torch.Generator().manual_seed(7)
    if case == "padding":  # (batch, 1, 1, S) bool, as transformers' padding masks: one row has no key
        m = torch.rand(lead[0], 1, L, S, generator=g) > 0.3
        m[0, 0, 3] = False
        return m
    if case == "per-head":  # (1, heads, L, S) float: the copying broadcast
        return torch.randn(1, lead[1], L, S, generator=g, dtype=torch.float64)
    if case == "keys":  # (S,) float
        return torch.randn(S, generator=g, dtype=torch.float64)
    return None


@pytest.mark.parametrize("case", ["plain", "causal", "padding", "per-head", "keys", "gqa", "p0", "p1"])
def test_values_and_gradients_match_the_reference(block, case):
    lead, L, S = (2, 3), 12, 16
    q, k, v = _qkv(lead, L, S)
    if case == "gqa":
        q = _qkv((2, 6), L, S, seed=1)[0]
    mask = _bias_for(case, lead, L, S)
    p = {"p0": 0.0, "p1": 1.0}.get(case, P)
    causal = case == "causal"
    out = xdrop.scaled_dot_product_attention(q, k, v, mask, p, is_causal=causal, scale=0.6, seed=SEED, step=STEP)
    kr, vr = (k.repeat_interleave(2, 1), v.repeat_interleave(2, 1)) if case == "gqa" else (k, v)
    bias = None
    if mask is not None:
        bias = torch.where(mask, 0.0, -torch.inf).double() if mask.dtype == torch.bool else mask
    want = sdpa_reference(_xp(), q, kr, vr, bias, p, 0.6, SEED, STEP, causal)
    assert out.shape == want.shape and out.dtype == want.dtype
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)
    dout = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v), dout)
    exp = torch.autograd.grad(want, (q, k, v), dout)
    for name, a, b in zip("qkv", got, exp, strict=True):
        assert torch.isfinite(a).all(), name
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-12, msg=f"d{name}")
    if case == "padding":
        assert torch.all(out[0, :, 3] == 0)  # the row with no key


@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_backward_of_reductions(reduce):
    q, k, v = _qkv()
    out = xdrop.scaled_dot_product_attention(q, k, v, dropout_p=P, seed=SEED, step=STEP)
    getattr(out, reduce)().backward()
    got = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    getattr(sdpa_reference(_xp(), q, k, v, None, P, 8**-0.5, SEED, STEP, False), reduce)().backward()
    for a, t in zip(got, (q, k, v), strict=True):
        torch.testing.assert_close(a, t.grad, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("causal", [False, True])
def test_gradcheck_float64(causal, monkeypatch):
    monkeypatch.setattr(_attention_torch, "BLOCK", 12)  # rows in several blocks
    q, k, v = _qkv((2,), L=5, S=6, E=3, Ev=2)

    def f(q, k, v):
        return xdrop.scaled_dot_product_attention(q, k, v, dropout_p=0.4, is_causal=causal, seed=SEED, step=STEP)

    assert torch.autograd.gradcheck(f, (q, k, v))


def test_opcheck():
    """torch's own checks of the registration: fake kernel, autograd, schema."""
    q, k, v = (t.reshape(6, *t.shape[2:]).detach().requires_grad_() for t in _qkv(grad=False))
    seed_step = torch.tensor([SEED, STEP])
    torch.library.opcheck(_attention_op.OP, (q.detach(), k.detach(), v.detach(), None, seed_step, P, 0.5, False))
    bias = torch.zeros(2, 1, 16, dtype=torch.float64)
    torch.library.opcheck(_attention_op.OP, (q, k, v, bias, seed_step, P, 0.5, True))


def test_dtypes_devices_and_inputs_kept():
    for dtype in (torch.float32, torch.bfloat16):
        q, k, v = _qkv(dtype=dtype, grad=False)
        before = [t.clone() for t in (q, k, v)]
        out = xdrop.scaled_dot_product_attention(q, k, v, dropout_p=P, seed=SEED)
        assert out.dtype == dtype and out.device == q.device
        want = sdpa_reference(_xp(), *(t.double() for t in (q, k, v)), None, P, 8**-0.5, SEED, 0, False)
        torch.testing.assert_close(out.double(), want, rtol=0.02 if dtype == torch.bfloat16 else 1e-5, atol=1e-2)
        for a, b in zip((q, k, v), before, strict=True):
            assert torch.equal(a, b)


def test_compile_fullgraph_no_break():
    torch._dynamo.reset()
    q, k, v = _qkv(grad=True)

    def f(q, k, v, step):
        return xdrop.scaled_dot_product_attention(q, k, v, dropout_p=P, seed=SEED, step=step)

    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(f, fullgraph=True, backend=counter)
    out = compiled(q, k, v, STEP)
    eager = f(q, k, v, STEP)
    assert torch.equal(out, eager)
    assert counter.frame_count == 1
    dout = torch.randn_like(out)
    for a, b in zip(
        torch.autograd.grad(out, (q, k, v), dout), torch.autograd.grad(eager, (q, k, v), dout), strict=True
    ):
        assert torch.equal(a, b)
    torch._dynamo.reset()


def _saved(fn):
    """The tensors autograd saves during ``fn()``: (number of elements, bytes) of each."""
    saved = []

    def pack(t):
        saved.append((t.numel(), t.numel() * t.element_size()))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return saved


def test_nothing_of_l_by_s_elements_is_saved():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    L = S = 128
    q, k, v = _qkv((2, 2), L, S, E=16, Ev=16, dtype=torch.float32)
    ours = _saved(lambda: xdrop.scaled_dot_product_attention(q, k, v, dropout_p=P, seed=SEED))
    assert max(n for n, _ in ours) < L * S, ours

    def math_sdpa():
        with sdpa_kernel(SDPBackend.MATH):
            torch.nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=P)

    theirs = _saved(math_sdpa)
    assert max(n for n, _ in theirs) >= 4 * L * S  # torch's math path keeps (N, L, S) tensors
    assert sum(b for _, b in ours) < sum(b for _, b in theirs) / 4
    # beyond the inputs q, k, v (which both keep): only the log-sum-exp per row and the (seed, step) pair
    inputs = 3 * q.numel() * q.element_size()
    assert sum(b for _, b in ours) - inputs == 2 * 2 * L * 4 + 2 * 8


def test_bias_for_the_device_kernels_has_leading_size_1_or_n():
    """The CUDA kernels take bias (N, L, S)-broadcastable: a bias serving groups of rows is repeated for them."""
    bias = torch.arange(2 * 3 * 4.0).reshape(2, 3, 4)  # rows n = 0..2 use bias[0], n = 3..5 use bias[1]
    out = _attention_torch._contract_bias(bias, 6)
    assert out.shape == (6, 3, 4)
    for n in range(6):
        assert torch.equal(out[n], bias[n // 3])
    assert _attention_torch._contract_bias(bias[:1], 6) is not None and _attention_torch._contract_bias(None, 6) is None


def test_compiled_layer_state_path_matches_eager_step_by_step():
    """A layer's (seed, step) buffers, taken as a tensor under compile: no graph break, eager's bits at each step."""
    from xdrop._functional._attention import attention_with_state
    from xdrop.torch._call_sites import Stream

    class Attn(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stream = Stream(SEED)

        def forward(self, q, k, v):
            return attention_with_state(q, k, v, None, P, False, None, self.stream._take())

    torch._dynamo.reset()
    q, k, v = _qkv(grad=False)
    eager, compiled_model = Attn(), Attn()
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(compiled_model, fullgraph=True, backend=counter)
    for step in range(3):
        want = xdrop.scaled_dot_product_attention(q, k, v, dropout_p=P, seed=SEED, step=step)
        assert torch.equal(eager(q, k, v), want)
        assert torch.equal(compiled(q, k, v), want)
    assert counter.frame_count == 1 and int(compiled_model.stream.step) == 3
    torch._dynamo.reset()


def test_no_intermediate_larger_than_a_block(monkeypatch):
    """Every tensor the blocked forward and backward create is at most a block or an input/output's size.

    A dispatch mode sees each aten op's outputs inside the (unregistered) kernel functions.
    """
    sizes = []
    block = 4 * 64
    monkeypatch.setattr(_attention_torch, "BLOCK", block)
    n, L, S, E = 4, 64, 64, 8
    q, k, v = (t.reshape(n, *t.shape[2:]) for t in _qkv((2, 2), L, S, E=E, Ev=E, grad=False))
    bias = torch.zeros(2, 1, S, dtype=torch.float64)
    with recording_sizes(sizes):
        out, lse = _attention_torch.forward(q, k, v, bias, P, 0.3, SEED, STEP, True)
        _attention_torch.backward(torch.ones_like(out), q, k, v, bias, out, lse, P, 0.3, SEED, STEP, True)
    assert sizes and max(sizes) <= max(block, n * L * E) < L * S


# Float masks that require grad, each broadcast pattern of the leading dims (lead (2, 3)):
# varying over batch ("outer", a padding-style mask), over heads ("inner", T5's position bias),
# both, neither; broadcast along L or S; and -inf entries with a row that has no key.
BIAS_SHAPES = {
    "outer": (2, 1, 12, 16),
    "inner": (1, 3, 12, 16),
    "full": (2, 3, 12, 16),
    "shared": (12, 16),
    "keys": (2, 1, 1, 16),
    "rows": (1, 3, 12, 1),
    "masked": (1, 3, 12, 16),
}


def _grad_bias(case):
    g = torch.Generator().manual_seed(11)
    bias = torch.randn(BIAS_SHAPES[case], generator=g, dtype=torch.float64)
    if case == "masked":
        bias = bias.masked_fill(torch.rand(bias.shape, generator=g) < 0.3, -torch.inf)
        bias[0, 1, 4] = -torch.inf  # a row with no key: output 0, no gradient
    return bias.requires_grad_()


@pytest.mark.parametrize("p", [0.0, P])
@pytest.mark.parametrize("case", list(BIAS_SHAPES))
def test_float_mask_gradient_matches_the_reference(block, case, p):
    q, k, v = _qkv()
    bias = _grad_bias(case)
    out = xdrop.scaled_dot_product_attention(q, k, v, bias, p, scale=0.6, seed=SEED, step=STEP)
    want = sdpa_reference(_xp(), q, k, v, bias, p, 0.6, SEED, STEP, False)
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)
    dout = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v, bias), dout)
    exp = torch.autograd.grad(want, (q, k, v, bias), dout)
    for name, a, b in zip(("q", "k", "v", "bias"), got, exp, strict=True):
        assert a.shape == b.shape and torch.isfinite(a).all(), name
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-12, msg=f"d{name}")
    assert torch.count_nonzero(got[3]) > 0


def test_float_mask_gradient_of_an_interleaved_broadcast(block):
    """Leading dims (varying, broadcast, varying): the one pattern the operator takes as a copy."""
    q, k, v = _qkv((2, 2, 3))
    bias = torch.randn(2, 1, 3, 12, 16, dtype=torch.float64, requires_grad=True)
    out = xdrop.scaled_dot_product_attention(q, k, v, bias, P, seed=SEED, step=STEP)
    want = sdpa_reference(_xp(), q, k, v, bias, P, 8**-0.5, SEED, STEP, False)
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)
    dout = torch.randn_like(out)
    got, exp = (torch.autograd.grad(o, bias, dout)[0] for o in (out, want))
    torch.testing.assert_close(got, exp, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("case", ["outer", "inner", "masked"])
def test_gradcheck_float64_with_a_float_mask(case, monkeypatch):
    monkeypatch.setattr(_attention_torch, "BLOCK", 12)  # rows in several blocks
    q, k, v = _qkv((2, 3), L=4, S=5, E=3, Ev=2)
    shape = {"outer": (2, 1, 4, 5), "inner": (1, 3, 4, 5), "masked": (2, 3, 1, 5)}[case]
    bias = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    if case == "masked":
        bias[0, 1, 0, 2] = -torch.inf
    bias.requires_grad_()

    def f(q, k, v, bias):
        return xdrop.scaled_dot_product_attention(q, k, v, bias, 0.4, seed=SEED, step=STEP)

    assert torch.autograd.gradcheck(f, (q, k, v, bias))


def test_opcheck_with_a_bias_that_requires_grad():
    q, k, v = (t.reshape(6, *t.shape[2:]).detach().requires_grad_() for t in _qkv(grad=False))
    seed_step = torch.tensor([SEED, STEP])
    for bias in (torch.randn(2, 1, 12, 16, dtype=torch.float64), torch.randn(1, 3, 12, 16, dtype=torch.float64)):
        torch.library.opcheck(_attention_op.OP, (q, k, v, bias.requires_grad_(), seed_step, P, 0.5, False))


def test_compile_with_a_float_mask_that_requires_grad_no_break():
    torch._dynamo.reset()
    q, k, v = _qkv(grad=True)
    bias = _grad_bias("inner")

    def f(q, k, v, bias, step):
        return xdrop.scaled_dot_product_attention(q, k, v, bias, P, seed=SEED, step=step)

    counter = CompileCounterWithBackend("aot_eager")
    out = torch.compile(f, fullgraph=True, backend=counter)(q, k, v, bias, STEP)
    eager = f(q, k, v, bias, STEP)
    assert torch.equal(out, eager) and counter.frame_count == 1
    dout = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v, bias), dout)
    for a, b in zip(got, torch.autograd.grad(eager, (q, k, v, bias), dout), strict=True):
        assert torch.equal(a, b)
    torch._dynamo.reset()


def test_a_float_mask_that_requires_grad_saves_nothing_more():
    L = S = 64
    q, k, v = _qkv((2, 2), L, S, E=8, Ev=8, dtype=torch.float32)
    bias = torch.randn(1, 2, L, S, requires_grad=True)
    saved = _saved(lambda: xdrop.scaled_dot_product_attention(q, k, v, bias, P, seed=SEED))
    inputs = 3 * q.numel() * q.element_size() + bias.numel() * bias.element_size()
    assert sum(b for _, b in saved) - inputs == 2 * 2 * L * 4 + 2 * 8  # the log-sum-exps and (seed, step)


@pytest.mark.parametrize("case", ["outer", "inner"])
def test_a_float_mask_is_read_by_index_never_copied(case, monkeypatch):
    """The bias is never repeated for the heads (or batch) it serves, forward or backward.

    A dispatch mode sees every aten op: any op reading the bias's storage must be a view or
    the in-place add into a block's scores (or take its shape for the gradient); ``_flat_bias``
    gives the operator a view.
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    from xdrop._functional._attention import _flat_bias

    user = _grad_bias(case).detach()
    bias = _flat_bias(user, (2, 3), 6)
    assert bias.untyped_storage().data_ptr() == user.untyped_storage().data_ptr()
    readers = set()
    ptr = bias.untyped_storage().data_ptr()

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            flat = list(args) + list((kwargs or {}).values())
            if any(isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() == ptr for t in flat):
                readers.add(func)
            return func(*args, **(kwargs or {}))

    monkeypatch.setattr(_attention_torch, "BLOCK", 16 * 12 * 2)  # blocks of two problems, across groups
    q, k, v = (t.reshape(6, *t.shape[2:]) for t in _qkv(grad=False))
    with Record():
        out, lse = _attention_torch.forward(q, k, v, bias, P, 0.3, SEED, STEP, False)
        _attention_torch.backward(torch.ones_like(out), q, k, v, bias, None, lse, P, 0.3, SEED, STEP, False, True)
    aten = torch.ops.aten
    allowed = {aten.add_.Tensor, aten.zeros_like.default}  # the add into the scores; dbias takes its shape
    copies = {f for f in readers if not f.is_view and f not in allowed}
    assert readers and not copies, copies


@pytest.mark.parametrize("p", [0.0, P, 1.0])
def test_zero_keys_give_zeros_and_zero_gradients(p):
    """S = 0 (torch's SDPA gives zeros): out 0; dq 0; dk, dv and the float mask's gradient empty."""
    q, k, v = _qkv(S=0)
    bias = torch.zeros(12, 0, dtype=torch.float64, requires_grad=True)
    for mask in (None, bias):
        out = xdrop.scaled_dot_product_attention(q, k, v, mask, p, seed=SEED, step=STEP)
        assert out.shape == (2, 3, 12, 5) and torch.equal(out, torch.zeros_like(out))
        wrt = (q, k, v) if mask is None else (q, k, v, bias)
        grads = torch.autograd.grad(out, wrt, torch.randn_like(out))
        for t, g in zip(wrt, grads, strict=True):
            assert g.shape == t.shape and torch.equal(g, torch.zeros_like(t))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("E", [8, 16])
def test_zero_queries_give_empty_results(E, dtype):
    """L = 0: an empty out, an empty dq, and zero dk, dv, on each CPU path (E = 16 float32: the compiled
    routine with its own products where built; the others: the blocked pass). Once an error, from the
    compiled pass, which takes no empty block."""
    q, k, v = _qkv(L=0, E=E, Ev=16, dtype=dtype)
    out = xdrop.scaled_dot_product_attention(q, k, v, dropout_p=P, seed=SEED, step=STEP)
    assert out.shape == (2, 3, 0, 16)
    grads = torch.autograd.grad(out, (q, k, v), torch.randn_like(out))
    for t, g in zip((q, k, v), grads, strict=True):
        assert g.shape == t.shape and torch.equal(g, torch.zeros_like(t))


def _big_half(dtype):
    """Head dim 64, entries 40: q k^T (102400) overflows float16, the scaled scores (12800) fit."""
    g = torch.Generator().manual_seed(4)
    q = 40 * torch.randn(2, 3, 6, 64, generator=g).sign()
    k = q.flip(-2)  # key L - 1 - i is query i
    v = torch.randn(2, 3, 6, 8, generator=g)
    return [t.to(dtype).requires_grad_() for t in (q, k, v)]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_types_compute_in_float32(dtype):
    """The operator on float16/bfloat16 equals its float32 result on the same values, to the type's rounding."""
    half = _big_half(dtype)
    single = [t.detach().float().requires_grad_() for t in half]
    out = xdrop.scaled_dot_product_attention(*half, dropout_p=P, seed=SEED)
    want = xdrop.scaled_dot_product_attention(*single, dropout_p=P, seed=SEED)
    assert out.dtype == dtype and torch.isfinite(out).all()
    eps = torch.finfo(dtype).eps
    assert (out.float() - want).abs().max() <= eps * want.abs().max()  # one rounding to the type
    dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(5))
    got = torch.autograd.grad(out, half, dout.to(dtype))
    exp = torch.autograd.grad(want, single, dout.to(dtype).float())
    for name, a, b in zip("qkv", got, exp, strict=True):
        assert a.dtype == dtype and torch.isfinite(a).all(), name
        assert (a.float() - b).abs().max() <= eps * b.abs().max(), name


def test_cpu_blocks_draw_their_masks_on_the_calling_thread(monkeypatch):
    """No second thread pool beside torch's: the host driver's pool is never asked for an attention mask.

    A block of 2**19 weights is far above the driver's threading threshold, and four workers
    are allowed, so a mask drawn through the driver would use its pool. The bits are keep_mask's.
    """
    from xdrop._kernels.host import _buffers as _host
    from xdrop._kernels.host import _native

    if _native.library() is None:
        pytest.skip("without the compiled kernel the NumPy engine draws the masks, on its threads")
    monkeypatch.setattr(_host, "_workers", lambda: 4)
    asked = []
    real = _host._pool
    monkeypatch.setattr(_host, "_pool", lambda: asked.append(1) or real())
    L = S = 512
    q, k = (torch.zeros(1, 2, L, 4, requires_grad=True) for _ in range(2))
    v = torch.eye(S).expand(1, 2, S, S)  # uniform weights times v = I: out is the dropped weights
    out = xdrop.scaled_dot_product_attention(q, k, v, dropout_p=P, seed=SEED, step=STEP)
    out.sum().backward()
    assert not asked
    want = xdrop.keep_mask((1, 2, L, S), P, seed=SEED, step=STEP, xp=np)
    assert np.array_equal((out != 0).numpy(), want)
