"""xdrop.torch: the layers as drop-in replacements for torch.nn's (and timm's DropPath)."""

import copy
import doctest
import pickle
import shutil
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="xdrop.torch needs torch")
from torch.utils.checkpoint import checkpoint  # noqa: E402

import xdrop  # noqa: E402
import xdrop.torch as xt  # noqa: E402

# layer class -> (functional forward, input shape)
LAYERS = {
    xt.Dropout: (xdrop.dropout_forward, (4, 6)),
    xt.Dropout1d: (xdrop.dropout1d_forward, (3, 4, 5)),
    xt.Dropout2d: (xdrop.dropout2d_forward, (3, 4, 2, 2)),
    xt.Dropout3d: (xdrop.dropout3d_forward, (2, 4, 2, 1, 2)),
    xt.AlphaDropout: (xdrop.alpha_dropout_forward, (4, 6)),
    xt.FeatureAlphaDropout: (xdrop.feature_alpha_dropout_forward, (3, 4, 5)),
    xt.DropPath: (xdrop.drop_path_forward, (8, 3)),
}
IDS = [cls.__name__ for cls in LAYERS]


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def randn(*shape, seed=0, dtype=torch.float32, device="cpu"):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype).to(device)


@pytest.mark.parametrize("cls", LAYERS, ids=IDS)
def test_training_forward_is_the_functional_at_successive_steps(torch_backend, cls):
    forward, shape = LAYERS[cls]
    layer = cls(0.4, seed=2**63 + 9)
    x = randn(*shape, device=torch_backend.device)
    for step in range(3):
        expected, _ = forward(x, 0.4, seed=2**63 + 9, step=step)
        assert torch.equal(layer(x), expected)
    assert layer.step.item() == 3 and layer.step.dtype == torch.int64


@pytest.mark.parametrize("cls", LAYERS, ids=IDS)
def test_eval_is_identity_and_does_not_advance(cls):
    layer = cls(0.5, seed=1).eval()
    x = randn(*LAYERS[cls][1])
    assert layer(x) is x and layer.step.item() == 0
    layer.train()
    assert not torch.equal(layer(x), x) and layer.step.item() == 1


@pytest.mark.parametrize("cls", LAYERS, ids=IDS)
def test_p_zero_and_p_one(cls):
    x = randn(*LAYERS[cls][1])
    assert torch.equal(cls(0.0, seed=1)(x), x)
    assert not cls(1.0, seed=1)(x).any()


def test_seed_none_draws_once_and_saves_it():
    a, b = xt.Dropout(0.5), xt.Dropout(0.5)
    assert a.seed.item() != b.seed.item()
    assert set(a.state_dict()) == {"seed", "step"}
    x = torch.ones(64)
    first = a(x)
    c = xt.Dropout(0.5)
    c.load_state_dict({"seed": a.seed.clone(), "step": torch.tensor(0)})
    assert torch.equal(c(x), first)


@pytest.mark.parametrize("cls", LAYERS, ids=IDS)
def test_state_dict_round_trip_resumes_the_same_masks(cls):
    """A run resumed from a checkpoint draws what the uninterrupted run draws."""
    x = randn(*LAYERS[cls][1])
    run = cls(0.5, seed=2**64 - 1)  # stored as int64 -1: the full u64 range survives
    for _ in range(3):
        run(x)
    saved = {k: v.clone() for k, v in run.state_dict().items()}
    uninterrupted = [run(x) for _ in range(2)]
    resumed = cls(0.5, seed=123)
    resumed.load_state_dict(saved)
    assert saved["seed"].item() == -1 and saved["step"].item() == 3
    for expected in uninterrupted:
        assert torch.equal(resumed(x), expected)


def test_writing_the_step_buffer_is_honoured():
    layer = xt.Dropout(0.5, seed=4)
    layer.step.fill_(10)
    expected, _ = xdrop.dropout_forward(torch.ones(32), 0.5, seed=4, step=10)
    assert torch.equal(layer(torch.ones(32)), expected) and layer.step.item() == 11


def test_extra_repr_is_readable():
    assert repr(xt.Dropout(0.25, seed=3)) == "Dropout(p=0.25, inplace=False, seed=3, step=0)"
    assert repr(xt.Dropout2d(0.1, True, seed=5)) == "Dropout2d(p=0.1, inplace=True, seed=5, step=0)"
    assert repr(xt.DropPath(0.2, scale_by_keep=False, seed=2**64 - 1)) == (
        f"DropPath(drop_prob=0.2, scale_by_keep=False, seed={2**64 - 1}, step=0)"
    )


