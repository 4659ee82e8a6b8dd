"""What ``python -m xdrop bench`` times on each backend: xdrop's calls and its peers', name -> (forward, backward)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..._functional import _dropout
from ..._kernels.host import _buffers as _host

P = 0.5
SEED = 0x5EED


def _numpy_cases(x: np.ndarray) -> dict[str, tuple[Callable[[], Any], Callable[[], Any] | None]]:
    rng = np.random.default_rng(SEED)
    keep = 1 - P
    dout = np.ones_like(x)
    _, cache = _dropout.dropout_forward(x, P, seed=SEED)
    cs_mask = (rng.random(x.shape) < keep) / keep  # CS231n: float64 mask, saved for backward
    g_keep = rng.random(x.size, dtype=np.float32).reshape(x.shape) < keep
    scale = x.dtype.type(1 / keep)
    into = np.empty_like(x)
    xdrop_into = np.empty_like(x)

    def cs231n() -> Any:  # the seed's code, with a Generator instead of the global RNG
        mask = (rng.random(x.shape) < keep) / keep
        return x * mask

    def generator() -> Any:
        k = rng.random(x.size, dtype=np.float32).reshape(x.shape) < keep
        return np.where(k, x * scale, x.dtype.type(0))

    n = x.size
    one_mask = (rng.random(n) < keep).reshape(x.shape)

    def oneliner() -> Any:  # the native NumPy dropout
        return x * (rng.random(n) < keep).reshape(x.shape) / keep

    cases: dict[str, tuple[Callable[[], Any], Callable[[], Any] | None]] = {
        "xdrop": (lambda: _dropout.dropout(x, P, seed=SEED), lambda: _dropout.dropout_backward(dout, cache)),
        "xdrop-into": (lambda: _dropout.dropout(x, P, seed=SEED, out=xdrop_into), None),  # beside multiply-into
        "numpy-oneliner": (oneliner, lambda: dout * one_mask / keep),
        "xdrop[numpy]": (
            lambda: _dropout.dropout(x, P, seed=SEED, impl="blocked"),
            lambda: _dropout.dropout_backward(dout, cache, impl="blocked"),
        ),
        "cs231n": (cs231n, lambda: dout * cs_mask),
        "numpy-generator": (generator, lambda: np.where(g_keep, dout * scale, x.dtype.type(0))),
        "multiply": (lambda: x * scale, None),
        "multiply-into": (lambda: np.multiply(x, scale, out=into), None),  # no allocation: the bound itself
        "copy": (lambda: x.copy(), None),
    }
    if _host.default_engine() != "compiled":
        del cases["xdrop[numpy]"]  # "xdrop" is the NumPy engine already
    return cases


def _torch_cases(x: Any, torch: Any) -> dict[str, tuple[Callable[[], Any], Callable[[], Any] | None]]:
    xg = x.detach().clone().requires_grad_(True)
    dout = torch.ones_like(x)
    y_x = _dropout.dropout(xg, P, seed=SEED)
    y_t = torch.nn.functional.dropout(xg, P, training=True)
    return {
        "xdrop": (
            lambda: _dropout.dropout(x, P, seed=SEED),
            lambda: torch.autograd.grad(y_x, xg, dout, retain_graph=True),
        ),
        "torch": (
            lambda: torch.nn.functional.dropout(x, P, training=True),
            lambda: torch.autograd.grad(y_t, xg, dout, retain_graph=True),
        ),
        "multiply": (lambda: x * 2.0, None),
        "copy": (lambda: x.clone(), None),
    }


def _torch_fwd_bwd_cases(x: Any, torch: Any) -> dict[str, dict[str, Callable[[], Any]]]:
    """Forward + backward through autograd, functional and layer, xdrop and torch, by direction.

    ``forward+backward``: ``torch.autograd.grad(f(x), x, dout)`` with a dense ``dout``;
    ``sum+backward``: ``f(x).sum().backward()``, whose gradient reaches dropout expanded (stride 0),
    as it does from a loss written as a sum or a mean.
    """
    from ... import torch as xtorch

    xg = x.detach().clone().requires_grad_(True)
    dout = torch.ones_like(x)
    layers = {"xdrop-layer": xtorch.Dropout(P, seed=SEED).to(x.device), "torch-layer": torch.nn.Dropout(P)}
    fns: dict[str, Callable[[Any], Any]] = {
        "xdrop": lambda t: _dropout.dropout(t, P, seed=SEED),
        "torch": lambda t: torch.nn.functional.dropout(t, P, training=True),
        **layers,
    }

    def grad(f: Callable[[Any], Any]) -> Callable[[], Any]:
        return lambda: torch.autograd.grad(f(xg), xg, dout)

    def sum_backward(f: Callable[[Any], Any]) -> Callable[[], Any]:
        def run() -> None:
            xg.grad = None  # not accumulated: each call pays the same
            f(xg).sum().backward()

        return run

    return {
        "forward+backward": {name: grad(f) for name, f in fns.items()},
        "sum+backward": {name: sum_backward(f) for name, f in fns.items()},
    }


def _cupy_cases(x: Any, cupy: Any) -> dict[str, tuple[Callable[[], Any], Callable[[], Any] | None]]:
    dout = cupy.ones_like(x)
    _, cache = _dropout.dropout_forward(x, P, seed=SEED)
    keep = 1 - P
    scale = x.dtype.type(1 / keep)
    saved = cupy.random.random(x.shape, dtype=cupy.float32) < keep

    def native() -> Any:
        k = cupy.random.random(x.shape, dtype=cupy.float32) < keep
        return cupy.where(k, x * scale, x.dtype.type(0))

    return {
        "xdrop": (lambda: _dropout.dropout(x, P, seed=SEED), lambda: _dropout.dropout_backward(dout, cache)),
        "cupy-random": (native, lambda: cupy.where(saved, dout * scale, x.dtype.type(0))),
        "multiply": (lambda: x * scale, None),
        "copy": (lambda: x.copy(), None),
    }
