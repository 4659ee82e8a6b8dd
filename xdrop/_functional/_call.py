"""The one call path of the dropout family: every public dropout function goes through here.

:func:`run` is the pipeline of ``dropout``, the variants and their ``*_forward``:
a DTensor's local shard (:func:`_on_local`, also for :func:`backward`), the gate
(:func:`xdrop._lib._checks.check_call`), the kernel choice (:func:`preflight`, so a
refused ``impl`` never takes the seed), the seed (:func:`resolve_seed`, last),
the draw (:func:`apply`) and, for a forward, the :class:`DropoutCache`.

Every member of the family is one affine form over a keep mask: kept elements
become ``x * a + b``, dropped ones ``c``. Plain dropout is ``(1 / keep, 0, 0)``,
drop path without ``scale_by_keep`` ``(1, 0, 0)``, alpha dropout its constants
(:func:`xdrop._lib._arith.alpha_constants`), a gradient ``(grad_scale, 0, 0)``; the
torch operator takes the same form, so :func:`apply` is one route on every backend.

NumPy's fast paths (the short path of the plainest arguments, ``out=``) are
:func:`numpy_call`, the one seam where a call may leave the pipeline.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import ModuleType
from typing import Any

import numpy as np

from .. import _kernels
from .._lib._arith import alpha_constants, float_format
from .._lib._checks import (
    check_array,
    check_call,
    check_flag,
    check_impl,
    check_noise_shape,
    check_probability,
    check_shape,
    check_u64,
)
from .._lib._compat import device
from .._lib._generator import Generator
from .._lib._sharding import Block, ambient_placed, is_dtensor, is_whole, local_noise, noise_block, unwrap_dtensor
from .._lib._stream import STREAM_VERSION, check_stream_version, keep_count, scale_for
from .._lib._u64 import from_words
from .._lib._values import MAX_U64

SeedLike = int | Generator | None
Affine = tuple[float, float, float]  # (a, b, c): kept elements become x * a + b, dropped ones c
NoiseRule = Callable[[tuple[int, ...]], tuple[int, ...]]

TRACED_SEED_HELP = (
    "while JAX traces x (under jax.jit, grad, vmap, ...) it would be read once, at trace time, "
    "and every call of the compiled function would reuse one mask; pass an int seed and the step "
    "as a traced argument instead, e.g. step=jnp.asarray(i, jnp.uint32)"
)


def resolve_seed(
    seed: Any, step: Any, *, allow_none: bool = True, traced: bool = False, xp: ModuleType | None = None
) -> tuple[int, int]:
    """The ``(seed, step)`` pair a call uses; takes a step from a Generator.

    Call it last among the checks, so a rejected call never advances a Generator.
    ``traced`` says the input is a JAX tracer: then a Generator or ``None``,
    which would be consumed once at trace time, is refused. ``seed=None`` on a
    torch tensor (``xp`` torch's namespace) draws the seed from torch's default
    generator, as ``F.dropout`` draws its mask: ``torch.manual_seed`` reproduces
    it, and ``torch.utils.checkpoint``, which restores that generator before it
    recomputes, replays the same mask. Elsewhere it is fresh OS entropy. A
    Generator on a torch tensor replays the step it took when checkpoint
    recomputes the call (see :mod:`xdrop._lib._replay`).
    """
    if traced and (seed is None or isinstance(seed, Generator)):
        raise TypeError(f"seed={seed!r} cannot be used here: {TRACED_SEED_HELP}")
    if isinstance(seed, Generator):
        if not (isinstance(step, int) and not isinstance(step, bool) and step == 0):
            raise ValueError(
                f"step must be left at 0 when seed is a Generator (it supplies the step), got step={step!r}"
            )
        if xp is not None and _kernels.library_of(xp).torch_rng:  # a checkpoint recomputation replays the step
            return seed.seed, seed._take_torch_step()
        return seed.seed, seed.take_step()
    step = check_u64(step, "step")
    if seed is None and allow_none:
        if xp is not None and _kernels.library_of(xp).torch_rng:
            import torch

            lo, hi = torch.randint(0, 1 << 32, (2,), dtype=torch.int64).tolist()
            return from_words(lo, hi), step
        import secrets  # here, not at import: ~5 ms that only seed=None calls need

        return secrets.randbits(64), step
    return check_u64(seed, "seed"), step


@dataclass(frozen=True)
class DropoutCache:
    """What :func:`dropout_backward` needs: O(1) in the size of ``x``, no mask.

    The mask is regenerated from ``(seed, step, p)`` over ``noise_shape``.
    ``grad_scale`` is the factor kept elements of ``dout`` are multiplied by;
    ``None`` means the inverted-dropout scale ``1 / keep`` (alpha dropout and
    ``drop_path(scale_by_keep=False)`` set their own factor). ``stream_version``
    names the stream the mask was drawn from; :func:`dropout_backward` refuses
    a cache of another version.
    """

    seed: int
    step: int
    p: float
    shape: tuple[int, ...]
    dtype: Any
    namespace: str
    device: Any
    noise_shape: tuple[int, ...]
    grad_scale: float | None = None
    stream_version: int = STREAM_VERSION
    block: Block | None = None  # the mask's place in the global mask (global_shape / global_start)

    def __post_init__(self) -> None:
        # A hand-made cache is checked like the forward's arguments.
        check_u64(self.seed, "cache.seed")
        check_u64(self.step, "cache.step")
        check_probability(self.p, "cache.p")
        check_shape(self.shape, "cache.shape")
        check_noise_shape(self.noise_shape, self.shape, "cache.noise_shape")


# (K, dtype type, dtype, scale function) -> scale: Fraction arithmetic once per (p, dtype), not per call.
_SCALES: dict[tuple[Any, ...], float] = {}
_MAX_SCALES = 4096  # p schedules make new keys: start again rather than grow without bound


def dropout_scale(k: int, xp: ModuleType, dtype: Any) -> float:
    """``scale_for(k, xp, dtype)``, cached (keyed by the function too, so a replaced one is honoured)."""
    key = (k, type(dtype), dtype, scale_for)  # the type first: dtypes of two libraries may hash alike
    try:
        return _SCALES[key]
    except KeyError:
        pass
    except TypeError:  # an unhashable dtype
        return scale_for(k, xp, dtype)
    value = scale_for(k, xp, dtype)
    if len(_SCALES) >= _MAX_SCALES:
        _SCALES.clear()
    _SCALES[key] = value
    return value


def draw_mask(
    xp: ModuleType,
    shape: tuple[int, ...],
    seed: int,
    step: int,
    k: int,
    dev: Any,
    impl: str,
    block: Block | None = None,
) -> Any:
    """The keep mask of ``shape`` (the block's part of the global mask when ``block`` is given)."""
    if block is not None and not is_whole(block, shape):
        return _kernels.block_mask(xp, shape, block, seed, step, k, dev, impl)
    flat = _kernels.select_mask(xp, impl, dev)(xp, 0, math.prod(shape), seed, step, k, dev)
    return xp.reshape(flat, shape)


def preflight(x: Any, xp: ModuleType, impl: str, noise_shape: tuple[int, ...]) -> None:
    """Select the kernel now, so that an ``impl`` that does not apply raises before the seed is taken.

    Callers skip it for ``impl="auto"``, whose selection never refuses.

    Not while torch.compile traces: the registered operator selects its kernel when it runs, and the
    first selection may build the compiled kernel under a lock, which dynamo cannot trace.
    """
    if _kernels.library_of(xp).uses_torch_operator and sys.modules["torch"].compiler.is_compiling():
        return
    if noise_shape == tuple(x.shape):
        _kernels.select(xp, x, impl)
    else:
        _kernels.select_mask(xp, impl, device(x))


def apply(
    x: Any,
    xp: ModuleType,
    seed: int,
    step: int,
    k: int,
    impl: str,
    noise_shape: tuple[int, ...],
    affine: Affine,
    block: Block | None = None,
) -> Any:
    """``where(keep, x * a + b, c)`` with the keep mask drawn on ``noise_shape`` (broadcast over x).

    ``(a, b, c)`` are exact in x's dtype; ``b = 0`` adds nothing (``-0.0`` stays).
    ``block`` places the mask in a larger (global) mask: see :mod:`xdrop._lib._sharding`.
    """
    a, b, c = affine
    whole = block is None or is_whole(block, noise_shape)  # the ordinary call pays one comparison
    lib = _kernels.library_of(xp)
    if whole and lib.uses_torch_operator:
        # Every torch call takes one path (the registered operator under compile), whose
        # backward is this same dropout of ``dout``: no mask or tensor is saved.
        return _kernels.torch_dropout(x, seed, step, k, noise_shape, a, b, c, impl)
    _kernels.refuse_traced(xp, impl, seed, step)
    if b != 0.0 or c != 0.0:  # alpha dropout: the mask, then the affine form
        keep = draw_mask(xp, noise_shape, seed, step, k, device(x), impl, block)
        kept = x * a if b == 0.0 else x * a + b  # no add where b rounds to 0 in x's dtype: keeps -0.0
        return xp.where(keep, kept, xp.asarray(c, dtype=x.dtype, device=device(x)))
    if math.isinf(a):
        # float16 with p > 1 - 2**-16. The same bits as the kernels, but autograd
        # through where(keep, x * inf, 0) would give dropped elements 0 * inf = NaN
        # gradients; the inner where gives them exactly 0, as dropout_backward does.
        keep = draw_mask(xp, noise_shape, seed, step, k, device(x), impl, block)
        return xp.where(keep, xp.where(keep, x, xp.ones_like(x)) * a, xp.zeros_like(x))
    if noise_shape == tuple(x.shape):
        if whole:
            return _kernels.select(xp, x, impl)(x, xp, seed, step, k, a)
        assert block is not None
        # torch blocks that autograd records take the mask path: where() and * carry the gradient
        recorded = lib.uses_torch_operator and x.requires_grad
        kernel = None if recorded else _kernels.select_block(xp, x, impl, block)
        if kernel is not None:  # else: the block's mask, drawn run by run
            return kernel(x, xp, seed, step, k, a)
    keep = draw_mask(xp, noise_shape, seed, step, k, device(x), impl, block)
    return xp.where(keep, x * a, xp.zeros_like(x))


def _on_local(
    x: Any, global_shape: Any, global_start: Any, call: Callable[[Any, Any, Any], tuple[Any, Any]]
) -> tuple[Any, Any]:
    """A DTensor's call: ``call(local, global_shape, global_start)`` on this rank's shard, wrapped like ``x``.

    Each rank draws its shard's block of the global mask: no communication.
    """
    local, gs, gst, wrap = unwrap_dtensor(x, global_shape, global_start)
    out, cache = call(local, gs, gst)
    return (x if out is local else wrap(out)), cache


def run(
    x: Any,
    p: Any,
    seed: Any,
    step: Any,
    impl: str,
    rule: NoiseRule | None = None,
    noise_shape: Any = None,
    global_shape: Any = None,
    global_start: Any = None,
    training: Any = True,
    alpha: bool = False,
    scale_by_keep: Any = True,
    *,
    forward: bool = False,
) -> tuple[Any, DropoutCache | None]:
    """``(out, cache)`` of a dropout-family call; the cache only for a ``forward`` (which needs a seed).

    Validates everything (the gate, then the kernel choice) before the seed is
    taken, so a rejected call never advances a Generator. ``rule`` gives the
    mask shape from x's shape; ``None`` takes ``noise_shape`` (Keras semantics).
    ``dropout`` passes its arguments by position (up to ``training``), the
    variants by keyword: keywords cost a share of a 64-element call.
    """
    if is_dtensor(x):
        noise = local_noise(noise_shape, tuple(x.shape))
        flags = {"training": training, "alpha": alpha, "scale_by_keep": scale_by_keep, "forward": forward}

        def on_shard(local: Any, gs: Any, gst: Any) -> tuple[Any, DropoutCache | None]:
            return run(local, p, seed, step, impl, rule, **flags, noise_shape=noise, global_shape=gs, global_start=gst)

        return _on_local(x, global_shape, global_start, on_shard)
    checked = check_call(
        x, p, impl=impl, noise_shape=noise_shape, rule=rule, global_shape=global_shape, global_start=global_start
    )
    assert checked is not None  # training is checked below, after scale_by_keep
    at, p, mask_shape, block = checked
    if scale_by_keep is not True:
        scale_by_keep = check_flag(scale_by_keep, "scale_by_keep")
    if training is not True and not check_flag(training, "training"):
        return x, None
    xp = at.xp
    if impl != "auto":  # "auto" never refuses: its kernel is selected when it runs
        preflight(x, xp, impl, mask_shape)
    if not (type(seed) is int and type(step) is int and 0 <= seed <= MAX_U64 and 0 <= step <= MAX_U64):
        seed, step = resolve_seed(seed, step, allow_none=not forward, traced=at.traced, xp=xp)  # else: they are
    k = keep_count(p)
    if alpha:
        affine = alpha_constants(k, float_format(xp, x.dtype))  # each rounded once to x's dtype
        grad_scale: float | None = affine[0]
    else:
        grad_scale = None if scale_by_keep else 1.0
        affine = (dropout_scale(k, xp, x.dtype) if grad_scale is None else grad_scale, 0.0, 0.0)
    out = apply(x, xp, seed, step, k, impl, mask_shape, affine, block)
    if not forward:
        return out, None
    shape = tuple(x.shape)
    return out, DropoutCache(seed, step, p, shape, x.dtype, at.name, device(x), mask_shape, grad_scale, block=block)


def forward(*args: Any, **kwargs: Any) -> tuple[Any, DropoutCache]:
    """:func:`run` (the same arguments) of a ``*_forward`` function: ``(out, cache)``, the seed required."""
    out, cache = run(*args, forward=True, **kwargs)
    assert cache is not None  # training is always on here
    return out, cache


def _local_cache(cache: DropoutCache, local: Any, gs: Any, gst: Any) -> DropoutCache:
    """The cache for a DTensor gradient's shard, which autograd may hand over with other placements.

    The forward's DTensor was the whole global array: a shard of another shape
    draws its own block of the same global mask.
    """
    fits = cache.block is not None and all(n in (1, g) for n, g in zip(cache.block.shape, gs, strict=False))
    if tuple(local.shape) == cache.shape or cache.block is None or not fits:
        return cache
    global_noise = cache.block.shape
    noise = tuple(1 if g == 1 else d for g, d in zip(global_noise, local.shape, strict=True))
    block = noise_block(Block(gs, tuple(gst)), global_noise)
    return replace(cache, shape=tuple(local.shape), noise_shape=noise, block=block)


def backward(dout: Any, cache: Any, impl: str) -> Any:
    """``dx`` for ``cache``: the forward's mask drawn again, applied to ``dout`` with ``(grad_scale, 0, 0)``."""
    if not isinstance(cache, DropoutCache):
        raise TypeError(f"cache must be the DropoutCache returned by dropout_forward, got {type(cache).__name__}")
    if is_dtensor(dout):  # the cache holds the forward's local shard: shape and block

        def on_shard(local: Any, gs: Any, gst: Any) -> tuple[Any, None]:
            return backward(local, _local_cache(cache, local, gs, gst), impl), None

        return _on_local(dout, None, None, on_shard)[0]
    check_stream_version(cache.stream_version, "cache.stream_version")
    at = check_array(dout, "dout")
    if at.name != cache.namespace:
        raise TypeError(f"dout must be a {cache.namespace} array like the forward's x, got a {at.name} array")
    if tuple(dout.shape) != cache.shape:
        raise ValueError(f"dout must have the forward's shape {cache.shape}, got dout.shape={tuple(dout.shape)}")
    if dout.dtype != cache.dtype:
        raise TypeError(f"dout must have the forward's dtype {cache.dtype}, got dout.dtype={dout.dtype}")
    # A traced dout (under jax.jit) has no concrete device to compare with an eager forward's.
    if not at.traced and device(dout) != cache.device:
        raise ValueError(f"dout must be on the forward's device {cache.device}, got device {device(dout)}")
    check_impl(impl)
    if impl != "auto":
        preflight(dout, at.xp, impl, cache.noise_shape)
    k = keep_count(cache.p)
    a = dropout_scale(k, at.xp, dout.dtype) if cache.grad_scale is None else cache.grad_scale
    return apply(dout, at.xp, cache.seed, cache.step, k, impl, cache.noise_shape, (a, 0.0, 0.0), cache.block)


_NUMPY_FLOATS = frozenset(np.dtype(t) for t in (np.float16, np.float32, np.float64))


def _numpy_plan(x: np.ndarray, p: float, seed: int, step: int) -> tuple[int, float] | None:
    """``(K, scale)`` when a NumPy call with a float p and int seed and step may skip the general path, else None.

    ``None`` (a value out of range, another dtype, an ambient placement, an overflowing
    float16 scale) leaves the call to the general path, which also raises the errors.
    """
    if x.dtype not in _NUMPY_FLOATS or not (0.0 <= p <= 1.0 and 0 <= seed <= MAX_U64 and 0 <= step <= MAX_U64):
        return None
    if ambient_placed():
        return None
    k = keep_count(p)
    scale = dropout_scale(k, np, x.dtype)  # np.finfo gives the compat namespace's format: the cache is shared
    return None if math.isinf(scale) else (k, scale)


def _check_out(out: Any, x: Any) -> None:
    """``out`` must be a writeable NumPy array of x's shape and dtype, and x a NumPy array (checked first)."""
    if type(x) is not np.ndarray:
        check_array(x)  # a bad x is named as such first
        raise TypeError(f"out= is supported for NumPy arrays only, got x of type {type(x).__name__}")
    if type(out) is not np.ndarray:
        raise TypeError(f"out must be a NumPy array of x's shape and dtype, got out of type {type(out).__name__}")
    if out.dtype != x.dtype:
        raise TypeError(f"out must have x's dtype {x.dtype}, got out.dtype={out.dtype}")
    if out.shape != x.shape:
        raise ValueError(f"out must have x's shape {x.shape}, got out.shape={out.shape}")
    if not out.flags.writeable:
        raise ValueError("out must be writeable, got a read-only out")


def numpy_call(
    x: Any,
    p: Any,
    seed: Any,
    step: Any,
    training: Any,
    noise_shape: Any,
    impl: str,
    global_shape: Any,
    global_start: Any,
    out: Any,
    plain: bool,
) -> Any:
    """``dropout`` with the plainest arguments or ``out=``: the fast paths, else :func:`run`.

    ``plain`` says that ``x`` is a NumPy array, p a float, seed and step ints
    and every other argument its default (``dropout`` tests it inline, so the
    other calls pay no call to learn that). Those arguments skip
    asking for x's namespace (array-api-compat's NumPy wrapper, whose first
    import costs about 100 ms, would dominate a first call) and the checks
    these types have passed already: the general path's kernel and bits.
    With ``out``, the kernel writes it itself where the short path applies and
    ``x`` and ``out`` are C-contiguous and share no memory; otherwise (``out``
    is ``x``, or overlaps it, or another layout or argument) the result is
    computed as without ``out`` and copied in. Every check runs before ``out``
    is touched.
    """
    if out is not None:
        _check_out(out, x)
        if (
            plain
            and x.flags.c_contiguous
            and out.flags.c_contiguous
            and not np.may_share_memory(x, out)
            and (plan := _numpy_plan(x, p, seed, step)) is not None
        ):
            return _kernels.host_dropout_into(x, out, seed, step, *plan)
        args = (training, noise_shape, impl, global_shape, global_start)
        np.copyto(out, numpy_call(x, p, seed, step, *args, None, plain))
        return out
    if plain and (plan := _numpy_plan(x, p, seed, step)) is not None:
        return _kernels.auto_kernel()(x, np, seed, step, *plan)
    return run(x, p, seed, step, impl, None, noise_shape, global_shape, global_start, training)[0]