# -- autograd ------------------------------------------------------------------------------------


def saved_tensor_sizes(fn):
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sizes


@pytest.mark.parametrize("cls", LAYERS, ids=IDS)
def test_autograd_saves_no_mask(cls):
    x = randn(*LAYERS[cls][1]).requires_grad_()
    assert saved_tensor_sizes(lambda: cls(0.5, seed=1)(x)) == []
    # the hook does see what torch's own dropout saves (a mask as large as x)
    assert max(saved_tensor_sizes(lambda: torch.nn.Dropout(0.5)(x))) == x.numel()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cls", LAYERS, ids=IDS)
def test_gradient_is_dropout_backward(torch_backend, cls, dtype):
    forward, shape = LAYERS[cls]
    x = randn(*shape, dtype=dtype, device=torch_backend.device).requires_grad_()
    dout = randn(*shape, seed=1, dtype=dtype, device=torch_backend.device)
    cls(0.3, seed=5)(x).backward(dout)
    _, cache = forward(x.detach(), 0.3, seed=5, step=0)
    assert torch.equal(x.grad, xdrop.dropout_backward(dout, cache))


def test_double_backward_applies_the_mask_again():
    """The backward dout -> dout * mask * a is itself differentiable: its derivative in dout is the same map."""
    x = randn(5, 7, dtype=torch.float64).requires_grad_()
    v = randn(5, 7, seed=3, dtype=torch.float64).requires_grad_()
    (vjp,) = torch.autograd.grad(xt.AlphaDropout(0.4, seed=2)(x), x, v, create_graph=True)
    (again,) = torch.autograd.grad(vjp.sum(), v)
    _, cache = xdrop.alpha_dropout_forward(x.detach(), 0.4, seed=2, step=0)
    assert torch.equal(again, xdrop.dropout_backward(torch.ones(5, 7, dtype=torch.float64), cache))
    assert torch.equal(vjp, xdrop.dropout_backward(v.detach(), cache))


@pytest.mark.parametrize("cls", [xt.Dropout, xt.Dropout2d, xt.AlphaDropout], ids=lambda c: c.__name__)
def test_inplace_writes_into_the_input(cls):
    shape = LAYERS[cls][1]
    base = randn(*shape).requires_grad_()
    h = base * 1.0
    out = cls(0.5, inplace=True, seed=3)(h)
    assert out is h
    expected = cls(0.5, seed=3)(base * 1.0)
    assert torch.equal(out, expected)
    out.sum().backward()
    reference = base.detach().clone().requires_grad_()
    cls(0.5, seed=3)(reference).sum().backward()
    assert torch.equal(base.grad, reference.grad)


# -- checkpoint and compile ------------------------------------------------------------------------


class Block(torch.nn.Module):
    def __init__(self, drop):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.inner = torch.nn.Linear(6, 6)
        self.outer = torch.nn.Linear(6, 6)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen))
        self.drop = drop

    def forward(self, x):
        return self.outer(torch.tanh(self.drop(self.inner(x))))  # outer saves the dropout's output


@pytest.mark.parametrize("use_reentrant", [False, True])
@pytest.mark.parametrize("cls", [xt.Dropout, xt.AlphaDropout, xt.DropPath], ids=lambda c: c.__name__)
def test_checkpoint_recompute_uses_the_same_mask(cls, use_reentrant):
    def grads(checkpointed):
        block = Block(cls(0.5, seed=7))
        x = randn(8, 6, seed=1).requires_grad_()
        out = []
        for _ in range(3):  # the step advances once per logical forward
            y = checkpoint(block, x, use_reentrant=use_reentrant) if checkpointed else block(x)
            y.square().sum().backward()
            out.append(torch.cat([block.inner.weight.grad.flatten(), x.grad.flatten()]).clone())
            block.zero_grad()
            x.grad = None
        assert block.drop.step.item() == 3
        return out

    plain, checkpointed = grads(False), grads(True)
    assert not torch.equal(plain[0], plain[1])  # the steps did draw different masks
    for a, b in zip(plain, checkpointed, strict=True):
        assert torch.equal(a, b)


