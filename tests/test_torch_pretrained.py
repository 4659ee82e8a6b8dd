"""transformers checkpoints: ``save_pretrained`` / ``from_pretrained`` + ``replace_dropout`` resume the streams.

``from_pretrained`` builds a model with torch's dropouts and drops the xdrop
buffers as unexpected keys; the streams travel in ``config.xdrop`` instead.
After reloading and converting as documented, the next step must draw the
uninterrupted run's masks: the loss and every gradient equal bit for bit.
"""

from __future__ import annotations

import copy
import json
import os
import pickle

import pytest

torch = pytest.importorskip("torch", reason="the conversion is of torch models")
transformers = pytest.importorskip("transformers", reason="needs transformers")
safetensors_torch = pytest.importorskip("safetensors.torch", reason="transformers saves safetensors")

from tiny_models import tiny_lm  # noqa: E402

import xdrop.torch as xt  # noqa: E402

SEED = 1234
IDS = torch.randint(0, 40, (2, 10), generator=torch.Generator().manual_seed(1))


@pytest.fixture(autouse=True)
def quiet_transformers():
    """from_pretrained reports the xdrop buffers as unexpected keys (its log, not a warning); keep it quiet."""
    before = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    yield
    transformers.logging.set_verbosity(before)


def train_step(model):
    """One training forward and backward: the loss and every gradient, flattened."""
    model.train()
    model.zero_grad()
    loss = model(input_ids=IDS, labels=IDS).loss
    loss.backward()
    return torch.cat([loss.detach().reshape(1)] + [p.grad.flatten() for p in model.parameters() if p.grad is not None])


@pytest.mark.parametrize("kind", ["gpt2", "bert"])
def test_from_pretrained_then_replace_dropout_resumes_the_streams(kind, tmp_path):
    model = xt.replace_dropout(tiny_lm(kind), seed=SEED)
    first = train_step(model)
    train_step(model)
    model.save_pretrained(tmp_path)
    expected = train_step(model)  # the uninterrupted run's third step
    assert not torch.equal(first, expected)

    resumed = xt.replace_dropout(type(model).from_pretrained(tmp_path), seed=SEED)  # as documented
    assert torch.equal(train_step(resumed), expected)

    # seed=None takes the saved run's seed
    again = xt.replace_dropout(type(model).from_pretrained(tmp_path))
    assert torch.equal(train_step(again), expected)

    # Trainer's resume_from_checkpoint loads the weights file into the model it already holds (converted)
    # with load_state_dict(state_dict, False): there the buffers carry the streams
    held = xt.replace_dropout(tiny_lm(kind), seed=SEED)
    held.load_state_dict(safetensors_torch.load_file(os.path.join(tmp_path, "model.safetensors")), False)
    assert torch.equal(train_step(held), expected)


def test_config_json_holds_every_stream_at_save_time(tmp_path):
    model = xt.replace_dropout(tiny_lm("gpt2"), seed=SEED)
    train_step(model)
    model.save_pretrained(tmp_path)
    entry = json.loads((tmp_path / "config.json").read_text())["xdrop"]
    streams = {name: module for name, module in model.named_modules() if isinstance(module, xt.Dropout)}
    assert entry["format"] == 1 and entry["seed"] == SEED
    assert set(streams) <= set(entry["streams"])
    for path, layer in streams.items():
        assert entry["streams"][path] == [int(layer.seed) % 2**64, int(layer.step)]
    assert entry["streams"]["transformer.h.0.attn.xdrop_attention"][1] == 1  # one training step taken


def test_another_seed_than_the_saved_runs_raises(tmp_path):
    model = xt.replace_dropout(tiny_lm("gpt2"), seed=SEED)
    model.save_pretrained(tmp_path)
    loaded = type(model).from_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"seed=1234, not seed=5: pass seed=1234"):
        xt.replace_dropout(loaded, seed=5)


def test_a_saved_state_that_does_not_fit_the_model_warns_naming_the_streams(tmp_path):
    model = xt.replace_dropout(tiny_lm("gpt2"), seed=SEED)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["xdrop"]["streams"]["transformer.h.7.mlp.dropout"] = [1, 2]
    del config["xdrop"]["streams"]["transformer.drop"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = type(model).from_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="config.xdrop holds") as record:
        xt.replace_dropout(loaded, seed=SEED)
    text = " ".join(str(w.message) for w in record)
    assert "transformer.h.7.mlp.dropout" in text and "are not restored" in text
    assert "transformer.drop" in text and "start at step 0" in text


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"format": 2, "seed": 1, "streams": {}}, "must be the streams' state xdrop 1 writes"),
        ([1, 2], "must be the streams' state"),
        ({"format": 1, "seed": -1, "streams": {}}, r"config.xdrop\['seed'\]"),
        ({"format": 1, "seed": 1, "streams": {"transformer.drop": [1]}}, r"must be \[seed, step\], got \[1\]"),
    ],
)
def test_a_malformed_saved_state_raises_naming_it(entry, message):
    model = tiny_lm("gpt2")
    model.config.xdrop = entry
    with pytest.raises(ValueError, match=message):
        xt.replace_dropout(model, seed=1)


def test_copies_of_a_converted_model_carry_their_own_state():
    model = xt.replace_dropout(tiny_lm("gpt2"), seed=SEED)
    for twin in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        train_step(twin)
        assert twin.config.to_dict()["xdrop"]["streams"]["transformer.drop"][1] == 1  # the twin's step
        assert model.config.to_dict()["xdrop"]["streams"]["transformer.drop"][1] == 0  # not the original's


def test_a_config_shared_with_another_model_does_not_take_the_state():
    config = tiny_lm("gpt2").config
    converted, other = transformers.GPT2LMHeadModel(config), transformers.GPT2LMHeadModel(config)
    xt.replace_dropout(converted, seed=SEED)
    assert "xdrop" in converted.config.to_dict()
    assert "xdrop" not in other.config.to_dict()
