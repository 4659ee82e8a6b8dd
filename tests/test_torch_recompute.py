"""Recomputation without torch's RNG state, and calls made during backward that are not recomputations.

A checkpointed region is run again during backward. With
``preserve_rng_state=False`` (what large training frameworks choose, since
saving RNG state costs time) torch's generator is not restored, so the mask has
to be found from what the stream itself recorded: the gradients must equal the
run without checkpointing, bit for bit. A dropout called from a gradient hook
or an ``autograd.Function.backward`` is no recomputation: it takes the next step.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="the replay runs on torch tensors")
from tiny_models import tiny_lm  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.checkpoint import checkpoint  # noqa: E402

import xdrop  # noqa: E402
import xdrop.torch as xt  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


class NoRngCheckpoint(torch.autograd.Function):
    """A hand-written reentrant checkpoint that saves and restores no RNG state (as some frameworks' do)."""

    @staticmethod
    def forward(ctx, run, x):
        ctx.run = run
        ctx.save_for_backward(x)
        with torch.no_grad():
            return run(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        x = x.detach().requires_grad_(x.requires_grad)
        with torch.enable_grad():
            out = ctx.run(x)
        torch.autograd.backward(out, grad)
        return None, x.grad


def run_region(region, x, how):
    """``region(x)`` under checkpointing ``how`` (None: plain), without torch's RNG state."""
    if how is None:
        return region(x)
    if how == "custom":
        return NoRngCheckpoint.apply(region, x)
    return checkpoint(region, x, use_reentrant=how == "reentrant", preserve_rng_state=False)


HOWS = ["non-reentrant", "reentrant", "custom"]


class Net(nn.Module):
    def __init__(self, drop):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b, self.drop = nn.Linear(6, 6), nn.Linear(6, 6), drop

    def forward(self, x):
        return self.b(torch.tanh(self.drop(self.a(x))))  # b saves the dropout's output


def training_grads(how, make_drop, steps=3):
    """Parameter and input gradients of ``steps`` training steps; torch's RNG moves between them."""
    net, x = Net(make_drop()), randn(5, 6).requires_grad_()
    out = []
    for _ in range(steps):
        y = run_region(net, x, how)
        torch.rand(3)  # torch's RNG moves on: nothing may depend on its state
        y.square().sum().backward()
        out.append(torch.cat([net.a.weight.grad.flatten(), x.grad.flatten()]))
        net.zero_grad()
        x.grad = None
    return out, net.drop


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("cls", [xt.Dropout, xt.AlphaDropout, xt.DropPath], ids=lambda c: c.__name__)
def test_recompute_without_rng_state_gives_the_plain_gradients(cls, how):
    plain, _ = training_grads(None, lambda: cls(0.5, seed=7))
    ckpt, drop = training_grads(how, lambda: cls(0.5, seed=7))
    assert not torch.equal(plain[0], plain[1])  # the steps drew different masks
    assert all(torch.equal(a, b) for a, b in zip(plain, ckpt, strict=True))
    assert drop.step.item() == 3  # one step per training forward: the recomputations took none


class GeneratorDrop(nn.Module):
    def __init__(self):
        super().__init__()
        self.gen = xdrop.Generator(11)

    def forward(self, x):
        return xdrop.dropout(x, 0.5, seed=self.gen)


@pytest.mark.parametrize("how", HOWS)
def test_recompute_without_rng_state_replays_a_generator(how):
    plain, _ = training_grads(None, GeneratorDrop)
    ckpt, drop = training_grads(how, GeneratorDrop)
    assert all(torch.equal(a, b) for a, b in zip(plain, ckpt, strict=True))
    assert drop.gen.step == 3


@pytest.mark.parametrize("how", ["non-reentrant", "reentrant"])
def test_a_layer_called_twice_in_a_region_without_rng_state_raises_instead_of_guessing(how):
    drop = xt.Dropout(0.5, seed=1)
    x = randn(4, 6).requires_grad_()
    y = run_region(lambda t: torch.tanh(drop(torch.tanh(drop(t)))), x, how)
    with pytest.raises(RuntimeError, match=r"called it 2 times.*preserve_rng_state=True"):
        y.sum().backward()


def test_a_no_grad_call_before_a_non_reentrant_region_does_not_confuse_the_replay():
    """A training-mode call under no_grad (never recomputed) is not a candidate for a non-reentrant recomputation."""
    drop = xt.Dropout(0.5, seed=2)
    x = randn(4, 6).requires_grad_()
    with torch.no_grad():
        drop(x)  # step 0
    y = run_region(lambda t: torch.tanh(drop(t)), x, "non-reentrant")  # step 1
    torch.rand(3)
    y.sum().backward()
    expected = torch.autograd.grad(torch.tanh(xdrop.dropout(x, 0.5, seed=2, step=1)).sum(), x)[0]
    assert torch.equal(x.grad, expected)


@pytest.mark.parametrize("how", ["non-reentrant", "reentrant"])
def test_p_zero_never_raises_and_keeps_its_step(how):
    drop = xt.Dropout(0.0, seed=1)
    x = randn(4, 6).requires_grad_()
    y = run_region(lambda t: torch.tanh(drop(torch.tanh(drop(t)))), x, how)
    y.sum().backward()
    expected = torch.autograd.grad(torch.tanh(torch.tanh(x)).sum(), x)[0]
    assert torch.equal(x.grad, expected) and drop.step.item() == 2


@pytest.mark.parametrize("how", HOWS)
def test_torch_transformer_encoder_recomputes_without_rng_state(how):
    """torch's own encoder, each layer checkpointed; its attention dropout (torch's RNG) is set to 0 here."""

    def build():
        torch.manual_seed(0)
        layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.2, batch_first=True)
        model = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        for sub in model.layers:
            sub.self_attn.dropout = 0.0  # F.multi_head_attention_forward's dropout is outside this test
        return xt.replace_dropout(model, seed=3)

    def grads(checkpointed):
        model, x = build().train(), randn(2, 5, 16).requires_grad_()
        out = []
        for _ in range(2):
            h = x
            for sub in model.layers:
                h = run_region(sub, h, how if checkpointed else None)
            torch.rand(3)
            h.square().sum().backward()
            out.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
            model.zero_grad()
        return out

    plain, ckpt = grads(False), grads(True)
    assert not torch.equal(plain[0], plain[1])
    assert all(torch.equal(a, b) for a, b in zip(plain, ckpt, strict=True))


@pytest.mark.parametrize("reentrant", [False, True])
@pytest.mark.parametrize("kind", ["gpt2", "bert"])
def test_transformers_gradient_checkpointing_without_rng_state(kind, reentrant):
    pytest.importorskip("transformers", reason="needs transformers")

    def build():
        return xt.replace_dropout(tiny_lm(kind), seed=1234).train()

    ids = torch.randint(0, 40, (2, 10), generator=torch.Generator().manual_seed(1))

    def grads(checkpointed):
        model = build()
        if checkpointed:
            kwargs = {"use_reentrant": reentrant, "preserve_rng_state": False}
            if hasattr(model, "activation_checkpointing_enable"):  # gradient_checkpointing_enable's new name
                model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        out = []
        for _ in range(2):
            model(input_ids=ids, labels=ids).loss.backward()
            torch.rand(3)
            out.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
            model.zero_grad()
        return out

    plain, ckpt = grads(False), grads(True)
    assert not torch.equal(plain[0], plain[1])
    assert all(torch.equal(a, b) for a, b in zip(plain, ckpt, strict=True))


# -- calls made during backward that are not recomputations ----------------------------------------


def test_gradient_hook_noise_from_a_generator_and_a_layer():
    """Gradient noise: each backward's hook call takes the next step, as an ordinary call does."""
    gen, layer = xdrop.Generator(3), xt.Dropout(0.25, seed=9)
    x = torch.ones(8, requires_grad=True)
    x.register_hook(lambda g: xdrop.dropout(g, 0.5, seed=gen) + layer(g))
    for step in range(2):
        x.grad = None
        (x * 2).sum().backward()
        g = torch.full((8,), 2.0)
        expected = xdrop.dropout(g, 0.5, seed=3, step=step) + xdrop.dropout(g, 0.25, seed=9, step=step)
        assert torch.equal(x.grad, expected)
    assert gen.step == 2 and layer.step.item() == 2


class NoisyBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, drop):
        ctx.drop = drop
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return ctx.drop(grad), None


def test_layer_inside_a_custom_backward():
    layer = xt.Dropout(0.5, seed=4)
    x = torch.ones(16, requires_grad=True)
    NoisyBackward.apply(x, layer).sum().backward()
    assert torch.equal(x.grad, xdrop.dropout(torch.ones(16), 0.5, seed=4, step=0))
    assert layer.step.item() == 1
