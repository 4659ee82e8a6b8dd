"""The torch operator ``torch.ops.xdrop.dropout``: compile, autograd, torch.func, fake tensors, layout.

Every torch result is compared with the NumPy backend's bits for the same
(seed, step, p, shape) (the NumPy path is tested against the pure-standard
reference elsewhere), so nothing here trusts the torch code under test.
"""

from __future__ import annotations

import numpy as np
import pytest

import xdrop

torch = pytest.importorskip("torch", reason="the torch operator needs torch")

from xdrop._kernels.torch import _ops as _torch_ops  # noqa: E402  (after the importorskip)

# Dynamo warns when it traces through array-api-compat's lru_cache'd type checks
# (they depend only on the type of the array, which dynamo guards on anyway);
# torch's own lazy imports (inductor, forward AD decompositions) use torch.jit.script.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Dynamo detected a call to a `functools.lru_cache`:UserWarning"),
    pytest.mark.filterwarnings(r"ignore:`torch\.jit\.script(_method)?` is deprecated:DeprecationWarning"),
]

VARIANTS = {
    "dropout": (xdrop.dropout, (4, 3, 5)),
    "dropout1d": (xdrop.dropout1d, (4, 3, 5)),
    "dropout2d": (xdrop.dropout2d, (2, 3, 4, 5)),
    "dropout3d": (xdrop.dropout3d, (2, 3, 2, 2, 3)),
    "alpha_dropout": (xdrop.alpha_dropout, (4, 3, 5)),
    "feature_alpha_dropout": (xdrop.feature_alpha_dropout, (2, 3, 4, 5)),
    "drop_path": (xdrop.drop_path, (4, 3, 5)),
}
FORWARDS = {
    "dropout": xdrop.dropout_forward,
    "dropout1d": xdrop.dropout1d_forward,
    "dropout2d": xdrop.dropout2d_forward,
    "dropout3d": xdrop.dropout3d_forward,
    "alpha_dropout": xdrop.alpha_dropout_forward,
    "feature_alpha_dropout": xdrop.feature_alpha_dropout_forward,
    "drop_path": xdrop.drop_path_forward,
}


