"""``replace_dropout`` beyond dropout modules: nn.MultiheadAttention, attention call sites, the report.

Also :class:`xdrop.torch.ScaledDotProductAttention`, the stateful attention
layer for hand-written models. The whole-model properties (RNG untouched,
resume, eval unchanged) per model family are in ``tests/test_model_sweep.py``.
"""

from __future__ import annotations

import copy
import io
import warnings

import pytest
from helpers import import_timm

torch = pytest.importorskip("torch", reason="the conversion is of torch models")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import xdrop  # noqa: E402
import xdrop.torch as xt  # noqa: E402
from xdrop.torch import _path_seed  # noqa: E402

SEED = 99

# -- nn.MultiheadAttention --------------------------------------------------------------------------------------

MHA_OPTIONS = [
    {},
    {"batch_first": True},
    {"kdim": 6, "vdim": 5},
    {"add_bias_kv": True},
    {"add_zero_attn": True},
    {"bias": False},
]


def _mha_inputs(options):
    g = torch.Generator().manual_seed(4)
    n, length, source = 3, 4, 6
    q = torch.randn(n, length, 8, generator=g)
    k = torch.randn(n, source, options.get("kdim", 8), generator=g)
    v = torch.randn(n, source, options.get("vdim", 8), generator=g)
    if not options.get("batch_first"):
        q, k, v = (t.transpose(0, 1) for t in (q, k, v))
    padding = torch.zeros(n, source, dtype=torch.bool)
    padding[1, 4:] = True
    mask = torch.rand(length, source, generator=g) < 0.2
    return q, k, v, padding, mask


@pytest.mark.parametrize("options", MHA_OPTIONS, ids=lambda o: ",".join(o) or "default")
@pytest.mark.parametrize("need_weights", [True, False])
@pytest.mark.parametrize("masks", ["none", "padding", "attn", "both"])
def test_mha_training_path_computes_torchs_attention(options, need_weights, masks):
    """With a dropout too small to drop anything at these sizes, the owned path is torch's MultiheadAttention.

    p = 2**-40: the chance that any of these 288 weights is dropped is 288 * 2**-40, about 3e-10 (and the
    seeds are fixed, so the test is deterministic).
    """
    torch.manual_seed(1)
    plain = nn.MultiheadAttention(8, 2, dropout=0.0, **options)
    converted = xt.replace_dropout(copy.deepcopy(plain), seed=SEED)
    converted.dropout = 2.0**-40  # the owned path runs in training with dropout > 0
    q, k, v, padding, mask = _mha_inputs(options)
    kwargs = {
        "key_padding_mask": padding if masks in ("padding", "both") else None,
        "attn_mask": mask if masks in ("attn", "both") else None,
        "need_weights": need_weights,
    }
    want, want_weights = plain(q, k, v, **kwargs)
    before = torch.get_rng_state()
    got, got_weights = converted(q, k, v, **kwargs)
    assert torch.equal(torch.get_rng_state(), before)
    assert int(converted.xdrop_attention.step) == 1  # the owned path ran
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5, equal_nan=True)
    if need_weights:
        torch.testing.assert_close(got_weights, want_weights, atol=1e-6, rtol=1e-6, equal_nan=True)
    else:
        assert got_weights is None


@pytest.mark.parametrize("batch_first", [False, True])
def test_mha_drops_the_weights_with_its_streams_mask(batch_first):
    mha = xt.MultiheadAttention(8, 2, dropout=0.3, batch_first=batch_first, seed=SEED)
    x = torch.randn(3, 5, 8)
    _, weights = mha(x, x, x, average_attn_weights=False)  # weights (N, heads, L, S), after dropout
    keep = xdrop.keep_mask((3, 2, 5, 5) if batch_first else (5, 2, 3, 3), 0.3, seed=SEED, step=0, xp=torch)
    assert torch.equal(weights != 0, keep)
    assert int(mha.xdrop_attention.step) == 1
    # need_weights=False (the attention operator) draws the same mask: the same output
    mha.xdrop_attention.step.zero_()
    fused, _ = mha(x, x, x, need_weights=False)
    mha.xdrop_attention.step.zero_()
    explicit, _ = mha(x, x, x, need_weights=True)
    torch.testing.assert_close(fused, explicit, atol=1e-6, rtol=1e-6)


