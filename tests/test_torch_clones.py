"""Clones: deep copies of xdrop.torch layers placed in one model draw masks of their own; twins draw the same."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch", reason="xdrop.torch needs torch")
from torch import nn  # noqa: E402

import xdrop.torch as xt  # noqa: E402
from xdrop.torch import _path_seed  # noqa: E402


def seeds(model):
    """The dropout layers' seeds (not the attention streams': ``type`` is exact)."""
    return [int(m.seed) % 2**64 for m in model.modules() if type(m) is xt.Dropout]


def encoder(n=3):
    """torch's encoder built from a layer whose dropouts are already xdrop's: it deep-copies the layer n times."""
    torch.manual_seed(0)
    layer = xt.replace_dropout(nn.TransformerEncoderLayer(8, 2, 16, dropout=0.5, batch_first=True), seed=1)
    layer.self_attn.dropout = 0.0  # the attention's stream draws no mask: the dropout layers' masks are compared
    return nn.TransformerEncoder(layer, n, enable_nested_tensor=False).train()


def dropout_masks(model, x):
    """What each xdrop layer drew in one training forward of ``model`` (its output over its input)."""
    seen = []

    def hook(module, args, out):
        seen.append((out != 0).flatten())

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, xt.Dropout)]
    model(x)
    for h in handles:
        h.remove()
    return seen


X = torch.randn(2, 16, 8, generator=torch.Generator().manual_seed(2))


def test_transformer_encoder_layers_draw_their_own_masks():
    model = encoder()
    assert len(set(seeds(model))) == 3  # before any call: the three copies of each of 3 dropouts share seeds
    masks = dropout_masks(model, X)  # in call order: the three dropouts of layer 0, then of layer 1, ...
    assert len(masks) == 9
    for same_place in (masks[i::3] for i in range(3)):
        assert not any(torch.equal(same_place[0], other) for other in same_place[1:])
    assert len(set(seeds(model))) == 9
    assert len({int(layer.self_attn.xdrop_attention.seed) for layer in model.layers}) == 3  # attention too
    # the seeds follow the structure: blake2b(the layer's seed, its path below the clones' common ancestor)
    assert int(model.layers[1].dropout1.seed) % 2**64 == _path_seed(_path_seed(1, "dropout1"), "1.dropout1")


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear, self.drop = nn.Linear(8, 8), xt.Dropout(0.5)  # seed drawn from torch's generator

    def forward(self, x):
        return x + self.drop(self.linear(x))


def test_clones_run_through_a_direct_forward_call_are_separated_too():
    model = encoder()
    model.forward(X)  # not model(X): the layers' calls are the outermost module calls
    assert len(set(seeds(model))) == 9


def test_module_list_of_deep_copies_draws_distinct_masks_and_a_twin_the_same():
    torch.manual_seed(0)
    block = Block()
    stack = nn.Sequential(*[copy.deepcopy(block) for _ in range(4)]).train()
    twin_before = copy.deepcopy(stack)
    masks = dropout_masks(stack, X)
    assert len({tuple(m.tolist()) for m in masks}) == 4
    twin_after = copy.deepcopy(stack)
    # a deep copy of the whole model is a twin: the masks the original draws at the same step
    assert all(torch.equal(a, b) for a, b in zip(dropout_masks(twin_before, X), masks, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(dropout_masks(twin_after, X), dropout_masks(stack, X), strict=True))
    assert seeds(twin_before) == seeds(twin_after) == seeds(stack)
    layer = xt.Dropout(0.5, seed=3)  # a copy of a layer on its own is a twin too: it keeps the seed
    assert torch.equal(copy.deepcopy(layer)(torch.ones(32)), layer(torch.ones(32)))


def test_replace_dropout_separates_clones_at_once_and_keeps_other_seeds():
    torch.manual_seed(0)
    block = Block()
    drawn = int(block.drop.seed) % 2**64
    model = nn.ModuleDict({"a": block, "b": copy.deepcopy(block), "c": xt.Dropout(0.5, seed=7)})
    model["d"] = xt.Dropout(0.5, seed=7)
    xt.replace_dropout(model, seed=0)
    assert int(model["a"].drop.seed) % 2**64 == _path_seed(drawn, "a.drop")  # the source is a clone too
    assert int(model["b"].drop.seed) % 2**64 == _path_seed(drawn, "b.drop")
    assert int(model["c"].seed) == int(model["d"].seed) == 7  # equal seeds given on purpose stay equal


def test_a_resumed_clone_model_draws_the_uninterrupted_masks():
    model = encoder()
    dropout_masks(model, X)  # step 0; separates the clones
    state = copy.deepcopy(model.state_dict())
    expected = dropout_masks(model, X)  # step 1
    resumed = encoder()  # fresh clones, still sharing seeds
    resumed.load_state_dict(state)
    got = dropout_masks(resumed, X)
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
    assert not torch.equal(got[0], got[3])  # and the clones' masks differ (layer 0's and layer 1's first)