def _input(shape, dtype=torch.float32, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _numpy_twin(fn, x, p, **kw):
    """The same call on the NumPy backend, as a tensor."""
    out = fn(x.detach().numpy(), p, **kw)
    return torch.from_numpy(np.asarray(out))


_INT_OF_SIZE = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def _same_bits(a, b):
    """Equal dtype, shape and bits (so -0.0 differs from +0.0 and NaNs compare)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    bits = _INT_OF_SIZE[a.element_size()]
    return torch.equal(a.contiguous().view(bits), b.contiguous().view(bits))


def _compiled(fn, backend="eager"):
    """``torch.compile(fn, fullgraph=True)`` (which raises at any graph break), counting graphs."""
    graphs = []

    def counting(gm, example_inputs):
        graphs.append(gm)
        return torch._dynamo.lookup_backend(backend)(gm, example_inputs)

    return torch.compile(fn, backend=counting, fullgraph=True), graphs


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


# -- the operator itself ---------------------------------------------------------------------------


def test_operator_passes_torch_opcheck():
    """Schema, fake kernel, autograd registration and dispatch, as torch.library checks them."""
    x = _input((3, 4)).requires_grad_()
    seed_step = torch.tensor([7, 2], dtype=torch.int64)
    for args in (
        (x, seed_step, 2**31, [3, 4], 2.0, 0.0, 0.0, "auto"),
        (x, seed_step, 3 << 30, [3, 1], 1.25, 0.5, -0.75, "auto"),
    ):
        torch.library.opcheck(torch.ops.xdrop.dropout.default, args)


def test_operator_equals_numpy_for_every_variant():
    for name, (fn, shape) in VARIANTS.items():
        x = _input(shape)
        want = _numpy_twin(fn, x, 0.3, seed=11, step=5)
        assert _same_bits(fn(x, 0.3, seed=11, step=5), want), name
        # and the operator path (through the dispatcher), as compiled code calls it
        with _force_operator():
            assert _same_bits(fn(x, 0.3, seed=11, step=5), want), name


class _force_operator:
    """Route eager calls through ``torch.ops.xdrop.dropout``, as compiled code and tensor subclasses go."""

    def __enter__(self):
        def through_op(x, seed, step, k, noise_shape, a, b=0.0, c=0.0, impl="auto"):
            ss = torch.tensor([_torch_ops.to_int64(seed), _torch_ops.to_int64(step)])
            return _torch_ops.OP(x, ss, k, list(noise_shape), a, b, c, impl)

        self._patch = pytest.MonkeyPatch()
        self._patch.setattr(_torch_ops, "dropout", through_op)
        return self

    def __exit__(self, *exc):
        self._patch.undo()


def test_seed_and_step_above_2_63_round_trip_through_the_int64_words():
    x = _input((64,))
    seed, step = 2**64 - 3, 2**63 + 5
    want = _numpy_twin(xdrop.dropout, x, 0.5, seed=seed, step=step)
    ss = torch.tensor([_torch_ops.to_int64(seed), _torch_ops.to_int64(step)])
    got = torch.ops.xdrop.dropout(x, ss, 2**31, [64], 2.0, 0.0, 0.0, "auto")
    assert _same_bits(got, want)


# -- torch.compile ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_compile_fullgraph_every_variant_equals_eager(name):
    fn, shape = VARIANTS[name]
    x = _input(shape)
    compiled, graphs = _compiled(lambda t: fn(t, 0.4, seed=3, step=9))
    assert _same_bits(compiled(x), fn(x, 0.4, seed=3, step=9))
    assert len(graphs) == 1


@pytest.mark.parametrize("name", sorted(FORWARDS))
def test_compile_fullgraph_forward_and_backward_functions(name):
    fwd = FORWARDS[name]
    shape = VARIANTS[name][1]
    x, dout = _input(shape), _input(shape, seed=1)

    def step(t, d):
        out, cache = fwd(t, 0.25, seed=5, step=1)
        return out, xdrop.dropout_backward(d, cache)

    compiled, graphs = _compiled(step)
    got, want = compiled(x, dout), step(x, dout)
    assert _same_bits(got[0], want[0]) and _same_bits(got[1], want[1])
    assert len(graphs) == 1


def test_compile_with_inductor_equals_eager():
    x = _input((8, 33))
    compiled, graphs = _compiled(lambda t: xdrop.dropout(t * 2, 0.5, seed=1) + 1, backend="inductor")
    assert _same_bits(compiled(x), xdrop.dropout(x * 2, 0.5, seed=1) + 1)
    assert len(graphs) == 1


def test_compiled_step_tensor_advances_without_recompiling():
    """A (seed, step) buffer advanced in place: new masks, one graph."""
    x = _input((256,))
    ss = torch.tensor([42, 0])

    def f(t, seed_step):
        return _torch_ops.dropout(t, seed_step, 0, 2**31, t.shape, 2.0)

    compiled, graphs = _compiled(f)
    for step in range(3):
        assert _same_bits(compiled(x, ss), _numpy_twin(xdrop.dropout, x, 0.5, seed=42, step=step))
        ss[1] += 1
    assert len(graphs) == 1


def test_compiled_autograd_saves_no_input_sized_tensor_and_matches_eager():
    x = _input((6, 7))
    dout = _input((6, 7), seed=2)

    def f(t):
        return xdrop.alpha_dropout(t, 0.3, seed=4, step=2)

    compiled, _ = _compiled(f, backend="aot_eager")
    xc = x.clone().requires_grad_()
    compiled(xc).backward(dout)
    xe = x.clone().requires_grad_()
    f(xe).backward(dout)
    assert _same_bits(xc.grad, xe.grad)


# -- autograd: one path, nothing of the input's size saved ------------------------------------------


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_autograd_saves_no_tensor_of_the_input_size(name):
    fn, shape = VARIANTS[name]
    x = _input(shape).requires_grad_()
    saved = []

    def pack(t):
        saved.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(x, 0.4, seed=8, step=1)
    out.backward(torch.ones_like(out))
    assert all(math_prod(s) <= 2 for s in saved), saved
    # the gradient is dropout_backward of the forward's cache
    _, cache = FORWARDS[name](x.detach(), 0.4, seed=8, step=1)
    assert _same_bits(x.grad, xdrop.dropout_backward(torch.ones_like(x), cache))


def math_prod(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def test_retain_graph_second_backward_and_double_backward():
    x = _input((5, 6)).requires_grad_()
    out = xdrop.dropout(x, 0.5, seed=3, step=7)
    g = _input((5, 6), seed=4)
    (first,) = torch.autograd.grad(out, x, g, retain_graph=True)
    (second,) = torch.autograd.grad(out, x, g)
    assert _same_bits(first, second)
    # create_graph: the gradient is dropout of g, itself differentiable with respect to g
    v = _input((5, 6), seed=9)
    gg = g.clone().requires_grad_()
    (gx,) = torch.autograd.grad(xdrop.dropout(x, 0.5, seed=3, step=7), x, gg, create_graph=True)
    (dgg,) = torch.autograd.grad(gx, gg, v)
    assert _same_bits(dgg, _numpy_twin(xdrop.dropout, v, 0.5, seed=3, step=7))


def test_operator_backward_uses_the_step_of_its_forward():
    """The layers advance their step buffer in place after a call: backward keeps the old step."""
    x = _input((64,)).requires_grad_()
    ss = torch.tensor([1, 10])
    out = _torch_ops.dropout(x, ss, 0, 2**31, (64,), 2.0)
    ss[1] += 1
    out.backward(torch.ones(64))
    assert _same_bits(x.grad, _numpy_twin(xdrop.dropout, torch.ones(64), 0.5, seed=1, step=10))


# -- forward mode and torch.func -------------------------------------------------------------------


def test_forward_ad_drops_the_tangent_with_the_same_mask():
    import torch.autograd.forward_ad as fwAD

    x, t = _input((40,)), _input((40,), seed=1)
    with fwAD.dual_level():
        out = xdrop.alpha_dropout(fwAD.make_dual(x, t), 0.3, seed=2)
        primal, tangent = fwAD.unpack_dual(out)
    assert _same_bits(primal, _numpy_twin(xdrop.alpha_dropout, x, 0.3, seed=2))
    _, cache = xdrop.alpha_dropout_forward(x, 0.3, seed=2)
    assert _same_bits(tangent, xdrop.dropout_backward(t, cache))


def test_torch_func_grad_jvp_and_vmap():
    x, t = _input((3, 8)), _input((3, 8), seed=1)
    grad = torch.func.grad(lambda v: (xdrop.dropout(v, 0.5, seed=6) * v.detach()).sum())(x)
    assert _same_bits(grad, _numpy_twin(xdrop.dropout, x, 0.5, seed=6))
    out, tangent = torch.func.jvp(lambda v: xdrop.dropout(v, 0.5, seed=6), (x,), (t,))
    assert _same_bits(out, _numpy_twin(xdrop.dropout, x, 0.5, seed=6))
    assert _same_bits(tangent, _numpy_twin(xdrop.dropout, t, 0.5, seed=6))
    # vmap with one seed/step: the mask is that of the whole batched tensor (documented)
    batched = torch.func.vmap(lambda v: xdrop.dropout(v, 0.5, seed=6), in_dims=1, out_dims=1)(x)
    assert _same_bits(batched, _numpy_twin(xdrop.dropout, x.T.contiguous(), 0.5, seed=6).T)


def test_operator_vmap_over_seed_step_gives_each_sample_its_own_mask():
    x = _input((3, 16))
    ss = torch.tensor([[1, 0], [1, 1], [2, 0]])
    out = torch.vmap(lambda v, s: _torch_ops.OP(v, s, 2**31, [16], 2.0, 0.0, 0.0, "auto"))(x, ss)
    for i, (seed, step) in enumerate(ss.tolist()):
        assert _same_bits(out[i], _numpy_twin(xdrop.dropout, x[i], 0.5, seed=seed, step=step))


# -- meta, fake, sparse, layout --------------------------------------------------------------------


def test_meta_and_fake_tensors_give_the_right_metadata():
    from torch._subclasses.fake_tensor import FakeTensorMode

    cl = torch.empty((2, 3, 4, 5), device="meta").to(memory_format=torch.channels_last)
    for name, (fn, shape) in VARIANTS.items():
        out = fn(torch.empty(shape, device="meta"), 0.5, seed=1)
        assert out.device.type == "meta" and tuple(out.shape) == shape, name
    assert xdrop.dropout2d(cl, 0.5, seed=1).stride() == cl.stride()
    with FakeTensorMode():
        x = torch.empty(4, 5)
        out = xdrop.alpha_dropout(x, 0.5, seed=1)
        assert type(out).__name__ == "FakeTensor" and out.shape == x.shape
    mask = xdrop.keep_mask((3, 2), 0.5, seed=1, xp=torch, device="meta")
    assert mask.device.type == "meta" and mask.dtype == torch.bool and tuple(mask.shape) == (3, 2)


def test_sparse_input_is_a_clear_type_error_that_does_not_advance_a_generator():
    gen = xdrop.Generator(3)
    with pytest.raises(TypeError, match=r"x must be a dense \(strided\) tensor, got x.layout=torch.sparse_coo"):
        xdrop.dropout(torch.ones(4).to_sparse(), 0.5, seed=gen)
    assert gen.take_step() == 0


@pytest.mark.parametrize("layout", ["channels_last", "permuted", "sliced"])
def test_output_layout_follows_empty_like_and_mask_is_on_logical_indices(layout):
    base = _input((2, 3, 4, 5))
    x = {
        "channels_last": base.to(memory_format=torch.channels_last),
        "permuted": base.permute(3, 1, 0, 2),
        "sliced": base[:, :, ::2],
    }[layout]
    for fn, p in ((xdrop.dropout, 0.5), (xdrop.alpha_dropout, 0.2), (xdrop.dropout2d, 0.5)):
        if fn is xdrop.dropout2d and x.ndim != 4:
            continue
        out = fn(x, p, seed=12, step=3)
        assert out.stride() == torch.empty_like(x).stride()
        assert _same_bits(out.contiguous(), _numpy_twin(fn, x.contiguous(), p, seed=12, step=3))


@pytest.mark.parametrize("n", [7, 1 << 10, (1 << 17) + 5])  # the one-call small path and the threaded driver
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_gradient_through_sum_or_mean_arrives_expanded_and_gets_the_forward_mask(n, dtype, reduce):
    """``dropout(x).sum().backward()``: the gradient is a stride-0 expansion of one value."""
    x = _input((n,), dtype=dtype).requires_grad_()
    out = xdrop.dropout(x, 0.5, seed=21, step=4)
    getattr(out, reduce)().backward()
    g = torch.full((n,), 1.0 if reduce == "sum" else 1.0 / n, dtype=dtype)  # the value autograd expands
    want = _numpy_twin(xdrop.dropout, g, 0.5, seed=21, step=4)
    assert x.grad.is_contiguous() and _same_bits(x.grad, want)


def test_expanded_input_gives_a_contiguous_output_with_the_mask_on_logical_indices():
    """An input that repeats memory (stride 0): the output cannot share that layout; empty_like's is contiguous."""
    for shape in ((300,), (4, 75)):
        x = _input((1,)).expand(shape) if len(shape) == 1 else _input((1, 75)).expand(shape)
        out = xdrop.dropout(x, 0.5, seed=8)
        assert out.stride() == torch.empty_like(x).stride() and out.is_contiguous()
        assert _same_bits(out, _numpy_twin(xdrop.dropout, x.contiguous(), 0.5, seed=8))


def test_eager_fast_path_equals_the_operator():
    """The direct kernel call (no autograd, not compiling) gives the operator's bits."""
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        x = _input((130,), dtype=dtype)
        for args in ((2**31, (130,), 2.0, 0.0, 0.0), (3 << 30, (130,), 1.5, 0.25, -1.0)):
            args = (*args[:2], float(torch.tensor(args[2], dtype=dtype)), *args[3:])  # a exact in dtype
            fast = _torch_ops.dropout(x, 5, 6, *args)
            ss = torch.tensor([5, 6])
            assert _same_bits(fast, _torch_ops.OP(x, ss, args[0], list(args[1]), *args[2:], "auto"))


# -- seed=None on torch tensors: torch's generator, so checkpoint recomputes the same mask ----------------


def test_seed_none_follows_torch_manual_seed():
    x = torch.ones(256)
    torch.manual_seed(3)
    a = xdrop.dropout(x, 0.5)
    torch.manual_seed(3)
    b = xdrop.dropout(x, 0.5)
    c = xdrop.dropout(x, 0.5)  # the generator moved on: another seed
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("reentrant", [True, False])
@pytest.mark.parametrize("variant", ["dropout", "dropout1d", "alpha_dropout"])
def test_checkpoint_recomputes_the_forward_mask_for_seed_none(reentrant, variant):
    from torch.utils.checkpoint import checkpoint

    fn = getattr(xdrop, variant)
    x = torch.randn(4, 8, 16, dtype=torch.float64, requires_grad=True)
    out = checkpoint(lambda t: fn(t * 1.0, 0.5), x, use_reentrant=reentrant)
    out.backward(torch.ones_like(out))
    if variant == "alpha_dropout":  # kept: a * x + b, gradient a; dropped: the constant c, gradient 0
        kept = x.grad != 0
        c = out[~kept].flatten()[0]
        # the recomputed mask is the forward's: exactly the dropped elements hold c (x is random float64)
        assert torch.equal(~kept, out == c) and 0 < int(kept.sum()) < kept.numel()
    else:
        assert torch.equal(x.grad != 0, out != 0)  # the recomputed mask is the forward's


# -- a Generator under torch.utils.checkpoint replays the step its forward took -------------------------


def _checkpointed_generator_grads(gen, reentrant, x, **kw):
    """x's gradient through a checkpointed region with two Generator calls (dropout, then alpha_dropout)."""
    from torch.utils.checkpoint import checkpoint

    def region(t):
        return xdrop.alpha_dropout(torch.tanh(xdrop.dropout(t * 1.0, 0.5, seed=gen)), 0.25, seed=gen)

    out = checkpoint(region, x, use_reentrant=reentrant, **kw)
    out.backward(torch.ones_like(out))
    return out


@pytest.mark.parametrize("reentrant", [True, False])
def test_checkpoint_replays_the_steps_a_generator_took(reentrant):
    gen = xdrop.Generator(11, step=5)
    data = torch.Generator().manual_seed(0)
    x = torch.randn(6, 40, dtype=torch.float64, generator=data).requires_grad_()
    out = _checkpointed_generator_grads(gen, reentrant, x)
    assert gen.step == 7  # one step per call: the recomputation took none

    # The gradient the forward's masks give, from explicit caches at the steps 5 and 6 (nothing under test
    # is checkpointed here): d/dt alpha_dropout(tanh(dropout(t))) = alpha_grad * (1 - tanh^2) * dropout_grad.
    t = x.detach()
    mid, cache1 = xdrop.dropout_forward(t, 0.5, seed=11, step=5)
    expected_out, cache2 = xdrop.alpha_dropout_forward(torch.tanh(mid), 0.25, seed=11, step=6)
    g = xdrop.dropout_backward(torch.ones_like(t), cache2) * (1 - torch.tanh(mid) ** 2)
    expected = xdrop.dropout_backward(g, cache1)
    assert torch.equal(out.detach(), expected_out)
    # equal up to rounding: autograd evaluates tanh's derivative in its own order
    assert torch.allclose(x.grad, expected, rtol=1e-12, atol=1e-15)
    # and exactly the forward's keep decisions: zero gradient where either mask dropped
    keep = xdrop.keep_mask(t.shape, 0.5, seed=11, step=5, xp=torch)
    keep &= xdrop.keep_mask(t.shape, 0.25, seed=11, step=6, xp=torch)
    assert torch.equal(x.grad != 0, keep)


@pytest.mark.parametrize("reentrant", [True, False])
def test_generator_keeps_its_replay_across_calls_and_copies(reentrant):
    """Calls outside the checkpoint, before and between, and copies of the Generator leave the replay right."""
    import copy
    import pickle

    gen = xdrop.Generator(3)
    x = torch.randn(4, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).requires_grad_()
    with torch.no_grad():  # a no-grad call records a token too: no confusion with the checkpointed one
        xdrop.dropout(torch.ones(8), 0.5, seed=gen)
    xdrop.dropout(x, 0.5, seed=gen).sum().backward()  # a plain call with autograd
    x.grad = None
    _checkpointed_generator_grads(gen, reentrant, x)
    keep = xdrop.keep_mask(x.shape, 0.5, seed=3, step=2, xp=torch)
    keep &= xdrop.keep_mask(x.shape, 0.25, seed=3, step=3, xp=torch)
    assert torch.equal(x.grad != 0, keep) and gen.step == 4
    for twin in (copy.deepcopy(gen), pickle.loads(pickle.dumps(gen))):
        assert (twin.seed, twin.step) == (3, 4)


def test_generator_checkpoint_without_preserved_rng_state_raises_where_it_cannot_tell_the_calls_apart():
    """Two calls in the region, no RNG state: an error naming the Generator (one call replays: test_torch_recompute)."""
    from torch.utils.checkpoint import checkpoint

    gen = xdrop.Generator(5)
    x = torch.randn(4, 6, requires_grad=True)
    region = lambda t: torch.tanh(xdrop.dropout(xdrop.dropout(t, 0.5, seed=gen), 0.5, seed=gen))  # noqa: E731
    y = checkpoint(region, x, use_reentrant=False, preserve_rng_state=False)
    torch.rand(1)  # moves torch's RNG on: the recomputation cannot find the call
    with pytest.raises(RuntimeError, match=r"Generator\(seed=5, step=2\) is being recomputed.*preserve_rng_state=True"):
        y.sum().backward()
    assert gen.step == 2


def test_plain_generator_calls_draw_nothing_from_torch_rng():
    """Outside a checkpoint (grad mode on, no saved-tensor hooks) a Generator leaves torch's generator alone."""
    gen = xdrop.Generator(1)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    xdrop.dropout(torch.ones(8, requires_grad=True), 0.5, seed=gen)
    xdrop.dropout(torch.ones(8), 0.5, seed=gen)
    assert torch.equal(torch.rand(3), expected) and gen.step == 2


ENTRIES = {  # each public way a Generator reaches resolve_seed on a torch tensor: (call, the mask it applies)
    "dropout": lambda t, gen: xdrop.dropout(t, 0.5, seed=gen),
    "dropout_forward": lambda t, gen: xdrop.dropout_forward(t, 0.5, seed=gen)[0],
    "dropout2d": lambda t, gen: xdrop.dropout2d(t.reshape(2, 3, 4, 4), 0.5, seed=gen).reshape(t.shape),
    "keep_mask": lambda t, gen: t * xdrop.keep_mask(tuple(t.shape), 0.5, seed=gen, xp=torch),
}


@pytest.mark.parametrize("reentrant", [True, False])
@pytest.mark.parametrize("entry", sorted(ENTRIES))
def test_every_entry_replays_a_generator_step_under_checkpoint(entry, reentrant):
    from torch.utils.checkpoint import checkpoint

    gen, fn = xdrop.Generator(21, step=9), ENTRIES[entry]
    x = torch.randn(96, dtype=torch.float64, generator=torch.Generator().manual_seed(2)).requires_grad_()
    # tanh after the call saves a tensor, so a non-reentrant checkpoint recomputes up to and through the call
    out = checkpoint(lambda t: torch.tanh(fn(t * 1.0, gen)), x, use_reentrant=reentrant)
    out.backward(torch.ones_like(out))
    assert gen.step == 10
    plain = fn(x.detach(), xdrop.Generator(21, step=9))  # the forward of step 9, not checkpointed
    assert torch.equal(out.detach(), torch.tanh(plain))
    assert torch.equal(x.grad != 0, plain != 0)  # the recomputation used step 9's mask too