def test_mha_is_converted_in_place_and_resumes():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.25)
    attention = layer.self_attn
    weight = attention.in_proj_weight
    xt.replace_dropout(layer, seed=SEED)
    assert layer.self_attn is attention and attention.in_proj_weight is weight  # optimizer state stays valid
    assert type(attention) is xt.MultiheadAttention
    assert int(attention.xdrop_attention.seed) % 2**64 == xt._path_seed(SEED, "self_attn#attention")
    assert "dropout=0.25" in repr(attention) and "Stream(p=0.25" in repr(attention)
    x = torch.randn(5, 2, 8)
    layer(x)
    saved = io.BytesIO()
    torch.save(layer.state_dict(), saved)
    want = layer(x)
    torch.manual_seed(0)
    resumed = xt.replace_dropout(nn.TransformerEncoderLayer(8, 2, 16, dropout=0.25), seed=SEED)
    saved.seek(0)
    resumed.load_state_dict(torch.load(saved))
    assert torch.equal(resumed(x), want)
    # a plain checkpoint loads strictly, and plain_state_dict loads into a plain layer
    resumed.load_state_dict(nn.TransformerEncoderLayer(8, 2, 16).state_dict())
    nn.TransformerEncoderLayer(8, 2, 16).load_state_dict(xt.plain_state_dict(resumed))


def test_mha_recomputed_under_checkpoint_replays_its_mask():
    mha = xt.MultiheadAttention(8, 2, dropout=0.4, seed=SEED)
    x = torch.randn(4, 2, 8, requires_grad=True)
    want = torch.autograd.grad(mha(x, x, x, need_weights=False)[0].sum(), x)[0]
    mha.xdrop_attention.step.zero_()
    run = lambda t: mha(t, t, t, need_weights=False)[0]  # noqa: E731
    out = torch.utils.checkpoint.checkpoint(run, x, use_reentrant=False)
    assert torch.equal(torch.autograd.grad(out.sum(), x)[0], want)


class _OwnMHA(nn.MultiheadAttention):
    pass


def test_mha_subclass_is_left_with_a_warning_naming_it():
    model = nn.Sequential(nn.Linear(8, 8), _OwnMHA(8, 2, dropout=0.1))
    with pytest.warns(UserWarning, match=r"cannot own 1 dropout.*1 \(_OwnMHA, a subclass of nn.MultiheadAttention"):
        xt.replace_dropout(model, seed=SEED)
    assert type(model[1]) is _OwnMHA


# -- attention call sites: modules whose forward calls F.scaled_dot_product_attention -------------------------


class _Attention(nn.Module):
    """A hand-written attention block, as timm writes them."""

    def __init__(self, p):
        super().__init__()
        self.qkv = nn.Linear(8, 24)
        self.attn_drop = nn.Dropout(p)

    def forward(self, x):
        q, k, v = self.qkv(x).reshape(2, 5, 3, 2, 4).permute(2, 0, 3, 1, 4).unbind(0)
        p = self.attn_drop.p if self.training else 0.0
        return F.scaled_dot_product_attention(q, k, v, dropout_p=p).transpose(1, 2).reshape(2, 5, 8)


