"""The one call path of every dropout variant: gate, kernel choice, draw, cache.

A variant is a *noise rule* (x's shape -> the mask's shape, see
:mod:`xdrop._noise_shapes`) and a few flags; :func:`_run` does the rest, so
each variant is the same bits on every backend by construction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import _kernels
from ._arith import alpha_constants, float_format
from ._checks import check_call, check_flag
from ._compat import device
from ._dropout import DropoutCache, _apply, _mask, _preflight, resolve_seed
from ._noise_shapes import channel_noise_shape, feature_noise_shape, sample_noise_shape
from ._sharding import is_dtensor, is_whole, local_noise, unwrap_dtensor
from ._stream import keep_count

NoiseRule = Callable[[tuple[int, ...]], tuple[int, ...]]


def _run(
    x: Any,
    p: Any,
    seed: Any,
    step: Any,
    impl: str,
    rule: NoiseRule | None,
    *,
    training: Any = True,
    alpha: bool = False,
    scale_by_keep: Any = True,
    allow_none_seed: bool = True,
    noise_shape: Any = None,
    global_shape: Any = None,
    global_start: Any = None,
) -> tuple[Any, DropoutCache | None]:
    """Validate everything (the gate, then the kernel choice), then draw: a rejected call never advances a Generator.

    ``rule`` gives the mask shape from x's shape; ``None`` takes ``noise_shape`` (Keras semantics) instead.
    """
    if is_dtensor(x):  # each rank draws its shard's block of the global mask
        local, gs, gst, wrap = unwrap_dtensor(x, global_shape, global_start)
        flags = {
            "training": training,
            "alpha": alpha,
            "scale_by_keep": scale_by_keep,
            "allow_none_seed": allow_none_seed,
            "noise_shape": local_noise(noise_shape, tuple(x.shape)),
        }
        out, cache = _run(local, p, seed, step, impl, rule, **flags, global_shape=gs, global_start=gst)
        return (x if out is local else wrap(out)), cache
    checked = check_call(
        x, p, impl=impl, noise_shape=noise_shape, rule=rule, global_shape=global_shape, global_start=global_start
    )
    assert checked is not None
    at, p, noise_shape, block = checked
    scale_by_keep = check_flag(scale_by_keep, "scale_by_keep")
    if not check_flag(training, "training"):
        return x, None
    xp = at.xp
    _preflight(x, xp, impl, noise_shape)
    seed, step = resolve_seed(seed, step, allow_none=allow_none_seed, traced=at.traced, xp=at.xp)
    k = keep_count(p)
    grad_scale: float | None = None
    if alpha:
        a, b, c = alpha_constants(k, float_format(xp, x.dtype))  # each rounded once to x's dtype
        grad_scale = a
    if alpha and _kernels.library_of(xp).uses_torch_operator and is_whole(block, noise_shape):  # no mask kept
        out = _kernels.torch_dropout(x, seed, step, k, noise_shape, a, b, c, impl)
    elif alpha:
        keep = _mask(xp, noise_shape, seed, step, k, device(x), impl, block)
        kept = x * a if b == 0.0 else x * a + b  # no add where b rounds to 0 in x's dtype: keeps -0.0
        out = xp.where(keep, kept, xp.asarray(c, dtype=x.dtype, device=device(x)))
    else:
        grad_scale = None if scale_by_keep else 1.0
        out = _apply(x, xp, seed, step, p, impl, noise_shape, grad_scale, block)
    cache = DropoutCache(
        seed, step, p, tuple(x.shape), x.dtype, at.name, device(x), noise_shape, grad_scale, block=block
    )
    return out, cache


def _forward(
    x: Any, p: Any, seed: Any, step: Any, impl: str, rule: NoiseRule | None, **kw: Any
) -> tuple[Any, DropoutCache]:
    out, cache = _run(x, p, seed, step, impl, rule, allow_none_seed=False, **kw)
    assert cache is not None  # training is always on here
    return out, cache


def _channel_rule(spatial: int, data_format: Any) -> NoiseRule:
    return lambda shape: channel_noise_shape(shape, spatial, f"dropout{spatial}d", data_format)


def _feature_alpha_rule(shape: tuple[int, ...]) -> tuple[int, ...]:
    return feature_noise_shape(shape, "feature_alpha_dropout")


def _drop_path_rule(shape: tuple[int, ...]) -> tuple[int, ...]:
    return sample_noise_shape(shape, "drop_path")
