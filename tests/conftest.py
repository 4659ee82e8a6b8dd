"""One test body over every backend, in the style of scipy's and array-api-extra's.

``XDROP_BACKENDS`` (comma-separated names) picks the backends; by default every
known one runs. A backend that is not installed, or a GPU backend without a
device, is skipped with the reason. The backends are the registry's
(``xdrop/_testing/_backends.py``, the same entries ``python -m xdrop verify`` loads):
:class:`Backend` is generated from it, so adding a backend is one entry there.

Fixtures and markers:

- ``backend``: every selected backend (an ``xdrop.verify.Backend``);
- ``torch_backend``: only the selected backends whose namespace is torch
  (``torch``, ``torch-cuda``): tests of torch-only behaviour use it, so a new
  backend never runs them by accident;
- ``@pytest.mark.skip_xp_backend(Backend.X, reason=...)``: skip one backend
  for a test that otherwise runs on all of them, saying why.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from enum import Enum
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from xdrop import verify
from xdrop._testing._backends import REGISTRY

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


# Members named after the registry's entries: Backend.NUMPY, Backend.TORCH_CUDA, ...
Backend = Enum("Backend", {name.upper().replace("-", "_"): name for name in REGISTRY})


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


def _skip_marked(request: pytest.FixtureRequest, backend: Backend) -> None:
    for mark in request.node.iter_markers("skip_xp_backend"):
        (target,) = mark.args
        if not isinstance(target, Backend):
            raise TypeError(f"skip_xp_backend takes a conftest.Backend member, got {target!r}")
        if "reason" not in mark.kwargs:
            raise TypeError(f"skip_xp_backend({target}) needs reason=...")
        if target is backend:
            pytest.skip(f"{backend.value}: {mark.kwargs['reason']}")


@pytest.fixture(params=_selected(), ids=lambda b: b.value)
def backend(request: pytest.FixtureRequest) -> verify.Backend:
    """Each selected backend (``xdrop.verify.Backend``); skips those not installed or without a device."""
    _skip_marked(request, request.param)
    return _load(request.param)


def torch_only(selected: list[Backend]) -> list[Backend]:
    """The backends among ``selected`` whose arrays are torch tensors."""
    return [b for b in selected if REGISTRY[b.value].namespace == "torch"]


TORCH_BACKENDS = torch_only(_selected())


NO_TORCH = pytest.param(None, marks=pytest.mark.skip(reason="no torch backend in XDROP_BACKENDS"), id="no-torch")


@pytest.fixture(params=TORCH_BACKENDS or [NO_TORCH], ids=lambda b: b.value)
def torch_backend(request: pytest.FixtureRequest) -> verify.Backend:
    """Each selected torch backend (``torch``, ``torch-cuda``): for tests of torch-only behaviour."""
    _skip_marked(request, request.param)
    return _load(request.param)


@pytest.fixture
def torch_one_thread() -> Iterator[None]:
    """torch on one intra-op thread for the test: on tiny tensors its threads only contend on a shared
    2-core host (7x slower there). Opt in with ``pytestmark = pytest.mark.usefixtures("torch_one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(params=FLOAT_DTYPES)
def float_dtype(request: pytest.FixtureRequest, backend: verify.Backend) -> str:
    """Each floating dtype the backend has; the others are skipped with the reason."""
    if request.param not in backend.dtypes:
        pytest.skip(f"{backend.name} has no {request.param}")
    return str(request.param)


@pytest.fixture
def numpy_ref() -> verify.Backend:
    return _load(Backend.NUMPY)
