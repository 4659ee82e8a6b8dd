"""Every model family ``replace_dropout`` converts: trains, owns every dropout, resumes, keeps eval outputs.

Each model is built here from a tiny config (no downloads) with every dropout
of its config above 0, converted with ``replace_dropout(model, seed=SEED)``,
and checked for what a user relies on:

- it trains: a forward and backward in training mode gives finite gradients;
- no dropout draws from torch's RNG: ``torch.get_rng_state()`` is unchanged
  by a training forward and backward, and the output does not depend on
  ``torch.manual_seed``;
- dropout is active: the training output differs from the eval output;
- a model loaded from a ``state_dict`` saved after one step draws the
  uninterrupted run's masks at the next step (bit-identical output);
- eval outputs equal those of the unconverted model, bit for bit;
- ``dropout_report`` finds nothing left on torch's RNG.

The transformers families are those whose config has a dropout; torch's own
``nn.TransformerEncoder`` / ``nn.Transformer`` (``nn.MultiheadAttention``) in
both layouts; timm's ViT (fused attention and not), ConvNeXt and ResNet
with ``drop_path_rate``. timm imports torchvision, whose wheels load only
beside the torch build they were made for: the timm models skip, saying so,
where that is not installed, and run in ``nox -s models_timm``.
"""

from __future__ import annotations

import io

import pytest
from helpers import import_timm

torch = pytest.importorskip("torch", reason="the conversion is of torch models")
transformers = pytest.importorskip("transformers", reason="the sweep builds transformers models")
from torch import nn  # noqa: E402

import xdrop.torch as xt  # noqa: E402

# transformers warns about configs and deprecated arguments while building models; xdrop's own
# warnings are checked through dropout_report (test_nothing_left_on_torch_rng).
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning", "ignore::DeprecationWarning")

SEED = 1234
P = 0.2
G = torch.Generator().manual_seed(11)
IDS = torch.randint(3, 60, (2, 8), generator=G)
PAD = torch.ones(2, 8, dtype=torch.long)
PAD[1, 6:] = 0
DECODER_IDS = torch.randint(3, 60, (2, 5), generator=G)
PIXELS = torch.randn(2, 3, 16, 16, generator=G)
MELS = torch.randn(2, 8, 16, generator=G)
SEQ = torch.randn(2, 6, 16, generator=G)  # (N, L, E) for torch's modules
TGT = torch.randn(2, 5, 16, generator=G)

BERT_LIKE = {
    "hidden_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 32,
    "vocab_size": 64,
    "max_position_embeddings": 32,
    "hidden_dropout_prob": P,
    "attention_probs_dropout_prob": P,
}
DECODER_LIKE = {
    "hidden_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 32,
    "vocab_size": 64,
    "max_position_embeddings": 32,
    "attention_dropout": P,
}
BART_LIKE = {
    "d_model": 16,
    "encoder_layers": 1,
    "decoder_layers": 1,
    "encoder_attention_heads": 4,
    "decoder_attention_heads": 4,
    "encoder_ffn_dim": 32,
    "decoder_ffn_dim": 32,
    "dropout": P,
    "attention_dropout": P,
    "activation_dropout": P,
}
TEXT = {"input_ids": IDS, "attention_mask": PAD}
SEQ2SEQ = {"input_ids": IDS, "attention_mask": PAD, "decoder_input_ids": DECODER_IDS}


def _hf(config_name, model_name, config, inputs):
    def build():
        model = getattr(transformers, model_name)(getattr(transformers, config_name)(**config))
        return model, inputs

    return build


def _torch_module(kind, batch_first):
    def build():
        if kind == "encoder":
            layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=P, batch_first=batch_first)
            model = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
            src = SEQ if batch_first else SEQ.transpose(0, 1)
            padding = torch.zeros(2, 6, dtype=torch.bool)
            padding[1, 4:] = True
            return model, {"src": src, "src_key_padding_mask": padding}
        model = nn.Transformer(16, 4, 1, 1, 32, dropout=P, batch_first=batch_first)
        src, tgt = (SEQ, TGT) if batch_first else (SEQ.transpose(0, 1), TGT.transpose(0, 1))
        return model, {"src": src, "tgt": tgt, "tgt_mask": nn.Transformer.generate_square_subsequent_mask(5)}

    return build