def test_checkpoint_replays_each_call_of_a_layer_used_twice():
    def region(t, drop):
        return torch.tanh(drop(torch.tanh(drop(t))))

    x = randn(4, 6).requires_grad_()
    (plain,) = torch.autograd.grad(region(x, xt.Dropout(0.5, seed=1)).sum(), x)
    for use_reentrant in (False, True):
        drop, x.grad = xt.Dropout(0.5, seed=1), None
        checkpoint(region, x, drop, use_reentrant=use_reentrant).sum().backward()  # reentrant: no .grad()
        assert torch.equal(x.grad, plain) and drop.step.item() == 2


def backward_grad(y, x, retain_graph=False):
    x.grad = None
    y.sum().backward(retain_graph=retain_graph)  # reentrant checkpoint refuses torch.autograd.grad
    return x.grad


def checkpointed_grad(drop, x, use_reentrant, retain_graph=False):
    y = checkpoint(lambda t: torch.tanh(drop(torch.tanh(t))), x, use_reentrant=use_reentrant)
    return y, backward_grad(y, x, retain_graph)


def plain_grad(seed, step, x):
    t = x.detach().requires_grad_()
    out = torch.tanh(xdrop.dropout(torch.tanh(t), 0.5, seed=seed, step=step))
    return torch.autograd.grad(out.sum(), t)[0]


@pytest.mark.parametrize("use_reentrant", [False, True])
@pytest.mark.parametrize("before", ["plain_forward_backward", "no_grad_forward"])
def test_checkpoint_after_other_training_calls_replays_the_right_step(before, use_reentrant):
    """No false 'called 2 times' error: earlier calls outside the checkpoint do not confuse the replay."""
    drop, x = xt.Dropout(0.5, seed=3), randn(4, 6).requires_grad_()
    if before == "no_grad_forward":
        with torch.no_grad():
            drop(x)
    else:
        drop(x).sum().backward()
    _, grad = checkpointed_grad(drop, x, use_reentrant)
    assert torch.equal(grad, plain_grad(3, 1, x)) and drop.step.item() == 2


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_second_backward_of_an_earlier_checkpointed_call_replays_its_step(use_reentrant):
    drop, x = xt.Dropout(0.5, seed=5), randn(4, 6).requires_grad_()
    first, grad0 = checkpointed_grad(drop, x, use_reentrant, retain_graph=True)
    checkpointed_grad(drop, x, use_reentrant)  # a later call at step 1
    again = backward_grad(first, x)  # recomputes the call of step 0
    assert torch.equal(grad0, plain_grad(5, 0, x)) and torch.equal(again, grad0)


def test_checkpoint_without_preserved_rng_state_replays_the_one_call():
    """(More in test_torch_recompute.py.)"""
    drop, x = xt.Dropout(0.5, seed=5), randn(4, 6).requires_grad_()
    y = checkpoint(lambda t: torch.tanh(drop(t)), x, use_reentrant=False, preserve_rng_state=False)
    torch.rand(1)  # moves torch's RNG on: the token cannot find the call, the record of the forward does
    assert torch.equal(backward_grad(y, x), torch.autograd.grad(torch.tanh(xdrop.dropout(x, 0.5, seed=5)).sum(), x)[0])


def test_graph_task_id_that_replay_detection_uses_exists():
    """Pins the private torch._C._current_graph_task_id (torch.utils.checkpoint uses it too)."""
    seen = []
    x = torch.ones(2, requires_grad=True)
    x.register_hook(lambda g: seen.append(torch._C._current_graph_task_id()))
    assert torch._C._current_graph_task_id() == -1
    (x * 2).sum().backward()
    assert seen[0] != -1


# -- state: the buffers are the source of truth ---------------------------------------------------


@pytest.mark.parametrize(
    "write",
    [
        lambda b: b.data.fill_(10),
        lambda b: b.numpy().__setitem__((), 10),
        lambda b: b.copy_(torch.tensor(10)),
        lambda b: setattr(b, "data", torch.tensor(10)),
        lambda b: b.share_memory_().fill_(10),  # moves the storage: the layer's views of it are made again
    ],
    ids=["data", "numpy", "copy_", "data_assign", "share_memory"],
)
def test_any_write_to_the_step_buffer_is_honoured(write):
    layer = xt.Dropout(0.5, seed=4)
    layer(torch.ones(32))  # step 1 read and written
    write(layer.step)
    expected, _ = xdrop.dropout_forward(torch.ones(32), 0.5, seed=4, step=10)
    assert torch.equal(layer(torch.ones(32)), expected) and layer.step.item() == 11


