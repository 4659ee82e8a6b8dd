"""xdrop.keras: each Keras backend gives the bits of xdrop.dropout on NumPy, and .keras files keep seed and step.

Keras picks its backend once per process, so each backend runs
``tests/keras_backend_check.py`` in a subprocess; the expected outputs are
computed here, by the functional API on NumPy.
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

import xdrop

SEED = 2**33 + 77
SCRIPT = Path(__file__).with_name("keras_backend_check.py")
KERAS_BACKENDS = {"jax": "jax", "torch": "torch", "numpy": "numpy"}


def _hex(a: object) -> str:
    return np.ascontiguousarray(a, dtype=np.float32).tobytes().hex()


def _expected() -> dict[str, str]:
    rng = np.random.default_rng(0)
    x2 = rng.standard_normal((6, 16)).astype(np.float32)
    x3 = rng.standard_normal((2, 3, 4)).astype(np.float32)
    x4 = rng.standard_normal((2, 3, 3, 4)).astype(np.float32)
    want = {f"dropout_step{s}": _hex(xdrop.dropout(x2, 0.3, seed=SEED, step=s)) for s in range(3)}
    want["dropout_inference"] = _hex(x2)
    want["noise_shape"] = _hex(xdrop.dropout(x3, 0.5, seed=SEED, noise_shape=(2, 1, 4)))
    want["spatial2d_channels_last"] = _hex(xdrop.dropout(x4, 0.5, seed=SEED, noise_shape=(2, 1, 1, 4)))
    want["spatial2d_channels_first"] = _hex(xdrop.dropout(x4, 0.5, seed=SEED, noise_shape=(2, 3, 1, 1)))
    want["spatial1d"] = _hex(xdrop.dropout(x3, 0.5, seed=SEED, noise_shape=(2, 1, 4)))
    want["alpha"] = _hex(xdrop.alpha_dropout(x2, 0.4, seed=SEED))
    want["after_reload"] = _hex(xdrop.dropout(x2, 0.5, seed=SEED, step=2))
    return want


@pytest.mark.parametrize("keras_backend", list(KERAS_BACKENDS))
def test_keras_backend_gives_numpy_bits(keras_backend: str) -> None:
    if importlib.util.find_spec("keras") is None:
        pytest.skip("keras is not installed")
    if importlib.util.find_spec(KERAS_BACKENDS[keras_backend]) is None:
        pytest.skip(f"keras backend {keras_backend}: {KERAS_BACKENDS[keras_backend]} is not installed")
    env = {**os.environ, "KERAS_BACKEND": keras_backend, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(SEED)], capture_output=True, text=True, env=env, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["backend"] == keras_backend
    for case, want in _expected().items():
        assert got[case] == want, f"{keras_backend}: {case} differs from xdrop.dropout on NumPy"
    assert got["loaded_config_seed"] == SEED
    if keras_backend != "numpy":
        assert got["fit_step"] == [4, 0]  # 2 epochs x 2 batches: the step advanced inside each train step