def test_attention_call_site_gets_its_own_stream():
    model = xt.replace_dropout(nn.Sequential(_Attention(0.3), _Attention(0.3)), seed=SEED)
    streams = [block.xdrop_attention for block in model]
    assert [int(s.seed) % 2**64 for s in streams] == [_path_seed(SEED, f"{i}#attention") for i in range(2)]
    assert "p=0.3" in repr(streams[0])
    x = torch.randn(2, 5, 8)
    before = torch.get_rng_state()
    out = model[0](x)  # called on its own, outside the model's forward: still owned
    assert torch.equal(torch.get_rng_state(), before)
    q, k, v = model[0].qkv(x).reshape(2, 5, 3, 2, 4).permute(2, 0, 3, 1, 4).unbind(0)
    want = xdrop.scaled_dot_product_attention(q, k, v, dropout_p=0.3, seed=int(streams[0].seed) % 2**64, step=0)
    torch.testing.assert_close(out, want.transpose(1, 2).reshape(2, 5, 8), rtol=0, atol=0)
    assert [int(s.step) for s in streams] == [1, 0]
    model.eval()
    plain = copy.deepcopy(model)
    assert torch.equal(model(x), plain(x))


# -- what stays on torch's RNG: one warning, and the report -----------------------------------------------------


class _TorchDropPath(nn.Module):
    """Stochastic depth written with torch.bernoulli: xdrop cannot route it."""

    def __init__(self, p):
        super().__init__()
        self.drop_prob = p

    def forward(self, x):
        if not self.training:
            return x
        return x * torch.bernoulli(torch.full((x.shape[0], 1), 1 - self.drop_prob)) / (1 - self.drop_prob)


class _Block(nn.Module):
    def __init__(self, p):
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.drop_path = _TorchDropPath(p)

    def forward(self, x):
        return x + self.drop_path(self.linear(x))


def test_warns_once_naming_each_dropout_left_on_torch_rng():
    model = nn.Sequential(_Block(0.1), nn.Dropout(0.2), _Block(0.3), _Block(0.0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        xt.replace_dropout(model, seed=SEED)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "cannot own 2 dropout(s) of this Sequential" in message
    assert "0.drop_path (_TorchDropPath: calls bernoulli)" in message and "2.drop_path" in message
    assert "3.drop_path" not in message  # p = 0 draws nothing


def test_no_warning_when_everything_is_owned():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1), nn.TransformerEncoderLayer(8, 2, 16))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        xt.replace_dropout(model, seed=SEED)


def test_report_lists_what_was_converted(capsys):
    model = nn.Sequential(nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1), _Attention(0.2), _Block(0.1))
    with pytest.warns(UserWarning, match="2.drop_path"):
        xt.replace_dropout(model, seed=SEED, verbose=True)
    printed = capsys.readouterr().out
    report = xt.dropout_report(model)
    assert printed.strip() == str(report)
    assert [path for path, _ in report.layers] == ["0.dropout", "0.dropout1", "0.dropout2", "1.attn_drop"]
    assert report.attention == [("0.self_attn", "MultiheadAttention (p=0.1)"), ("1", "_Attention (p=0.2)")]
    assert report.functional == [""]
    assert report.not_owned == [("2.drop_path", "_TorchDropPath: calls bernoulli")]
    assert "1 dropouts stay on torch's RNG" in printed and "2.drop_path: _TorchDropPath: calls bernoulli" in printed


def test_report_of_an_unconverted_transformer_names_its_attention():
    report = xt.dropout_report(nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1))
    assert report.not_owned == [("self_attn", "nn.MultiheadAttention, not converted")]


# -- ScaledDotProductAttention: the stateful attention layer ----------------------------------------------------


def _qkv():
    g = torch.Generator().manual_seed(8)
    return tuple(torch.randn(2, 2, 5, 4, generator=g) for _ in range(3))


def test_attention_layer_advances_its_step_and_resumes():
    layer = xt.ScaledDotProductAttention(0.3, seed=SEED)
    q, k, v = _qkv()
    first, second = layer(q, k, v, is_causal=True), layer(q, k, v, is_causal=True)
    assert not torch.equal(first, second)  # a new mask per call
    for step, out in enumerate((first, second)):
        want = xdrop.scaled_dot_product_attention(q, k, v, dropout_p=0.3, is_causal=True, seed=SEED, step=step)
        torch.testing.assert_close(out, want, rtol=0, atol=0)
    resumed = xt.ScaledDotProductAttention(0.3, seed=0)
    resumed.load_state_dict(layer.state_dict())
    assert torch.equal(resumed(q, k, v, is_causal=True), layer(q, k, v, is_causal=True))