def test_a_broadcast_like_overwrite_of_the_seed_is_honoured():
    """What DDP's buffer broadcast does: copy_ into the buffer, version counter or not."""
    layer = xt.Dropout(0.5, seed=4)
    layer(torch.ones(32))
    with torch.no_grad():
        layer.seed.numpy()[()] = 99  # bypasses torch's version counter, like a collective's raw write
    expected, _ = xdrop.dropout_forward(torch.ones(32), 0.5, seed=99, step=1)
    assert torch.equal(layer(torch.ones(32)), expected)


def test_threads_sharing_a_layer_never_share_a_step():
    layer, x = xt.Dropout(0.5, seed=8), torch.ones(256)
    outs = []

    def work():
        for _ in range(25):
            outs.append(layer(x))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert layer.step.item() == 200
    expected = {xdrop.dropout(x, 0.5, seed=8, step=s).numpy().tobytes() for s in range(200)}
    assert {o.numpy().tobytes() for o in outs} == expected  # 200 distinct masks, each step once


@pytest.mark.parametrize("seed", [None, 2**64 - 3])
def test_meta_construction_then_to_empty_gives_the_constructed_state(seed):
    torch.manual_seed(0)
    with torch.device("meta"):
        model = torch.nn.Sequential(torch.nn.Linear(4, 4), xt.Dropout(0.5, seed=seed))
    assert "step=?" in repr(model[1])
    assert model[1](torch.empty(3, 4, device="meta")).is_meta  # shape inference draws nothing
    model.to_empty(device="cpu")
    torch.manual_seed(0)
    reference = xt.Dropout(0.5, seed=seed)
    assert model[1].seed.item() == reference.seed.item() and model[1].step.item() == 0
    x = torch.ones(16)
    assert torch.equal(model[1](x), reference(x))


def test_deepcopy_and_pickle_keep_the_state():
    layer = xt.Dropout(0.5, seed=6)
    layer(torch.ones(4))
    for twin in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
        assert torch.equal(twin(torch.ones(64)), xdrop.dropout(torch.ones(64), 0.5, seed=6, step=1))
        assert twin.step.item() == 2 and layer.step.item() == 1  # each advances its own buffers only
    assert torch.equal(layer(torch.ones(64)), xdrop.dropout(torch.ones(64), 0.5, seed=6, step=1))


@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:`torch.jit.trace_method` is deprecated:DeprecationWarning")
def test_jit_trace_of_a_training_layer_raises_and_of_eval_works():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), xt.Dropout(0.5, seed=1))
    with pytest.raises(RuntimeError, match=r"torch\.jit\.trace of a training-mode xdrop\.torch\.Dropout would freeze"):
        torch.jit.trace(model, torch.ones(2, 3))
    assert model[1].step.item() == 0
    traced = torch.jit.trace(model.eval(), torch.ones(2, 3))
    assert torch.equal(traced(torch.ones(2, 3)), model(torch.ones(2, 3)))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")  # forward_ad's import
@pytest.mark.parametrize("cls", LAYERS, ids=IDS)
def test_forward_mode_ad_keeps_the_tangent(cls):
    import torch.autograd.forward_ad as fwad

    forward, shape = LAYERS[cls]
    x, t = randn(*shape, dtype=torch.float64), randn(*shape, seed=1, dtype=torch.float64)
    with fwad.dual_level():
        out = cls(0.5, seed=2)(fwad.make_dual(x, t))
        tangent = fwad.unpack_dual(out).tangent
    _, cache = forward(x, 0.5, seed=2, step=0)
    assert torch.equal(tangent, xdrop.dropout_backward(t, cache))


# -- drop-in behaviour: layout, ranks, seeds, checkpoints ------------------------------------------


@pytest.mark.parametrize("cls", LAYERS, ids=IDS)
@pytest.mark.parametrize("layout", ["channels_last", "permuted"])
def test_output_keeps_the_input_layout_and_the_logical_mask(cls, layout):
    x = randn(2, 3, 4, 5)
    if cls is xt.Dropout1d:
        x = x[0]
    if cls is xt.Dropout3d:
        x = x[None]
    if layout == "channels_last" and x.ndim == 4:
        y = x.contiguous(memory_format=torch.channels_last)
    else:
        perm = list(range(x.ndim))[::-1]
        y = x.permute(perm).contiguous().permute(perm)  # fully reversed strides
    assert torch.equal(y, x) and y.stride() != x.stride()
    y.requires_grad_()
    out = cls(0.5, seed=3)(y)
    assert out.stride() == y.stride() == torch.empty_like(y).stride()
    assert torch.equal(out, cls(0.5, seed=3)(x))  # values on logical indices: the bits do not change
    out.backward(torch.ones_like(x))
    assert y.grad.stride() == y.stride()