def _timm_model(kind):
    def build():
        timm = import_timm()
        if kind.startswith("vit"):
            model = timm.models.vision_transformer.VisionTransformer(
                img_size=16,
                patch_size=4,
                embed_dim=16,
                depth=2,
                num_heads=4,
                num_classes=3,
                drop_rate=P,
                pos_drop_rate=P,
                proj_drop_rate=P,
                attn_drop_rate=P,
                drop_path_rate=P,
            )
            fused = kind == "vit"
            for block in model.blocks:
                block.attn.fused_attn = fused  # F.scaled_dot_product_attention, or the attn_drop module
            return model, {"x": PIXELS}
        if kind == "convnext":
            model = timm.models.convnext.ConvNeXt(
                depths=(1, 1, 1, 1), dims=(8, 16, 32, 64), num_classes=3, drop_rate=P, drop_path_rate=P
            )
        else:
            resnet = timm.models.resnet
            model = resnet.ResNet(resnet.BasicBlock, [1, 1, 1, 1], num_classes=3, drop_rate=P, drop_path_rate=P)
        return model, {"x": torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))}

    return build


MODELS = {
    "bert": _hf("BertConfig", "BertModel", BERT_LIKE, TEXT),
    "roberta": _hf("RobertaConfig", "RobertaModel", BERT_LIKE | {"pad_token_id": 1}, TEXT),
    "albert": _hf("AlbertConfig", "AlbertModel", BERT_LIKE | {"embedding_size": 8}, TEXT),
    "electra": _hf("ElectraConfig", "ElectraModel", BERT_LIKE | {"embedding_size": 8}, TEXT),
    "distilbert": _hf(
        "DistilBertConfig",
        "DistilBertModel",
        {"dim": 16, "n_layers": 2, "n_heads": 4, "hidden_dim": 32, "vocab_size": 64, "dropout": P}
        | {"attention_dropout": P, "max_position_embeddings": 32},
        TEXT,
    ),
    "gpt2": _hf(
        "GPT2Config",
        "GPT2Model",
        {"n_embd": 16, "n_layer": 2, "n_head": 4, "vocab_size": 64, "n_positions": 32}
        | {"attn_pdrop": P, "resid_pdrop": P, "embd_pdrop": P},
        TEXT,
    ),
    "llama": _hf("LlamaConfig", "LlamaModel", DECODER_LIKE, TEXT),
    "mistral": _hf("MistralConfig", "MistralModel", DECODER_LIKE, TEXT),
    "qwen2": _hf("Qwen2Config", "Qwen2Model", DECODER_LIKE, TEXT),
    "phi": _hf("PhiConfig", "PhiModel", DECODER_LIKE | {"resid_pdrop": P, "embd_pdrop": P}, TEXT),
    "opt": _hf(
        "OPTConfig",
        "OPTModel",
        {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4, "ffn_dim": 32, "vocab_size": 64}
        | {"max_position_embeddings": 32, "word_embed_proj_dim": 16, "dropout": P, "attention_dropout": P},
        TEXT,
    ),
    "t5": _hf(
        "T5Config",
        "T5Model",
        {"d_model": 16, "d_kv": 4, "d_ff": 32, "num_layers": 1, "num_heads": 4, "vocab_size": 64}
        | {"relative_attention_num_buckets": 8, "dropout_rate": P, "decoder_start_token_id": 0},
        SEQ2SEQ,
    ),
    "bart": _hf("BartConfig", "BartModel", BART_LIKE | {"vocab_size": 64, "max_position_embeddings": 32}, SEQ2SEQ),
    "whisper": _hf(
        "WhisperConfig",
        "WhisperModel",
        BART_LIKE
        | {"vocab_size": 64, "num_mel_bins": 8, "max_source_positions": 8, "max_target_positions": 16}
        | {"decoder_start_token_id": 0, "pad_token_id": 0},
        {"input_features": MELS, "decoder_input_ids": DECODER_IDS},
    ),
    "vit": _hf(
        "ViTConfig",
        "ViTModel",
        {k: v for k, v in BERT_LIKE.items() if k not in ("vocab_size", "max_position_embeddings")}
        | {"image_size": 16, "patch_size": 4, "num_channels": 3},
        {"pixel_values": PIXELS},
    ),
    "clip": _hf(
        "CLIPConfig",
        "CLIPModel",
        {
            "text_config": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1}
            | {"num_attention_heads": 4, "vocab_size": 64, "max_position_embeddings": 16, "attention_dropout": P},
            "vision_config": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1}
            | {"num_attention_heads": 4, "image_size": 16, "patch_size": 4, "attention_dropout": P},
            "projection_dim": 8,
        },
        {"input_ids": IDS, "attention_mask": PAD, "pixel_values": PIXELS},
    ),
    "torch-encoder": _torch_module("encoder", False),
    "torch-encoder-batch-first": _torch_module("encoder", True),
    "torch-transformer": _torch_module("transformer", False),
    "torch-transformer-batch-first": _torch_module("transformer", True),
    "timm-vit": _timm_model("vit"),
    "timm-vit-unfused": _timm_model("vit-unfused"),
    "timm-convnext": _timm_model("convnext"),
    "timm-resnet": _timm_model("resnet"),
}


