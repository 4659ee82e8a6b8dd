"""xdrop.keras and Keras' saving: .keras files load without custom_objects, stock weights load, steps survive.

Keras picks its backend once per process and ``load_model`` must work in a
process that only imported ``xdrop.keras``, so ``tests/keras_saving_check.py``
saves in one fresh subprocess and loads in another.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).with_name("keras_saving_check.py")
ROOT = str(Path(__file__).resolve().parents[1])  # the subprocess imports this checkout's xdrop
BACKENDS = ["jax", "torch"]
LAYERS = ["drop", "alpha", "spatial1d", "mha", "spatial3d", "spatial2d"]


def _run(backend: str, mode: str, directory: Path) -> dict:
    if importlib.util.find_spec("keras") is None:
        pytest.skip("keras is not installed")
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"keras backend {backend}: {backend} is not installed")
    path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONWARNINGS": "ignore", "PYTHONPATH": path}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), mode, str(directory)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["backend"] == backend
    return got


@pytest.mark.parametrize("backend", BACKENDS)
def test_load_model_without_custom_objects_continues_the_masks(backend, tmp_path):
    saved = _run(backend, "save", tmp_path)
    loaded = _run(backend, "load", tmp_path)  # a fresh process: only `import xdrop.keras` registers the layers
    assert loaded["classes"] == saved["classes"]
    assert sum(name.startswith("xdrop.keras.") for name in loaded["classes"]) == 6
    assert loaded["seed"] == 2**40 + 9
    assert saved["steps"] == loaded["steps"] == loaded["weights_file_steps"] == {n: [2, 0] for n in LAYERS}
    # The third training call (step 2) gives the same bits in the saving and the loading process.
    assert np.asarray(loaded["next"]).tobytes() == np.asarray(saved["next"]).tobytes()
    assert np.asarray(loaded["weights_file_next"]).tobytes() == np.asarray(saved["next"]).tobytes()


@pytest.mark.parametrize("backend", BACKENDS)
def test_stock_keras_weights_load_into_xdrop_layers(backend, tmp_path):
    got = _run(backend, "stock", tmp_path)
    np.testing.assert_allclose(got["load_weights"], got["stock"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got["set_weights"], got["stock"], rtol=1e-6, atol=1e-6)
    assert got["weights_equal"]  # get_weights lists the stock layers' weights, no step among them
    assert got["load_weights_steps"] == {"drop": [1, 0], "mha": [1, 0]}  # the stock file keeps each step