def test_dropout2d_reads_3d_input_as_n_c_l_with_torch_warning():
    x = torch.ones(4, 3, 5)
    with pytest.warns(UserWarning, match="assuming that channel-wise 1D dropout behavior is desired") as rec:
        out = xt.Dropout2d(0.5, seed=2)(x)
    assert rec[0].filename == __file__
    assert torch.equal(out, xt.Dropout1d(0.5, seed=2)(x))


@pytest.mark.parametrize(
    "cls, shape, match",
    [
        (xt.Dropout2d, (1, 2, 2, 2, 2), "Received a 5-D input to dropout2d"),
        (xt.Dropout2d, (3, 2), "Received a 2-D input to dropout2d"),
        (xt.Dropout3d, (1, 2, 2), "Received a 3-D input to dropout3d"),
        (xt.Dropout3d, (1, 2, 2, 2, 2, 2), "Received a 6-D input to dropout3d"),
    ],
)
def test_deprecated_ranks_warn_as_torch(cls, shape, match):
    with pytest.warns(UserWarning, match=match):
        cls(0.5, seed=1)(torch.ones(shape))


@pytest.mark.parametrize(
    "cls, shape, match",
    [
        (xt.Dropout1d, (1, 2, 2, 2), "Expected 2D or 3D input, but received a 4D input"),
        (xt.Dropout1d, (2,), "Expected 2D or 3D input, but received a 1D input"),
        (xt.FeatureAlphaDropout, (4,), "at least 2 dims"),
    ],
)
def test_rank_errors_are_runtime_and_value_errors_and_do_not_advance(cls, shape, match):
    layer = cls(0.5, seed=1)
    for kind in (RuntimeError, ValueError):
        with pytest.raises(kind, match=match):
            layer(torch.ones(shape))
    assert layer.step.item() == 0


def test_default_seed_comes_from_torch_manual_seed_and_differs_per_layer():
    torch.manual_seed(123)
    first = [xt.Dropout(0.5).seed.item() for _ in range(3)]
    torch.manual_seed(123)
    again = [xt.Dropout(0.5).seed.item() for _ in range(3)]
    assert first == again and len(set(first)) == 3


def test_same_explicit_seed_means_same_masks():
    a, b = xt.Dropout(0.5, seed=9), xt.Dropout(0.5, seed=9)
    assert torch.equal(a(torch.ones(64)), b(torch.ones(64)))


def mlp(drop_cls, **kw):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), drop_cls(0.5, **kw), torch.nn.Linear(8, 2))


def test_torch_dropout_checkpoint_loads_strictly_and_keeps_seed_and_step():
    ours = mlp(xt.Dropout, seed=11)
    ours(torch.ones(2, 4))
    result = ours.load_state_dict(mlp(torch.nn.Dropout).state_dict())  # no '1.seed' / '1.step'
    assert not result.missing_keys and not result.unexpected_keys
    assert ours[1].seed.item() == 11 and ours[1].step.item() == 1
    partial = {k: v for k, v in ours.state_dict().items() if k != "1.step"}
    with pytest.raises(RuntimeError, match=r"Missing key\(s\) in state_dict: \"1.step\""):
        ours.load_state_dict(partial)  # only one of the two: a damaged checkpoint, not a torch one


