"""One test body over every backend, in the style of scipy's and array-api-extra's.

``XDROP_BACKENDS`` (comma-separated names) picks the backends; by default every
known one runs. A backend that is not installed, or a GPU backend without a
device, is skipped with the reason. Backends are loaded by ``xdrop.verify``'s
``LOADERS`` (the same code ``python -m xdrop verify`` uses): adding a backend is
one entry there and one member of :class:`Backend` here.
"""

from __future__ import annotations

import dataclasses
import os
from enum import Enum
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from xdrop import verify

# Deterministic property tests: the same examples on every run and machine, no
# example database, no deadline (a shared CI machine's timing is noisy). The
# backend fixture holds no per-test state, so reusing it across examples is safe.
settings.register_profile(
    "xdrop",
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("XDROP_HYPOTHESIS_PROFILE", "xdrop"))

FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


class Backend(Enum):
    NUMPY = "numpy"
    ARRAY_API_STRICT = "array_api_strict"
    TORCH = "torch"
    TORCH_CUDA = "torch-cuda"
    CUPY = "cupy"
    JAX = "jax"
    DASK = "dask"


def _selected() -> list[Backend]:
    names = [n.strip() for n in os.environ.get("XDROP_BACKENDS", "").split(",") if n.strip()]
    if not names:
        return list(Backend)
    known = {b.value: b for b in Backend}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise pytest.UsageError(f"XDROP_BACKENDS names unknown backend(s) {unknown}; choose from {sorted(known)}")
    return [known[n] for n in names]


def _load(backend: Backend) -> verify.Backend:
    loaded = verify.load(backend.value)
    if isinstance(loaded, str):
        pytest.skip(f"{backend.value}: {loaded}")
    if backend is Backend.JAX:
        loaded = _jax_default_mode(loaded)
    return loaded


def _jax_default_mode(loaded: verify.Backend) -> verify.Backend:
    """The tests run JAX in its default 32-bit mode (test_jax.py covers x64): float64 is skipped."""
    import jax

    if jax.config.jax_enable_x64:
        return loaded

    def from_numpy(a: np.ndarray) -> Any:
        if a.dtype == np.float64:
            pytest.skip("jax: float64 needs jax_enable_x64; this session runs JAX's default 32-bit mode")
        return loaded.from_numpy(a)

    return dataclasses.replace(loaded, from_numpy=from_numpy, dtypes=("float16", "float32"))


@pytest.fixture(params=_selected(), ids=lambda b: b.value)
def backend(request: pytest.FixtureRequest) -> verify.Backend:
    """Each selected backend (``xdrop.verify.Backend``); skips those not installed or without a device."""
    skip = request.node.get_closest_marker("skip_backend")
    if skip is not None and request.param.value in skip.args:
        pytest.skip(f"{request.param.value}: {skip.kwargs.get('reason', 'not supported')}")
    return _load(request.param)


@pytest.fixture(params=FLOAT_DTYPES)
def float_dtype(request: pytest.FixtureRequest, backend: verify.Backend) -> str:
    """Each floating dtype the backend has; the others are skipped with the reason."""
    if request.param not in backend.dtypes:
        pytest.skip(f"{backend.name} has no {request.param}")
    return str(request.param)


@pytest.fixture
def numpy_ref() -> verify.Backend:
    return _load(Backend.NUMPY)
