"""Run by tests/test_keras_layers.py in a subprocess per Keras backend (KERAS_BACKEND is read at import).

Prints one JSON object: case name -> output bytes as hex (float32), plus step counters.
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
x2 = rng.standard_normal((6, 16)).astype(np.float32)
x3 = rng.standard_normal((2, 3, 4)).astype(np.float32)
x4 = rng.standard_normal((2, 3, 3, 4)).astype(np.float32)
out: dict[str, object] = {"backend": keras.backend.backend()}


def hexed(t: object) -> str:
    return np.ascontiguousarray(keras.ops.convert_to_numpy(t), dtype=np.float32).tobytes().hex()


layer = xdrop.keras.Dropout(0.3, seed=SEED)
for step in range(3):
    out[f"dropout_step{step}"] = hexed(layer(keras.ops.convert_to_tensor(x2), training=True))
out["dropout_inference"] = hexed(layer(keras.ops.convert_to_tensor(x2)))
out["noise_shape"] = hexed(xdrop.keras.Dropout(0.5, noise_shape=(None, 1, None), seed=SEED)(x3, training=True))
for fmt in ("channels_last", "channels_first"):
    out[f"spatial2d_{fmt}"] = hexed(xdrop.keras.SpatialDropout2D(0.5, data_format=fmt, seed=SEED)(x4, training=True))
out["spatial1d"] = hexed(xdrop.keras.SpatialDropout1D(0.5, seed=SEED)(x3, training=True))
out["alpha"] = hexed(xdrop.keras.AlphaDropout(0.4, seed=SEED)(x2, training=True))

# .keras round trip: seed in the config, step in the weights.
model = keras.Sequential([keras.Input((16,)), xdrop.keras.Dropout(0.5, seed=SEED, name="drop")])
for _ in range(2):
    model(x2, training=True)
with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path, custom_objects={"Dropout": xdrop.keras.Dropout})
out["loaded_config_seed"] = loaded.get_layer("drop").get_config()["seed"]
out["after_reload"] = hexed(loaded(x2, training=True))

if keras.backend.backend() != "numpy":  # training: the step advances inside the (jitted) train step
    fit = keras.Sequential([keras.Input((16,)), keras.layers.Dense(4), xdrop.keras.Dropout(0.5, seed=SEED, name="d")])
    fit.compile(optimizer="sgd", loss="mse")
    fit.fit(x2, np.zeros((6, 4), np.float32), batch_size=3, epochs=2, verbose=0)
    out["fit_step"] = [int(w) for w in keras.ops.convert_to_numpy(fit.get_layer("d").step.value)]
print(json.dumps(out))
