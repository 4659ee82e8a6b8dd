"""The attention property of ``verify``: the mask is keep_mask's, the values the formula's, the gradient right.

A check of one loaded backend (see :mod:`xdrop._cli.verify._properties`): it reaches the
library through the backend's arrays, and the autograd of torch or JAX through
``sys.modules`` (only for a backend whose library is loaded).
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np

from ..._testing._backends import Backend
from ._cell import Cell, central_differences

P = 0.3
SEED, STEP = 2**63 + 5, 4
LEAD, L, S, E = (2, 3), 5, 7, 4


def _formula(q: np.ndarray, k: np.ndarray, v: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The math formula in float64 NumPy with a given mask."""
    from ..._functional._call import dropout_scale
    from ..._lib._stream import keep_count

    s = q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1])
    w = np.exp(s - s.max(-1, keepdims=True))
    w = w / w.sum(-1, keepdims=True)
    out: np.ndarray = np.where(keep, w * dropout_scale(keep_count(P), np, np.float64), 0.0) @ v
    return out


def _gradient(b: Backend, q: Any, k: Any, v: Any, dout: Any) -> np.ndarray | None:
    """d sum(out * dout) / dq by the backend's autograd, or None where it has none here."""
    from ..._functional._attention import scaled_dot_product_attention as sdpa

    def f(a: Any) -> Any:
        return sdpa(a, k, v, dropout_p=P, seed=SEED, step=STEP)

    if b.name.startswith("torch"):
        torch = sys.modules["torch"]
        a = q.detach().clone().requires_grad_()
        (grad,) = torch.autograd.grad((f(a) * dout).sum(), a)
        return b.to_numpy(grad)
    if b.name == "jax":
        jax = sys.modules["jax"]
        return b.to_numpy(jax.grad(lambda a: (f(a) * dout).sum())(q))
    return None


def check_attention(b: Backend) -> Cell:
    """``scaled_dot_product_attention``: mask bits vs ``keep_mask``, values vs the formula, gradient vs differences.

    With v the identity the output is the dropped weights, so its zeros are
    the mask (0 bits may differ from NumPy's reference ``keep_mask``). Values:
    relative error against the formula in float64 NumPy with that mask (at most
    1e-12 in float64, 1e-5 in float32). Gradient of q where the library
    differentiates: against central differences of the backend's own forward
    in float64 (relative 1e-6).
    """
    from ..._functional._attention import scaled_dot_product_attention as sdpa
    from ..._functional._dropout import keep_mask

    dtype = "float64" if "float64" in b.dtypes else "float32"
    rng = np.random.default_rng(3)
    q, k = (0.5 * rng.standard_normal((*LEAD, n, E)) for n in (L, S))
    v = np.broadcast_to(np.eye(S), (*LEAD, S, S)).copy()
    keep = keep_mask((*LEAD, L, S), P, seed=SEED, step=STEP, xp=np, impl="reference")
    args = [b.asarray(a.astype(dtype)) for a in (q, k, v)]
    out = b.to_numpy(sdpa(args[0], args[1], args[2], dropout_p=P, seed=SEED, step=STEP)).astype(np.float64)
    differing = int(np.count_nonzero((out != 0) != keep))
    want = _formula(q, k, v, keep)
    value_error = float(np.abs(out - want).max() / np.abs(want).max())
    value_limit = 1e-12 if dtype == "float64" else 1e-5
    fd = None
    if dtype == "float64":
        vr = rng.standard_normal((*LEAD, S, 3))
        dout = rng.standard_normal((*LEAD, L, 3))
        kb, vb, db = (b.asarray(a) for a in (k, vr, dout))
        grad = _gradient(b, b.asarray(q), kb, vb, db)
        if grad is not None:

            def forward(a: np.ndarray) -> np.ndarray:
                return b.to_numpy(sdpa(b.asarray(a), kb, vb, dropout_p=P, seed=SEED, step=STEP))

            numeric = central_differences(forward, q, dout)
            fd = float(np.max(np.abs(numeric - grad) / np.maximum(np.abs(grad), 1.0)))
    ok = differing == 0 and value_error <= value_limit and (fd is None or fd < 1e-6)
    figure = f"mask {differing} bits; {dtype} err {value_error:.0e}"
    if fd is not None:
        figure += f"; grad fd {fd:.0e}"
    detail = {"differing_bits": differing, "dtype": dtype, "value_error": value_error, "finite_difference_error": fd}
    return Cell(ok, figure, detail)
