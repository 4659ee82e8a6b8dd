"""Layers' ``get_stream`` / ``set_stream``: unsigned seeds and steps, read from one framework and set in another.

The torch buffers hold u64 values as int64 bits, so the seeds that matter here are
those of 2**63 and above (negative as int64) and steps whose high word is set.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import xdrop

torch = pytest.importorskip("torch", reason="xdrop.torch needs torch")
import xdrop.torch  # noqa: E402

HIGH_SEED = 2**64 - 2**40 + 9  # negative as int64; both words non-zero
HIGH_STEP = 2**32 + 3  # carries into the step's high word


def _x() -> np.ndarray:
    return np.random.default_rng(0).standard_normal(64).astype(np.float32)


def _want(seed: int, step: int) -> np.ndarray:
    return np.asarray(xdrop.dropout(_x(), 0.5, seed=seed, step=step))


# -- torch ----------------------------------------------------------------------------------------------


def test_torch_get_stream_is_unsigned_where_the_buffer_is_negative():
    layer = xdrop.torch.Dropout(0.5, seed=HIGH_SEED)
    assert int(layer.seed) < 0  # the int64 buffer: why the accessor exists
    layer(torch.ones(3))
    layer(torch.ones(3))
    assert layer.get_stream() == (HIGH_SEED, 2)


def test_torch_set_stream_then_forward_draws_that_stream():
    layer = xdrop.torch.Dropout(0.5, seed=1)
    layer.set_stream(HIGH_SEED, HIGH_STEP)
    assert layer.get_stream() == (HIGH_SEED, HIGH_STEP)
    out = layer(torch.from_numpy(_x()))
    np.testing.assert_array_equal(out.numpy(), _want(HIGH_SEED, HIGH_STEP))
    assert layer.get_stream() == (HIGH_SEED, HIGH_STEP + 1)


def test_torch_set_stream_keeps_the_built_seed_for_reset():
    layer = xdrop.torch.Dropout(0.5, seed=5)
    layer.set_stream(HIGH_SEED, 4)
    layer.reset_parameters()
    assert layer.get_stream() == (5, 0)


@pytest.mark.parametrize(
    ("seed", "step", "name"), [(-1, 0, "seed"), (2**64, 0, "seed"), (0, -1, "step"), (1.5, 0, "seed")]
)
def test_torch_set_stream_refuses_bad_values_and_changes_nothing(seed, step, name):
    layer = xdrop.torch.Dropout(0.5, seed=3)
    with pytest.raises((TypeError, ValueError), match=name):
        layer.set_stream(seed, step)
    assert layer.get_stream() == (3, 0)


def test_torch_stream_of_a_meta_layer_is_an_error_naming_to_empty():
    with torch.device("meta"):
        layer = xdrop.torch.Dropout(0.5, seed=3)
    with pytest.raises(RuntimeError, match="to_empty"):
        layer.get_stream()
    with pytest.raises(RuntimeError, match="to_empty"):
        layer.set_stream(1, 2)


def test_dropout_streams_lists_the_seeds_replace_dropout_derives():
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 4), torch.nn.Dropout(0.1), torch.nn.Sequential(torch.nn.Dropout(0.2))
    )
    xdrop.torch.replace_dropout(model, seed=HIGH_SEED)
    model[1](torch.ones(2))
    streams = xdrop.torch.dropout_streams(model)
    assert list(streams) == ["1", "2.0"]
    seeds = {path: s for path, (s, _) in streams.items()}
    assert all(0 <= s < 2**64 for s in seeds.values()) and seeds["1"] != seeds["2.0"]
    assert streams["1"][1] == 1 and streams["2.0"][1] == 0
    # what the layers draw: the listed stream, bit for bit
    layer = model[2][0]
    np.testing.assert_array_equal(
        layer(torch.from_numpy(_x())).numpy(), np.asarray(xdrop.dropout(_x(), 0.2, seed=seeds["2.0"], step=0))
    )


def test_dropout_streams_refuses_a_non_module():
    with pytest.raises(TypeError, match="module"):
        xdrop.torch.dropout_streams(object())


# -- Flax -----------------------------------------------------------------------------------------------


@pytest.fixture
def flax_dropout():
    pytest.importorskip("jax", reason="xdrop.flax needs jax")
    pytest.importorskip("flax", reason="xdrop.flax needs flax")
    import xdrop.flax

    return xdrop.flax.Dropout


def test_flax_continues_a_torch_layer_from_its_stream(flax_dropout):
    import jax.numpy as jnp

    torch_layer = xdrop.torch.Dropout(0.5, seed=HIGH_SEED)
    torch_layer.set_stream(HIGH_SEED, HIGH_STEP)
    torch_layer(torch.ones(2))  # one call: the next is step HIGH_STEP + 1
    flax_layer = flax_dropout(0.5, seed=0)
    flax_layer.set_stream(*torch_layer.get_stream())
    assert flax_layer.get_stream() == (HIGH_SEED, HIGH_STEP + 1)
    got = np.asarray(flax_layer(jnp.asarray(_x())))
    np.testing.assert_array_equal(got, torch_layer(torch.from_numpy(_x())).numpy())
    np.testing.assert_array_equal(got, _want(HIGH_SEED, HIGH_STEP + 1))
    assert flax_layer.get_stream() == torch_layer.get_stream() == (HIGH_SEED, HIGH_STEP + 2)


def test_flax_set_stream_refuses_bad_values_and_changes_nothing(flax_dropout):
    layer = flax_dropout(0.5, seed=3)
    with pytest.raises(ValueError, match="step"):
        layer.set_stream(1, 2**64)
    with pytest.raises(ValueError, match="seed"):
        layer.set_stream(-1, 0)
    assert layer.get_stream() == (3, 0)


# -- Keras (its backend is chosen at import: a subprocess on JAX) ---------------------------------------

KERAS_SCRIPT = """
import json, sys
import keras, numpy as np
import xdrop.keras

seed, step = (int(v) for v in sys.argv[1:3])
layer = xdrop.keras.Dropout(0.5, seed=0)
layer.set_stream(seed, step)
first = layer.get_stream()
x = np.random.default_rng(0).standard_normal(64).astype(np.float32)
out = keras.ops.convert_to_numpy(layer(x, training=True))
print(json.dumps({"first": first, "after": layer.get_stream(), "out": out.tobytes().hex()}))
"""


@pytest.mark.skipif(
    importlib.util.find_spec("keras") is None or importlib.util.find_spec("jax") is None,
    reason="needs keras and its JAX backend",
)
def test_keras_set_stream_then_call_draws_that_stream():
    import json

    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KERAS_SCRIPT), str(HIGH_SEED), str(HIGH_STEP)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["first"] == [HIGH_SEED, HIGH_STEP]
    assert got["after"] == [HIGH_SEED, HIGH_STEP + 1]
    assert got["out"] == _want(HIGH_SEED, HIGH_STEP).tobytes().hex()
