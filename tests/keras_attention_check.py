"""Run by tests/test_attention_keras.py in a subprocess per Keras backend (KERAS_BACKEND is read at import).

Prints one JSON object: the projection weights, the inner dropout's output (the dropped weights) and the
layer's output for two training calls, the inference output of Keras' own layer with the same weights, and
what a .keras round trip keeps.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

import keras
import numpy as np

import xdrop.keras

SEED = int(sys.argv[1])
rng = np.random.default_rng(0)
query = rng.standard_normal((2, 4, 8)).astype(np.float32)
value = rng.standard_normal((2, 5, 8)).astype(np.float32)
out: dict[str, object] = {"backend": keras.backend.backend()}


def numpy(t: object) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(t), dtype=np.float32)


mha = xdrop.keras.MultiHeadAttention(num_heads=2, key_dim=3, dropout=0.4, seed=SEED, name="mha")
mha(query, value)  # builds
dense = ("query_dense", "key_dense", "value_dense", "output_dense")
for name in dense:
    layer = getattr(mha, name)
    layer.set_weights([(0.5 * rng.standard_normal(w.shape)).astype(np.float32) for w in layer.get_weights()])
out["weights"] = {name: [numpy(w).tolist() for w in getattr(mha, name).get_weights()] for name in dense}
out["variables"] = [v.path.split("/", 1)[1] for v in mha.variables]

dropped: list[np.ndarray] = []
inner = mha._dropout_layer
call = inner.call
inner.call = lambda x, training=None: _record(call(x, training=training))


def _record(t: object) -> object:
    dropped.append(numpy(t))
    return t


for step in range(2):
    out[f"output_{step}"] = numpy(mha(query, value, training=True)).tolist()
    out[f"dropped_{step}"] = dropped[-1].tolist()
inner.call = call

stock = keras.layers.MultiHeadAttention(num_heads=2, key_dim=3, dropout=0.4, seed=1)
stock(query, value)
for name in dense:
    getattr(stock, name).set_weights(getattr(mha, name).get_weights())
out["inference"] = numpy(mha(query, value)).tolist()
out["stock_inference"] = numpy(stock(query, value)).tolist()

inputs = keras.Input((4, 8))
model = keras.Model(inputs, mha(inputs, inputs))
with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path, custom_objects={"MultiHeadAttention": xdrop.keras.MultiHeadAttention})
layer = loaded.get_layer("mha")
out["loaded_seed"] = layer.get_config()["seed"]
out["loaded_step"] = [int(w) for w in keras.ops.convert_to_numpy(layer._dropout_layer.step.value)]

if keras.backend.backend() != "numpy":  # training: the step advances inside the (jitted) train step
    x = keras.Input((4, 8))
    fit = keras.Model(x, xdrop.keras.MultiHeadAttention(num_heads=2, key_dim=3, dropout=0.4, seed=SEED, name="m")(x, x))
    fit.compile(optimizer="sgd", loss="mse")
    fit.fit(query, np.zeros((2, 4, 8), np.float32), batch_size=1, epochs=2, verbose=0)
    out["fit_step"] = [int(w) for w in keras.ops.convert_to_numpy(fit.get_layer("m")._dropout_layer.step.value)]
print(json.dumps(out))