def test_xdrop_checkpoint_loads_into_torch_dropout_model_via_plain_state_dict():
    ours, theirs = mlp(xt.Dropout, seed=11), mlp(torch.nn.Dropout)
    with torch.no_grad():
        ours[0].weight.add_(1.0)
    with pytest.raises(RuntimeError, match="Unexpected key"):
        theirs.load_state_dict(ours.state_dict())
    theirs.load_state_dict(xt.plain_state_dict(ours))
    assert torch.equal(theirs[0].weight, ours[0].weight)


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")  # inductor import
@pytest.mark.filterwarnings("ignore:Dynamo detected a call to a `functools.lru_cache`:UserWarning")  # scale cache
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf:UserWarning")  # dynamo internal
def test_compiled_module_matches_eager():
    if not any(shutil.which(cc) for cc in ("c++", "g++", "clang++")):
        pytest.skip("torch.compile on CPU needs a C++ compiler and none is on PATH")
    eager, compiled_block = Block(xt.Dropout(0.5, seed=3)), Block(xt.Dropout(0.5, seed=3))
    compiled = torch.compile(compiled_block)
    x = randn(8, 6, seed=2).requires_grad_()
    for _ in range(2):
        out, expected = compiled(x), eager(x)
        assert torch.equal(out, expected)
        grads = [torch.autograd.grad(y.square().sum(), x)[0] for y in (out, expected)]
        torch.testing.assert_close(*grads, rtol=1e-5, atol=1e-6)  # inductor's fused Linear/tanh round differently
    assert compiled_block.drop.step.item() == 2


# -- drop-in training ------------------------------------------------------------------------------


