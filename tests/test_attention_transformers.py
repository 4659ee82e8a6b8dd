"""Whole-model conversion: transformers BERT and GPT-2 ("eager" and "sdpa") after ``replace_dropout``.

Tiny configs, built here (no downloads). Every dropout of a converted model
must come from xdrop: torch's RNG is never drawn, outputs do not depend on
``torch.manual_seed``, a run resumed from ``state_dict`` reproduces the next
step exactly, and eval outputs are those of the unconverted model, bit for bit.
"""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch", reason="the conversion is of torch models")
transformers = pytest.importorskip("transformers", reason="needs transformers")
import torch.nn.functional as F  # noqa: E402

import xdrop  # noqa: E402
import xdrop.torch as xt  # noqa: E402
from xdrop.torch import _path_seed  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SEED = 3
MODELS = ["bert", "gpt2"]
IMPLS = ["eager", "sdpa"]


def _build(kind, impl, init=0):
    torch.manual_seed(init)
    if kind == "bert":
        config = transformers.BertConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            vocab_size=64,
            max_position_embeddings=32,
            attention_probs_dropout_prob=0.3,
            hidden_dropout_prob=0.1,
        )
        model = transformers.BertModel(config)
    else:
        config = transformers.GPT2Config(
            n_embd=32,
            n_layer=2,
            n_head=4,
            vocab_size=64,
            n_positions=32,
            attn_pdrop=0.3,
            resid_pdrop=0.1,
            embd_pdrop=0.1,
            bos_token_id=0,
            eos_token_id=0,
        )
        model = transformers.GPT2Model(config)
    model.set_attn_implementation(impl)
    assert model.config._attn_implementation == impl
    return model


def _inputs():
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(0, 64, (2, 12), generator=g)
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 9:] = 0  # padding in the second sequence
    return {"input_ids": ids, "attention_mask": mask}


def _out(model, inputs):
    return model(**inputs).last_hidden_state


@pytest.fixture(params=[(m, i) for m in MODELS for i in IMPLS], ids=lambda p: f"{p[0]}-{p[1]}")
def case(request):
    return request.param


def test_training_forward_draws_nothing_from_torch(case):
    model = xt.replace_dropout(_build(*case), seed=SEED).train()
    assert model.config._attn_implementation == f"xdrop_{case[1]}"
    inputs = _inputs()
    before = torch.get_rng_state()
    out = _out(model, inputs)
    out.sum().backward()
    assert torch.equal(torch.get_rng_state(), before)
    # dropout did act: the training output is not the eval output, and the next step draws other masks
    with torch.no_grad():
        assert not torch.equal(out, _out(model.eval(), inputs))
        model.train()
        assert not torch.equal(out, _out(model, inputs))


def test_output_does_not_depend_on_torch_seed(case):
    model = xt.replace_dropout(_build(*case), seed=SEED).train()
    twin = copy.deepcopy(model)
    inputs = _inputs()
    torch.manual_seed(1)
    a = _out(model, inputs)
    torch.manual_seed(2)
    b = _out(twin, inputs)
    assert torch.equal(a, b)


def test_attention_masks_come_from_the_attention_streams(case):
    """Changing only the attention streams' seeds changes the training output (and nothing else does)."""
    model = xt.replace_dropout(_build(*case), seed=SEED).train()
    twin = copy.deepcopy(model)
    streams = [m for n, m in twin.named_modules() if n.endswith("xdrop_attention")]
    assert len(streams) == 2
    inputs = _inputs()
    same = copy.deepcopy(model)
    assert torch.equal(_out(model, inputs), _out(same, inputs))
    for s in streams:
        s.seed.add_(1)
    assert not torch.equal(_out(copy.deepcopy(same), inputs), _out(twin, inputs))


def test_resume_from_state_dict_reproduces_the_next_step(case):
    model = xt.replace_dropout(_build(*case), seed=SEED).train()
    inputs = _inputs()
    _out(model, inputs).sum().backward()  # one step
    state = copy.deepcopy(model.state_dict())
    want = _out(model, inputs)
    resumed = xt.replace_dropout(_build(*case, init=9), seed=SEED).train()
    resumed.load_state_dict(state)
    assert torch.equal(_out(resumed, inputs), want)


def test_eval_output_unchanged_and_checkpoints_load_both_ways(case):
    plain = _build(*case).eval()
    inputs = _inputs()
    with torch.no_grad():
        want = _out(plain, inputs)
        converted = xt.replace_dropout(copy.deepcopy(plain), seed=SEED).eval()
        assert torch.equal(_out(converted, inputs), want)
        other = xt.replace_dropout(_build(*case, init=9), seed=SEED).eval()
        other.load_state_dict(plain.state_dict())  # a plain checkpoint, strict
        assert torch.equal(_out(other, inputs), want)
        back = _build(*case, init=9).eval()
        back.load_state_dict(xt.plain_state_dict(converted))  # and back, strict
        assert torch.equal(_out(back, inputs), want)


class _Functional(torch.nn.Module):
    """Functional dropouts inside a forward: no module for replace_dropout to swap."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(8, 8)

    def forward(self, x):
        h = F.dropout(self.proj(x), 0.4)
        q = h.reshape(2, 3, 4, 8)
        return F.scaled_dot_product_attention(q, q, q, dropout_p=0.2), F.dropout(h, p=0.0), h


def test_functional_calls_are_routed_to_xdrop():
    model = xt.replace_dropout(_Functional(), seed=SEED)
    x = torch.randn(3, 8, 8)
    before = torch.get_rng_state()
    att, same, h = model(x)
    assert torch.equal(torch.get_rng_state(), before)
    base = _path_seed(SEED, "#functional")
    with torch.no_grad():
        want_h = xdrop.dropout(model.proj(x), 0.4, seed=_path_seed(base, "call0"), step=0)
        q = want_h.reshape(2, 3, 4, 8)
        want_att = xdrop.scaled_dot_product_attention(q, q, q, dropout_p=0.2, seed=_path_seed(base, "call1"), step=0)
    assert torch.equal(h, want_h) and torch.equal(same, h)  # p = 0 is passed through to torch
    torch.testing.assert_close(att, want_att, rtol=0, atol=0)
    assert int(model.xdrop_functional[1]) == 1  # one step per forward
    model(x)
    assert int(model.xdrop_functional[1]) == 2
    # outside the converted module's forward nothing is routed: torch's own dropout draws from torch's RNG
    F.dropout(x, 0.5)
    assert not torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("kind", MODELS)
def test_compiled_converted_model_matches_eager(kind):
    """torch.compile(fullgraph=True) of a converted model: no graph break, eager's bits step after step."""
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    # xdrop caches the array types it has checked; a graph traced before the first check guards on the
    # cache being empty and is traced once more: fill it first, so the count below is the steady one
    xdrop.scaled_dot_product_attention(torch.ones(1, 2, 2), torch.ones(1, 2, 2), torch.ones(1, 2, 2))
    model = xt.replace_dropout(_build(kind, "sdpa"), seed=SEED).train()
    eager = copy.deepcopy(model)
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, fullgraph=True, backend=counter)
    inputs = _inputs()
    for _ in range(4):
        assert torch.equal(_out(compiled, inputs), _out(eager, inputs))
    frames = counter.frame_count
    assert frames == 1, frames  # traced once, not per step
    torch._dynamo.reset()
