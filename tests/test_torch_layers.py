"""xdrop.torch: the layers as drop-in replacements for torch.nn's (and timm's DropPath)."""

import doctest
import shutil

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


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: torch's intra-op threads only contend on a shared 2-core host (7x slower here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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


def test_seed_none_draws_os_entropy_once_and_saves_it():
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


def test_checkpoint_of_a_layer_called_twice_raises():
    drop = xt.Dropout(0.5, seed=1)
    x = randn(4, 6).requires_grad_()
    y = checkpoint(lambda t: torch.tanh(drop(torch.tanh(drop(t)))), x, use_reentrant=False)
    with pytest.raises(RuntimeError, match="called 2 times in training mode since the last backward"):
        y.sum().backward()


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")  # inductor import
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
    with pytest.raises(ValueError, match=r"dropout2d expects x with 3 dims \(C, H, W\) or 4 dims"):
        layer(torch.ones(2, 3))
    assert layer.step.item() == 0
    with pytest.raises(TypeError, match="x must have a real floating dtype"):
        layer(torch.ones(2, 3, 4, dtype=torch.int64))
    assert layer.step.item() == 0


def test_layers_give_the_same_bits_as_numpy():
    """The point of xdrop: a torch layer's mask equals the NumPy function's."""
    layer = xt.Dropout3d(0.5, seed=99)
    x = randn(2, 3, 1, 2, 2, dtype=torch.float64)
    assert np.array_equal(layer(x).numpy(), xdrop.dropout3d(x.numpy(), 0.5, seed=99, step=0))
