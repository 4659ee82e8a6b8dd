"""One test body over every backend, in the style of scipy's and array-api-extra's.

``XDROP_BACKENDS`` (comma-separated names) picks the backends; by default every
importable one runs. A backend that is not installed, or a GPU backend without
a device, is skipped with the reason.
"""

from __future__ import annotations

import os
from enum import Enum
from types import ModuleType
from typing import Any

import numpy as np
import pytest


class Backend(Enum):
    NUMPY = "numpy"
    ARRAY_API_STRICT = "array_api_strict"
    TORCH = "torch"
    TORCH_CUDA = "torch-cuda"
    CUPY = "cupy"
    JAX = "jax"
    DASK = "dask"

    @property
    def is_gpu(self) -> bool:
        return self in (Backend.TORCH_CUDA, Backend.CUPY)


def _selected() -> list[Backend]:
    names = os.environ.get("XDROP_BACKENDS")
    if not names:
        return list(Backend)
    return [Backend(n.strip()) for n in names.split(",") if n.strip()]


class BackendHandle:
    """A backend under test: its namespace, device and numpy converters."""

    def __init__(self, backend: Backend, xp: ModuleType, device: Any) -> None:
        self.backend = backend
        self.xp = xp
        self.device = device

    def __repr__(self) -> str:
        return f"<{self.backend.value}>"

    def asarray(self, a: np.ndarray) -> Any:
        if self.backend in (Backend.TORCH, Backend.TORCH_CUDA):
            import torch

            return torch.asarray(a.copy(), device=self.device)  # copy: torch rejects negative strides
        if self.backend is Backend.JAX:
            import jax

            if a.dtype == np.float64 and not jax.config.jax_enable_x64:
                pytest.skip("jax: float64 needs jax_enable_x64; this session runs JAX's default 32-bit mode")
        if self.backend is Backend.DASK:  # uneven chunks, about two per axis: chunk invariance on every test
            return self.xp.asarray(a).rechunk(tuple((d + 2) // 2 or 1 for d in a.shape))
        return self.xp.asarray(a, device=self.device) if self.device is not None else self.xp.asarray(a)

    def to_numpy(self, a: Any) -> np.ndarray:
        if self.backend in (Backend.TORCH, Backend.TORCH_CUDA):
            import torch

            t = a.detach().cpu()
            return (t.float() if t.dtype == torch.bfloat16 else t).numpy()
        if self.backend is Backend.CUPY:
            return a.get()
        if self.backend is Backend.ARRAY_API_STRICT:
            return np.from_dlpack(a)
        if self.backend is Backend.DASK:
            return np.asarray(a.compute())
        return np.asarray(a)


def _load(backend: Backend) -> BackendHandle:
    if backend is Backend.NUMPY:
        import array_api_compat.numpy as xp

        return BackendHandle(backend, xp, None)
    if backend is Backend.ARRAY_API_STRICT:
        xp = pytest.importorskip("array_api_strict", reason="array-api-strict is not installed")
        return BackendHandle(backend, xp, None)
    if backend in (Backend.TORCH, Backend.TORCH_CUDA):
        torch = pytest.importorskip("torch", reason="torch is not installed")
        import array_api_compat.torch as xp

        if backend is Backend.TORCH_CUDA:
            if not torch.cuda.is_available():
                pytest.skip("torch-cuda: no CUDA device on this host")
            return BackendHandle(backend, xp, torch.device("cuda"))
        return BackendHandle(backend, xp, torch.device("cpu"))
    if backend is Backend.JAX:
        jnp = pytest.importorskip("jax.numpy", reason="jax is not installed")
        return BackendHandle(backend, jnp, None)
    if backend is Backend.DASK:
        pytest.importorskip("dask.array", reason="dask[array] is not installed")
        import array_api_compat.dask.array as xp

        return BackendHandle(backend, xp, None)
    cupy = pytest.importorskip("cupy", reason="cupy is not installed")
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError when no driver is present
        pytest.skip(f"cupy: no CUDA device on this host ({type(exc).__name__})")
    if n == 0:
        pytest.skip("cupy: no CUDA device on this host")
    import array_api_compat.cupy as xp

    return BackendHandle(backend, xp, None)


@pytest.fixture(params=_selected(), ids=lambda b: b.value)
def backend(request: pytest.FixtureRequest) -> BackendHandle:
    """Each selected backend; skips those not installed or without a device."""
    skip = request.node.get_closest_marker("skip_backend")
    if skip is not None and request.param.value in skip.args:
        pytest.skip(f"{request.param.value}: {skip.kwargs.get('reason', 'not supported')}")
    return _load(request.param)


@pytest.fixture
def numpy_ref() -> BackendHandle:
    return _load(Backend.NUMPY)