def test_attention_layer_in_eval_is_torchs_function():
    layer = xt.ScaledDotProductAttention(0.3, seed=SEED).eval()
    q, k, v = _qkv()
    mask = torch.rand(5, 5, generator=torch.Generator().manual_seed(1)) > 0.3
    mask[:, 0] = True
    assert torch.equal(layer(q, k, v, mask), F.scaled_dot_product_attention(q, k, v, mask))
    assert int(layer.step) == 0


def test_attention_layer_refuses_bad_input_before_taking_a_step():
    layer = xt.ScaledDotProductAttention(0.3, seed=SEED)
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="attn_mask and is_causal=True"):
        layer(q, k, v, torch.ones(5, 5, dtype=torch.bool), is_causal=True)
    assert int(layer.step) == 0
    with pytest.raises(ValueError, match="dropout_p"):
        xt.ScaledDotProductAttention(1.5)


# -- timm (its own nox session: torchvision loads only beside the torch build it was made for) ---------------


def test_timm_drop_path_is_converted_and_patch_dropout_is_named():
    timm = import_timm()
    model = timm.models.vision_transformer.VisionTransformer(
        img_size=16, patch_size=4, embed_dim=16, depth=2, num_heads=4, drop_path_rate=0.1, patch_drop_rate=0.25
    )
    with pytest.warns(UserWarning, match=r"cannot own 1 dropout.*patch_drop \(PatchDropout: calls .*randn"):
        xt.replace_dropout(model, seed=SEED)
    converted = model.blocks[1].drop_path1
    assert type(converted) is xt.DropPath and converted.drop_prob == pytest.approx(0.1) and converted.scale_by_keep
    assert int(converted.seed) % 2**64 == _path_seed(SEED, "blocks.1.drop_path1")


# -- transformers: the repr of a converted attention module shows the p it applies -----------------------------


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_transformers_attention_stream_shows_its_p():
    transformers = pytest.importorskip("transformers", reason="needs transformers")
    small = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 32}
    small |= {"vocab_size": 64, "max_position_embeddings": 32}
    bert = transformers.BertModel(transformers.BertConfig(**small, attention_probs_dropout_prob=0.3))
    llama = transformers.LlamaModel(transformers.LlamaConfig(**small, attention_dropout=0.2))
    xt.replace_dropout(bert, seed=SEED)
    xt.replace_dropout(llama, seed=SEED)
    assert "Stream(p=0.3, seed=" in repr(bert.encoder.layer[0].attention.self)  # the module's dropout.p
    assert "Stream(p=0.2, seed=" in repr(llama.layers[0].self_attn)  # a float attention_dropout
    report = xt.dropout_report(llama)
    assert report.attention == [("layers.0.self_attn", "LlamaAttention (p=0.2)")] and report.not_owned == []


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")  # torch.compile's own warnings
def test_compiled_converted_encoder_layer_draws_eagers_masks():
    torch.manual_seed(0)
    layer = xt.replace_dropout(nn.TransformerEncoderLayer(8, 2, 16, dropout=0.2, batch_first=True), seed=SEED)
    eager = copy.deepcopy(layer)
    compiled = torch.compile(layer, fullgraph=True)  # no graph break in the owned attention step
    x = torch.randn(2, 5, 8)
    for step in range(2):
        # the same masks: outputs differ only by the compiled graph's rounding (a dropped weight would be
        # a difference of order one)
        torch.testing.assert_close(compiled(x), eager(x), atol=1e-5, rtol=1e-5)
        assert int(layer.self_attn.xdrop_attention.step) == step + 1
