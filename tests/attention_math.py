"""The attention formula the fused paths are tested against (until part A's ``sdpa_reference`` lands).

W = softmax(q @ k^T * scale + bias) over the keys (-inf where a bool mask is
False or above the diagonal for causal), dropped = W * keep / keep_prob with
``keep = xdrop.keep_mask(B + (L, S), p, seed, step)`` and keep_prob = K / 2**32,
out = dropped @ v. NumPy, float64 unless the inputs say otherwise.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import xdrop
from xdrop._lib._stream import effective_keep


def keep(shape: tuple[int, ...], p: float, seed: int, step: int) -> np.ndarray:
    return xdrop.keep_mask(shape, p, seed=seed, step=step, xp=np)


def weights(q, k, bias=None, mask=None, scale=None, is_causal=False, fill=-np.inf) -> np.ndarray:
    """Softmax weights, B + (L, S); ``fill`` is the score of a masked-out key."""
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    s = np.einsum("...le,...se->...ls", q, k) * scale
    if bias is not None:
        s = s + bias
    if mask is not None:
        s = np.where(mask, s, fill)
    if is_causal:
        length, keys = s.shape[-2:]
        s = np.where(np.tril(np.ones((length, keys), bool)), s, fill)
    with np.errstate(invalid="ignore"):  # a row with every key masked: NaN, as torch's math path
        e = np.exp(s - s.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)


def attention(q, k, v, bias=None, p=0.0, *, seed=0, step=0, mask=None, scale=None, is_causal=False,
              fill=-np.inf, shared_mask=False) -> np.ndarray:  # fmt: skip
    w = weights(q, k, bias, mask, scale, is_causal, fill)
    if p > 0.0:
        shape = w.shape[-2:] if shared_mask else w.shape
        a = 1 / effective_keep(p) if p < 1.0 else 0.0  # p = 1: every weight dropped
        w = np.where(keep(shape, p, seed, step), w * a, 0.0)
    return np.einsum("...ls,...sd->...ld", w, v)


def rel_err(got: Any, want: Any) -> float:
    """Largest |got - want| relative to the largest |want|; NaN must sit at the same places (else inf)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    nan = np.isnan(want)
    if not np.array_equal(np.isnan(got), nan):
        return float("inf")
    got, want = got[~nan], want[~nan]
    if want.size == 0:
        return 0.0
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-300))
