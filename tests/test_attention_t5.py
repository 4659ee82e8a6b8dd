"""transformers T5 after ``replace_dropout``: its learned relative-position bias trains through xdrop's attention.

T5 passes ``relative_attention_bias`` (through the position bias, ``(1, heads, L, S)``,
or ``(batch, heads, L, S)`` once the padding mask is folded in) as the additive
attention mask, so the attention operator must give that mask its gradient. The
expected gradients are the same converted model's with the operator swapped for the
pure-standard reference (``xdrop._functional._attention_reference.sdpa_reference``: torch autograd
through plain matmul and softmax, the same keep mask), from the same initial state.
Tiny configs built here (no downloads).
"""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch", reason="the conversion is of torch models")
transformers = pytest.importorskip("transformers", reason="needs transformers")

import xdrop._functional._attention  # noqa: E402
import xdrop.torch as xt  # noqa: E402
from xdrop._functional._attention_reference import sdpa_reference  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _t5(impl, dtype):
    torch.manual_seed(0)
    config = transformers.T5Config(
        vocab_size=64,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        dropout_rate=0.2,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=16,
        decoder_start_token_id=0,
        pad_token_id=0,
    )
    model = transformers.T5ForConditionalGeneration(config).to(dtype)
    model.set_attn_implementation(impl)
    xt.replace_dropout(model, seed=1234)
    return model.train()


def _batch():
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(1, 64, (2, 10), generator=g)
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, 7:] = 0  # padding in the second sequence
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.randint(1, 64, (2, 7), generator=g)}


def _grads(model):
    model.zero_grad()
    model(**_batch()).loss.backward()
    return {name: p.grad for name, p in model.named_parameters() if p.grad is not None}


def _biases(grads):
    return {name: g for name, g in grads.items() if "relative_attention_bias" in name}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_relative_attention_bias_trains_with_the_reference_gradient(impl, dtype, monkeypatch):
    model = _t5(impl, dtype)
    twin = copy.deepcopy(model)  # the same weights and streams: the same masks
    got = _grads(model)
    biases = _biases(got)
    assert set(biases) == {
        "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
        "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
    }
    for name, g in biases.items():
        assert torch.isfinite(g).all() and torch.count_nonzero(g) > 0, name
    monkeypatch.setattr(xdrop._functional._attention, "_torch_attention", sdpa_reference)
    want = _grads(twin)
    assert set(got) == set(want)
    tol = {"rtol": 1e-10, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-6}
    for name in got:
        torch.testing.assert_close(got[name], want[name], **tol, msg=name)


def test_an_optimizer_step_moves_the_relative_attention_bias():
    model = _t5("sdpa", torch.float32)
    weight = model.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight
    before = weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        model(**_batch()).loss.backward()
        opt.step()
    assert not torch.equal(weight, before)
