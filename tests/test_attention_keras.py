"""xdrop.keras.MultiHeadAttention: keep_mask's bits over (B, H, L, S) under the jax, torch and numpy backends.

Keras picks its backend once per process, so each backend runs
``tests/keras_attention_check.py`` in a subprocess; the expected mask and
outputs are computed here, with NumPy, from the weights the script reports.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import attention_math as am
import numpy as np
import pytest

SEED = 2**40 + 9  # above 2**32: Keras' own Dropout refuses such seeds
SCRIPT = Path(__file__).with_name("keras_attention_check.py")
ROOT = str(Path(__file__).resolve().parents[1])  # the subprocess imports this checkout's xdrop
BACKENDS = {"jax": "jax", "torch": "torch", "numpy": "numpy"}


def _env(backend: str) -> dict:
    path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "KERAS_BACKEND": backend, "PYTHONWARNINGS": "ignore", "PYTHONPATH": path}


def _run(backend: str) -> dict:
    if importlib.util.find_spec("keras") is None:
        pytest.skip("keras is not installed")
    if importlib.util.find_spec(BACKENDS[backend]) is None:
        pytest.skip(f"keras backend {backend}: {BACKENDS[backend]} is not installed")
    env = _env(backend)
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(SEED)], capture_output=True, text=True, env=env, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["backend"] == backend
    return got


def _reference(weights: dict, step: int) -> np.ndarray:
    """Keras' MHA arithmetic in float64, with xdrop's mask over the (B, H, L, S) weights."""
    rng = np.random.default_rng(0)
    query = rng.standard_normal((2, 4, 8)).astype(np.float32).astype(np.float64)
    value = rng.standard_normal((2, 5, 8)).astype(np.float32).astype(np.float64)
    w = {name: [np.asarray(a, np.float64) for a in arrays] for name, arrays in weights.items()}

    def project(x, name):
        kernel, bias = w[name]
        return np.einsum("bld,dhe->bhle", x, kernel) + bias[:, None, :]

    q, k, v = project(query, "query_dense"), project(value, "key_dense"), project(value, "value_dense")
    att = am.attention(q, k, v, None, 0.4, seed=SEED, step=step)  # (B, H, L, Ev)
    kernel, bias = w["output_dense"]
    return np.einsum("bhle,hed->bld", att, kernel) + bias


@pytest.fixture(scope="module")
def results() -> dict:
    return {backend: _run(backend) for backend in BACKENDS}


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_mask_bits_and_outputs(results, backend):
    got = results[backend]
    assert "seed_generator" not in " ".join(got["variables"])  # Keras' unused Dropout is not saved
    for step in range(2):
        dropped = np.asarray(got[f"dropped_{step}"])
        assert dropped.shape == (2, 2, 4, 5)
        assert int(((dropped != 0) != am.keep((2, 2, 4, 5), 0.4, SEED, step)).sum()) == 0
        want = _reference(got["weights"], step)
        np.testing.assert_allclose(got[f"output_{step}"], want, rtol=1e-4, atol=1e-5)
    assert got["dropped_0"] != got["dropped_1"]


def test_backends_agree(results):
    first = results["numpy"]
    for backend, got in results.items():
        for step in range(2):
            same = np.array_equal(np.asarray(got[f"dropped_{step}"]) != 0, np.asarray(first[f"dropped_{step}"]) != 0)
            assert same, backend
            np.testing.assert_allclose(
                got[f"output_{step}"], first[f"output_{step}"], rtol=1e-5, atol=1e-6, err_msg=backend
            )


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_drop_in_inference_and_reload(results, backend):
    got = results[backend]
    np.testing.assert_allclose(got["inference"], got["stock_inference"], rtol=1e-6, atol=1e-6)
    assert got["loaded_seed"] == SEED
    assert got["loaded_step"] == [2, 0]  # two training calls before saving
    if backend != "numpy":  # Keras' numpy backend cannot train
        assert got["fit_step"] == [4, 0]  # 2 epochs of 2 batches


def test_bad_seed():
    if importlib.util.find_spec("keras") is None:
        pytest.skip("keras is not installed")
    code = "import xdrop.keras; xdrop.keras.MultiHeadAttention(2, 4, dropout=0.1, seed=-1)"
    env = _env("numpy")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode != 0 and "seed must be" in done.stderr and "seed=-1" in done.stderr