def _tensors(out):
    """The floating tensors of a model's output, in order (caches and other objects skipped)."""
    if isinstance(out, torch.Tensor):
        return [out] if out.is_floating_point() else []
    if hasattr(out, "to_tuple"):
        out = out.to_tuple()
    if isinstance(out, (tuple, list)):
        return [t for item in out for t in _tensors(item)]
    return []


def _build(name, convert=True):
    torch.manual_seed(0)  # the same weights at every build
    model, inputs = MODELS[name]()
    if convert:
        xt.replace_dropout(model, seed=SEED)
    return model, inputs


def _run(model, inputs, train=True):
    model.train(train)
    return _tensors(model(**inputs))


def _equal(a, b):
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.fixture(params=list(MODELS))
def name(request):
    return request.param


def test_trains_with_finite_gradients(name):
    model, inputs = _build(name)
    loss = sum(t.float().pow(2).mean() for t in _run(model, inputs))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads, "no parameter got a gradient"
    assert all(torch.isfinite(g).all() for g in grads)


def test_training_step_draws_nothing_from_torch_rng(name):
    model, inputs = _build(name)
    torch.manual_seed(5)
    before = torch.get_rng_state()
    sum(t.sum() for t in _run(model, inputs)).backward()
    assert torch.equal(torch.get_rng_state(), before)


def test_output_does_not_depend_on_torch_seed(name):
    outs = []
    for torch_seed in (1, 2):
        model, inputs = _build(name)
        torch.manual_seed(torch_seed)
        outs.append(_run(model, inputs))
    assert _equal(*outs)


def test_training_output_differs_from_eval(name):
    model, inputs = _build(name)
    train = _run(model, inputs)
    assert not _equal(train, _run(model, inputs, train=False))


def test_state_dict_resume_draws_the_uninterrupted_masks(name):
    model, inputs = _build(name)
    _run(model, inputs)
    saved = io.BytesIO()
    torch.save(model.state_dict(), saved)
    uninterrupted = _run(model, inputs)
    resumed, _ = _build(name)
    saved.seek(0)
    resumed.load_state_dict(torch.load(saved))
    assert _equal(_run(resumed, inputs), uninterrupted)


def test_eval_output_equals_the_unconverted_model(name):
    plain, inputs = _build(name, convert=False)
    converted, _ = _build(name)
    with torch.no_grad():
        assert _equal(_run(converted, inputs, train=False), _run(plain, inputs, train=False))


def test_nothing_left_on_torch_rng(name):
    model, _ = _build(name)
    report = xt.dropout_report(model)
    assert report.not_owned == []
    assert report.layers or report.attention


# Head dimension 16: float32 attention that the compiled routine with its own products takes (the sweep's
# head dimension 4 takes the blocked path).
WIDE_MODELS = {
    "gpt2-e16": _hf(
        "GPT2Config",
        "GPT2Model",
        {"n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 64, "n_positions": 32}
        | {"attn_pdrop": P, "resid_pdrop": P, "embd_pdrop": P},
        TEXT,
    ),
    "bert-e16": _hf("BertConfig", "BertModel", BERT_LIKE | {"hidden_size": 64, "intermediate_size": 64}, TEXT),
    "t5-e16": _hf(
        "T5Config",
        "T5Model",
        {"d_model": 64, "d_kv": 16, "d_ff": 64, "num_layers": 1, "num_heads": 4, "vocab_size": 64}
        | {"relative_attention_num_buckets": 8, "dropout_rate": P, "decoder_start_token_id": 0},
        SEQ2SEQ,
    ),
}


@pytest.mark.parametrize("wide", list(WIDE_MODELS))
def test_own_products_train_as_the_blocked_path(wide, monkeypatch):
    """A converted model with head dimension 16 trains through the routine with its own products (where the
    compiled kernel's avx2 or avx512 variant runs) and gives the blocked path's outputs and gradients, to
    float32 rounding: the same masks, the same arithmetic in another order."""
    from xdrop._kernels.host import _native
    from xdrop._kernels.torch import _attention as _attention_torch

    lib = _native.library()
    if lib is None or lib.attention_mm is None:
        pytest.skip(f"no own-products routine in this build or CPU (variant {_native.build_info().variant})")
    calls, routine = [], lib.attention_mm
    monkeypatch.setattr(lib, "attention_mm", lambda *a: calls.append(1) or routine(*a))
    runs = []
    for own in (True, False):
        monkeypatch.setattr(_attention_torch, "OWN_PRODUCTS", own)
        torch.manual_seed(0)
        model, inputs = WIDE_MODELS[wide]()
        xt.replace_dropout(model, seed=SEED)
        outs = _run(model, inputs)
        sum(o.float().sum() for o in outs).backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        runs.append((outs, grads))
    assert calls, "the routine with its own products never ran"
    (outs, grads), (want_outs, want_grads) = runs
    assert len(grads) == len(want_grads) > 0
    for got, want in zip([*outs, *grads], [*want_outs, *want_grads], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
