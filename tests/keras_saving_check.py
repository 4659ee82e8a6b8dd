"""Run by tests/test_keras_saving.py in fresh subprocesses (KERAS_BACKEND is read at import).

``save DIR``: a model of every xdrop.keras layer, two training calls, saved as ``DIR/m.keras`` and
``DIR/m.weights.h5``; prints the outputs and steps of the next training call. ``load DIR``: a fresh
process that imports ``xdrop.keras`` and loads both files with no ``custom_objects``; prints the same.
``stock DIR``: a model of Keras' own Dropout and MultiHeadAttention saved as weights, loaded into the
same model built with xdrop's layers (``load_weights`` and ``set_weights``). Prints one JSON object.
"""

from __future__ import annotations

import json
import os
import sys

import keras
import numpy as np

import xdrop.keras

MODE, DIR = sys.argv[1], sys.argv[2]
SEED = 2**40 + 9
rng = np.random.default_rng(0)
x = rng.standard_normal((2, 4, 6)).astype(np.float32)
out: dict[str, object] = {"backend": keras.backend.backend()}


def numpy(t: object) -> list[float]:
    return np.asarray(keras.ops.convert_to_numpy(t), dtype=np.float32).tolist()


def steps(model: keras.Model) -> dict[str, list[int]]:
    found = {}
    for layer in model.layers:
        inner = getattr(layer, "_dropout_layer", layer)
        if hasattr(inner, "step"):
            found[layer.name] = [int(w) for w in keras.ops.convert_to_numpy(inner.step.value)]
    return found


def xdrop_model() -> keras.Model:
    inputs = keras.Input((4, 6))
    h = xdrop.keras.Dropout(0.5, seed=SEED, name="drop")(inputs)
    h = xdrop.keras.AlphaDropout(0.3, seed=SEED + 1, name="alpha")(h)
    h = xdrop.keras.SpatialDropout1D(0.5, seed=SEED + 2, name="spatial1d")(h)
    h = xdrop.keras.MultiHeadAttention(num_heads=2, key_dim=3, dropout=0.4, seed=SEED + 3, name="mha")(h, h)
    h = keras.layers.Reshape((4, 6, 1, 1))(h)
    h = xdrop.keras.SpatialDropout3D(0.5, data_format="channels_last", seed=SEED + 4, name="spatial3d")(h)
    h = keras.layers.Reshape((4, 6, 1))(h)
    h = xdrop.keras.SpatialDropout2D(0.5, data_format="channels_last", seed=SEED + 5, name="spatial2d")(h)
    return keras.Model(inputs, h)


def stock_model(dropout: type, attention: type) -> keras.Model:
    inputs = keras.Input((4, 6))
    h = keras.layers.Dense(6, name="dense")(inputs)
    h = dropout(0.5, name="drop")(h)
    h = attention(num_heads=2, key_dim=3, dropout=0.4, name="mha")(h, h)
    return keras.Model(inputs, h)


if MODE == "save":
    model = xdrop_model()
    for _ in range(2):
        model(x, training=True)
    out["classes"] = sorted({type(layer).__module__ + "." + type(layer).__name__ for layer in model.layers})
    model.save(os.path.join(DIR, "m.keras"))
    model.save_weights(os.path.join(DIR, "m.weights.h5"))
    out["steps"] = steps(model)
    out["next"] = numpy(model(x, training=True))
elif MODE == "load":
    loaded = keras.models.load_model(os.path.join(DIR, "m.keras"))
    out["classes"] = sorted({type(layer).__module__ + "." + type(layer).__name__ for layer in loaded.layers})
    out["seed"] = loaded.get_layer("drop").get_config()["seed"]
    out["steps"] = steps(loaded)
    out["next"] = numpy(loaded(x, training=True))
    fresh = xdrop_model()
    fresh.load_weights(os.path.join(DIR, "m.weights.h5"))
    out["weights_file_steps"] = steps(fresh)
    out["weights_file_next"] = numpy(fresh(x, training=True))
elif MODE == "stock":
    stock = stock_model(keras.layers.Dropout, keras.layers.MultiHeadAttention)
    stock.save_weights(os.path.join(DIR, "stock.weights.h5"))
    converted = stock_model(xdrop.keras.Dropout, xdrop.keras.MultiHeadAttention)
    converted(x, training=True)  # step 1: a stock file must leave it as it is
    converted.load_weights(os.path.join(DIR, "stock.weights.h5"))
    out["stock"] = numpy(stock(x))
    out["load_weights"] = numpy(converted(x))
    out["load_weights_steps"] = steps(converted)
    listed = stock_model(xdrop.keras.Dropout, xdrop.keras.MultiHeadAttention)
    listed.set_weights(stock.get_weights())
    out["set_weights"] = numpy(listed(x))
    out["weights_equal"] = len(listed.get_weights()) == len(stock.get_weights()) and all(
        np.array_equal(a, b) for a, b in zip(listed.get_weights(), stock.get_weights(), strict=True)
    )
print(json.dumps(out))