def train(dropout_factory, steps=100):
    """BCE of a 10-32-32-1 MLP with dropout after each hidden layer on 256 linearly
    separable points; full-batch Adam. Returns the final eval-mode loss."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 10, generator=gen)
    y = (x @ torch.randn(10, generator=gen) > 0).float()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Linear(10, 32),
            torch.nn.ReLU(),
            dropout_factory(),
            torch.nn.Linear(32, 32),
            torch.nn.ReLU(),
            dropout_factory(),
            torch.nn.Linear(32, 1),
        )
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        for _ in range(steps):
            opt.zero_grad()
            loss_fn(model(x).squeeze(1), y).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        return loss_fn(model(x).squeeze(1), y).item()


def test_swapping_torch_dropout_for_xdrop_trains():
    """Chance level is ln 2 = 0.693 (balanced labels); below 0.1 the rule has been learned.

    torch.nn.Dropout on the same problem, same initialisation, is the yardstick.
    """
    ours = train(lambda: xt.Dropout(0.2, seed=0))
    theirs = train(lambda: torch.nn.Dropout(0.2))
    assert ours < 0.1 and theirs < 0.1, (ours, theirs)


# -- documentation and bad input -------------------------------------------------------------------


def test_docstring_examples_run():
    result = doctest.testmod(xt, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: xt.Dropout(1.5), ValueError, r"p must be a probability in \[0, 1\], got p=1.5"),
        (lambda: xt.Dropout(0.5, inplace="yes"), TypeError, "inplace must be a bool, got inplace='yes'"),
        (lambda: xt.Dropout(0.5, seed=-1), ValueError, r"seed must be an integer in \[0, 2\*\*64\), got seed=-1"),
        (lambda: xt.DropPath(-0.1), ValueError, "got drop_prob=-0.1"),
        (lambda: xt.DropPath(0.1, scale_by_keep=None), TypeError, "scale_by_keep must be a bool"),
    ],
)
def test_bad_constructor_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_wrong_rank_raises_and_does_not_advance():
    layer = xt.Dropout2d(0.5, seed=1)
    with pytest.raises(ValueError, match=r"dropout2d expects x .*got x.ndim=1"):
        layer(torch.ones(3))
    assert layer.step.item() == 0
    with pytest.raises(TypeError, match="x must have a real floating dtype"):
        layer(torch.ones(2, 3, 4, 4, dtype=torch.int64))
    assert layer.step.item() == 0


def test_layers_give_the_same_bits_as_numpy():
    """The point of xdrop: a torch layer's mask equals the NumPy function's."""
    layer = xt.Dropout3d(0.5, seed=99)
    x = randn(2, 3, 1, 2, 2, dtype=torch.float64)
    assert np.array_equal(layer(x).numpy(), xdrop.dropout3d(x.numpy(), 0.5, seed=99, step=0))


# -- replace_dropout -------------------------------------------------------------------------------

TORCH_DROPOUTS = [
    (torch.nn.Dropout, xt.Dropout, (4, 6)),
    (torch.nn.Dropout1d, xt.Dropout1d, (3, 4, 5)),
    (torch.nn.Dropout2d, xt.Dropout2d, (3, 4, 2, 2)),
    (torch.nn.Dropout3d, xt.Dropout3d, (2, 4, 2, 1, 2)),
    (torch.nn.AlphaDropout, xt.AlphaDropout, (4, 6)),
    (torch.nn.FeatureAlphaDropout, xt.FeatureAlphaDropout, (3, 4, 5)),
]


def test_replace_dropout_converts_every_kind_in_place_with_own_streams():
    class Custom(torch.nn.Dropout):  # a subclass may have its own forward: left alone
        pass

    shared = torch.nn.Dropout(0.3)
    model = torch.nn.Sequential(
        *[theirs(0.1 * (i + 1), inplace=i % 2 == 0) for i, (theirs, _, _) in enumerate(TORCH_DROPOUTS)],
        torch.nn.ModuleList([shared, shared]),
        Custom(0.5),
    )
    model[1].eval()
    assert xt.replace_dropout(model, seed=5) is model
    for i, (_, ours, _) in enumerate(TORCH_DROPOUTS):
        assert type(model[i]) is ours and model[i].p == 0.1 * (i + 1) and model[i].inplace == (i % 2 == 0)
        assert model[i].training == (i != 1) and model[i].step.item() == 0
    assert model[6][0] is model[6][1] and type(model[6][0]) is xt.Dropout
    assert type(model[7]) is Custom
    seeds = [m.seed.item() for m in model.modules() if isinstance(m, xt._SeededDropout)]
    assert len(seeds) == len(set(seeds)) == 7
    again = xt.replace_dropout(torch.nn.Sequential(*[t(0.5) for t, _, _ in TORCH_DROPOUTS]), seed=5)
    assert [m.seed.item() for m in again] == seeds[:6]  # a hash of (seed, path): the same every run
    assert type(xt.replace_dropout(torch.nn.Dropout(0.2), seed=1)) is xt.Dropout
    with pytest.raises(TypeError, match=r"module must be a torch\.nn\.Module"):
        xt.replace_dropout("model")


def tiny_hf_models():
    tf = pytest.importorskip("transformers", reason="the conversion tests on BERT and GPT-2 need transformers")
    bert = tf.BertConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=16,
        attention_probs_dropout_prob=0.0,  # functional dropout: out of scope
    )
    gpt2 = tf.GPT2Config(vocab_size=50, n_embd=32, n_layer=2, n_head=2, n_positions=16, attn_pdrop=0.0)
    return {"bert": lambda: tf.BertModel(bert), "gpt2": lambda: tf.GPT2Model(gpt2)}


def hf_output(model, ids):
    return model(input_ids=ids).last_hidden_state


@pytest.mark.parametrize("name", ["bert", "gpt2"])
def test_replace_dropout_on_transformers_models(name):
    build = tiny_hf_models()[name]
    ids = torch.randint(0, 50, (2, 8), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    original = build().eval()
    torch.manual_seed(0)
    converted = xt.replace_dropout(build(), seed=42)
    assert not any(type(m) in xt._REPLACEMENTS for m in converted.modules())
    n_layers = sum(isinstance(m, xt._SeededDropout) for m in converted.modules())
    assert n_layers >= 5
    # train mode: forward + backward run, and each layer's step advanced once
    converted.train()
    hf_output(converted, ids).square().mean().backward()
    assert converted.get_input_embeddings().weight.grad.abs().sum() > 0
    # (attention-probability dropout modules have p = 0 here and are only read for .p by HF's attention)
    assert {m.step.item() for m in converted.modules() if isinstance(m, xt._SeededDropout) and m.p > 0} == {1}
    # eval: exactly the original model
    converted.eval()
    with torch.no_grad():
        assert torch.equal(hf_output(converted, ids), hf_output(original, ids))
    # resume: state_dict reproduces the masks of the uninterrupted run
    converted.train()
    saved = copy.deepcopy(converted.state_dict())
    uninterrupted = [hf_output(converted, ids).detach() for _ in range(2)]
    resumed = xt.replace_dropout(build(), seed=7)
    resumed.load_state_dict(saved)
    resumed.train()
    for expected in uninterrupted:
        assert torch.equal(hf_output(resumed, ids).detach(), expected)
    # a checkpoint saved before conversion loads strictly: weights taken, seeds kept, step as it was
    before = xt.replace_dropout(build(), seed=42)
    result = before.load_state_dict(original.state_dict())
    assert not result.missing_keys and not result.unexpected_keys
    with torch.no_grad():
        assert torch.equal(hf_output(before.eval(), ids), hf_output(original, ids))
    # and the other way, to a torch.nn model
    back = build()
    back.load_state_dict(xt.plain_state_dict(converted))
