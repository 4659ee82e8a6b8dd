"""Inverted dropout on any standard namespace: the public functions."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, replace
from types import ModuleType
from typing import Any

import numpy as np

from . import _kernels
from ._checks import (
    check_array,
    check_call,
    check_device,
    check_impl,
    check_mask_memory,
    check_mask_size,
    check_noise_shape,
    check_probability,
    check_shape,
    check_u64,
)
from ._compat import array_namespace, device
from ._generator import Generator
from ._sharding import (
    Block,
    ambient_placed,
    is_dtensor,
    is_whole,
    local_noise,
    noise_block,
    resolve_block,
    unwrap_dtensor,
)
from ._stream import STREAM_VERSION, check_stream_version, keep_count, scale_for
from ._values import MAX_U64

SeedLike = int | Generator | None


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
    recomputes the call (see :mod:`xdrop._replay`).
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
            return lo | hi << 32, step
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


def _scale(k: int, xp: ModuleType, dtype: Any) -> float:
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


def _mask(
    xp: ModuleType,
    shape: tuple[int, ...],
    seed: int,
    step: int,
    k: int,
    dev: Any,
    impl: str,
    block: Block | None = None,
) -> Any:
    if block is not None and not is_whole(block, shape):
        return _kernels.block_mask(xp, shape, block, seed, step, k, dev, impl)
    flat = _kernels.select_mask(xp, impl, dev)(xp, 0, math.prod(shape), seed, step, k, dev)
    return xp.reshape(flat, shape)


def _preflight(x: Any, xp: ModuleType, impl: str, noise_shape: tuple[int, ...]) -> None:
    """Select the kernel now, so that an ``impl`` that does not apply raises before the seed is taken.

    Not while torch.compile traces: the registered operator selects its kernel when it runs, and the
    first selection may build the compiled kernel under a lock, which dynamo cannot trace.
    """
    if impl == "auto":  # selection for "auto" never refuses: skip it (the kernel is selected when it runs)
        return
    if _kernels.library_of(xp).uses_torch_operator and sys.modules["torch"].compiler.is_compiling():
        return
    if noise_shape == tuple(x.shape):
        _kernels.select(xp, x, impl)
    else:
        _kernels.select_mask(xp, impl, device(x))


def _apply(
    x: Any,
    xp: ModuleType,
    seed: int,
    step: int,
    p: float,
    impl: str,
    noise_shape: tuple[int, ...],
    scale: float | None = None,
    block: Block | None = None,
) -> Any:
    """Dropout of ``x`` with the mask drawn on ``noise_shape`` (broadcast over x).

    ``scale`` (exact in x's dtype) replaces the inverted-dropout scale when given.
    ``block`` places the mask in a larger (global) mask: see :mod:`xdrop._sharding`.
    """
    k = keep_count(p)
    whole = block is None or is_whole(block, noise_shape)  # the ordinary call pays one comparison
    lib = _kernels.library_of(xp)
    if whole and lib.uses_torch_operator:
        # Every torch call takes one path (the registered operator under compile), whose
        # backward is this same dropout of ``dout``: no mask or tensor is saved.
        a = _scale(k, xp, x.dtype) if scale is None else scale
        return _kernels.torch_dropout(x, seed, step, k, noise_shape, a, 0.0, 0.0, impl)
    _kernels.refuse_traced(xp, impl, seed, step)
    scale = _scale(k, xp, x.dtype) if scale is None else scale
    if math.isinf(scale):
        # float16 with p > 1 - 2**-16. The same bits as the kernels, but autograd
        # through where(keep, x * inf, 0) would give dropped elements 0 * inf = NaN
        # gradients; the inner where gives them exactly 0, as dropout_backward does.
        keep = _mask(xp, noise_shape, seed, step, k, device(x), impl, block)
        return xp.where(keep, xp.where(keep, x, xp.ones_like(x)) * scale, xp.zeros_like(x))
    if noise_shape == tuple(x.shape):
        if whole:
            return _kernels.select(xp, x, impl)(x, xp, seed, step, k, scale)
        assert block is not None
        # torch blocks that autograd records take the mask path: where() and * carry the gradient
        recorded = lib.uses_torch_operator and x.requires_grad
        kernel = None if recorded else _kernels.select_block(xp, x, impl, block)
        if kernel is not None:  # else: the block's mask, drawn run by run
            return kernel(x, xp, seed, step, k, scale)
    keep = _mask(xp, noise_shape, seed, step, k, device(x), impl, block)
    return xp.where(keep, x * scale, xp.zeros_like(x))


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
    scale = _scale(k, np, x.dtype)  # np.finfo gives the compat namespace's format: the cache is shared
    return None if math.isinf(scale) else (k, scale)


def _numpy_dropout(x: np.ndarray, p: float, seed: Any, step: Any) -> Any:  # int seed and step (the caller checks)
    """``dropout(x, p, seed=seed, step=step)`` of a NumPy array with a float p and int seed and step, or None.

    The general path's kernel and bits, without asking for x's namespace (array-api-compat's
    NumPy wrapper, whose first import costs about 100 ms, would dominate a first call) and
    without the checks these argument types have passed already.
    """
    plan = _numpy_plan(x, p, seed, step)
    return None if plan is None else _kernels.auto_kernel()(x, np, seed, step, *plan)


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


def _dropout_into(out: Any, x: Any, p: Any, seed: Any, step: Any, plain: bool, **kw: Any) -> Any:
    """``dropout(x, ..., out=out)``: the result written into ``out``, which is returned.

    The kernel writes ``out`` itself where the short path applies (``plain`` arguments) and
    ``x`` and ``out`` are C-contiguous and share no memory; otherwise (``out`` is ``x``, or
    overlaps it, or another layout or argument) the result is computed as without ``out``
    and copied in. Every check runs before ``out`` is touched.
    """
    _check_out(out, x)
    if (
        plain
        and x.flags.c_contiguous
        and out.flags.c_contiguous
        and not np.may_share_memory(x, out)
        and (plan := _numpy_plan(x, p, seed, step)) is not None
    ):
        return _kernels.host_dropout_into(x, out, seed, step, *plan)
    np.copyto(out, dropout(x, p, seed=seed, step=step, **kw))
    return out


def dropout(
    x: Any,
    p: float = 0.5,
    *,
    seed: SeedLike = None,
    step: int = 0,
    training: bool = True,
    noise_shape: Any = None,
    impl: str = "auto",
    global_shape: Any = None,
    global_start: Any = None,
    out: Any = None,
) -> Any:
    """Inverted dropout: zero each element with probability ``p``, scale the rest.

    Kept elements are multiplied by ``1 / keep``, where ``keep`` is the keep
    probability the 32-bit threshold really implements, so ``E[out] = x``.
    The decision for each element depends only on ``(seed, step, index, p)``
    (stream spec v1): the same on every backend, device, dtype and layout.

    Parameters
    ----------
    x : array
        A real floating array of any standard namespace (NumPy, PyTorch, CuPy,
        JAX, Dask, array-api-strict). It is never modified.
    p : float, optional
        Probability of *dropping* an element, in ``[0, 1]`` (as in
        ``torch.nn.functional.dropout``). Resolution 2**-32.
    seed : int, Generator or None, optional
        A seed in ``[0, 2**64)``; a :class:`Generator`, whose step is used and
        advanced; or ``None``: on a torch tensor a seed drawn from torch's default
        generator (``torch.manual_seed`` reproduces it; ``torch.utils.checkpoint``
        replays it), elsewhere fresh OS entropy (not reproducible).
    step : int, optional
        A step in ``[0, 2**64)``: a second counter, e.g. the training
        iteration, so one seed gives independent masks at every step.
    training : bool, optional
        If false, return ``x`` itself (dropout is the identity at inference).
    noise_shape : tuple, optional
        Shape of the mask, one entry per axis of ``x``: ``None`` takes x's
        size, 1 shares one decision along that axis (Keras semantics). The
        stream's flat indices run over this shape.
    impl : {"auto", "reference"}, optional
        ``"reference"`` forces the pure-standard implementation.
    global_shape, global_start : tuple of int, optional
        Both or neither: ``x`` is the block of a row-major array of shape
        ``global_shape`` that starts at index ``global_start`` along each axis
        (a shard, a chunk, a rank's slice of the batch), and gets exactly that
        block of the whole array's mask. With a ``noise_shape``, an entry of 1
        shares decisions along that axis of the global array. Under JAX
        tracing the starts may be traced unsigned integers.
    out : numpy.ndarray, optional
        NumPy arrays only: a writeable array of x's shape and dtype to write
        the result into (as a NumPy ufunc's ``out``), which is returned. Saves
        the allocation, and the first touch of new memory, that each call
        otherwise pays. It may be ``x`` itself or overlap it (then the result
        is computed and copied in). With ``training=False`` it receives a copy
        of ``x``.

    Returns
    -------
    array
        Same namespace, device, dtype and shape as ``x`` (``out``, when given).
        Dropped elements are exactly ``+0``, also where ``x`` is NaN or infinite.

    Raises
    ------
    TypeError
        If ``x`` is not a real floating array, or ``p``, ``seed`` or ``step``
        has the wrong type.
    ValueError
        If ``p`` is outside ``[0, 1]`` or NaN, or ``seed`` or ``step`` is out of range.

    See Also
    --------
    dropout_forward, dropout_backward, keep_mask

    Examples
    --------
    >>> import numpy as np
    >>> import xdrop
    >>> xdrop.dropout(np.ones(8, dtype=np.float32), 0.5, seed=7)
    array([0., 0., 2., 2., 2., 0., 2., 0.], dtype=float32)

    The same seed gives the same bits on any backend, e.g. PyTorch:

    >>> import torch  # doctest: +SKIP
    >>> xdrop.dropout(torch.ones(8), 0.5, seed=7)  # doctest: +SKIP
    tensor([0., 0., 2., 2., 2., 0., 2., 0.])

    A block of a larger array gets that block of the larger array's mask:

    >>> xdrop.dropout(np.ones(3, dtype=np.float32), 0.5, seed=7, global_shape=(8,), global_start=(4,))
    array([2., 0., 2.], dtype=float32)

    A NumPy result can go into an array you keep, e.g. one buffer for every step:

    >>> buf = np.empty(8, dtype=np.float32)
    >>> xdrop.dropout(np.ones(8, dtype=np.float32), 0.5, seed=7, out=buf) is buf
    True
    >>> buf
    array([0., 0., 2., 2., 2., 0., 2., 0.], dtype=float32)
    """
    # A NumPy array with the plainest arguments may take the short path (with or without out=).
    plain = (
        type(x) is np.ndarray
        and type(p) is float
        and type(seed) is int
        and type(step) is int
        and training is True
        and impl == "auto"
        and noise_shape is None
        and global_shape is None
        and global_start is None
    )
    if out is not None:
        kw = {
            "training": training,
            "noise_shape": noise_shape,
            "impl": impl,
            "global_shape": global_shape,
            "global_start": global_start,
        }
        return _dropout_into(out, x, p, seed, step, plain, **kw)
    if plain and (result := _numpy_dropout(x, p, seed, step)) is not None:
        return result
    if is_dtensor(x):  # each rank draws its shard's block of the global mask
        local, gs, gst, wrap = unwrap_dtensor(x, global_shape, global_start)
        kw = {"training": training, "noise_shape": local_noise(noise_shape, tuple(x.shape)), "impl": impl}
        out = dropout(local, p, seed=seed, step=step, **kw, global_shape=gs, global_start=gst)
        return x if out is local else wrap(out)
    checked = check_call(
        x,
        p,
        impl=impl,
        training=training,
        noise_shape=noise_shape,
        global_shape=global_shape,
        global_start=global_start,
    )
    if checked is None:
        return x
    at, p, mask_shape, block = checked
    _preflight(x, at.xp, impl, mask_shape)
    seed, step = resolve_seed(seed, step, traced=at.traced, xp=at.xp)
    return _apply(x, at.xp, seed, step, p, impl, mask_shape, None, block)


def dropout_forward(
    x: Any,
    p: float,
    *,
    seed: int | Generator,
    step: int = 0,
    noise_shape: Any = None,
    impl: str = "auto",
    global_shape: Any = None,
    global_start: Any = None,
) -> tuple[Any, DropoutCache]:
    """Training-mode dropout that also returns what backward needs.

    Parameters
    ----------
    x : array
        A real floating array; never modified.
    p : float
        Probability of dropping an element, in ``[0, 1]``.
    seed : int or Generator
        A seed in ``[0, 2**64)`` or a :class:`Generator`.
    step : int, optional
        A step in ``[0, 2**64)``.
    noise_shape : tuple, optional
        Shape of the mask, as in :func:`dropout`.
    impl : {"auto", "reference"}, optional
        ``"reference"`` forces the pure-standard implementation.
    global_shape, global_start : tuple of int, optional
        ``x`` is a block of a larger array, as in :func:`dropout`.

    Returns
    -------
    out : array
        As :func:`dropout`.
    cache : DropoutCache
        ``(seed, step, p, shape, dtype, namespace, device)``: no O(n) mask.

    Examples
    --------
    >>> import numpy as np
    >>> import xdrop
    >>> x = np.arange(1.0, 5.0)
    >>> out, cache = xdrop.dropout_forward(x, 0.5, seed=3)
    >>> out
    array([0., 4., 0., 0.])
    >>> xdrop.dropout_backward(np.ones(4), cache)
    array([0., 2., 0., 0.])
    """
    if is_dtensor(x):
        local, gs, gst, wrap = unwrap_dtensor(x, global_shape, global_start)
        noise = local_noise(noise_shape, tuple(x.shape))
        kw = {"noise_shape": noise, "impl": impl, "global_shape": gs, "global_start": gst}
        out, cache = dropout_forward(local, p, seed=seed, step=step, **kw)
        return wrap(out), cache
    checked = check_call(x, p, impl=impl, noise_shape=noise_shape, global_shape=global_shape, global_start=global_start)
    assert checked is not None  # training is always on here
    at, p, mask_shape, block = checked
    _preflight(x, at.xp, impl, mask_shape)
    seed, step = resolve_seed(seed, step, allow_none=False, traced=at.traced, xp=at.xp)
    out = _apply(x, at.xp, seed, step, p, impl, mask_shape, None, block)
    cache = DropoutCache(seed, step, p, tuple(x.shape), x.dtype, at.name, device(x), mask_shape, block=block)
    return out, cache


def dropout_backward(dout: Any, cache: DropoutCache, *, impl: str = "auto") -> Any:
    """Gradient of :func:`dropout_forward` and its variants: ``dx = dout * mask / keep``.

    The mask is regenerated from the cache, so ``dx`` equals dropout applied to
    ``dout`` with the forward's seed, step and p, bit for bit. For the caches of
    the variants (:func:`dropout2d_forward`, :func:`alpha_dropout_forward`,
    ...) the mask is the variant's and the factor is ``cache.grad_scale``.

    Parameters
    ----------
    dout : array
        Upstream gradient: same shape, dtype, namespace and device as the
        forward's ``x``. Never modified.
    cache : DropoutCache
        The second result of :func:`dropout_forward` or of a variant's ``*_forward``.
    impl : {"auto", "reference"}, optional
        ``"reference"`` forces the pure-standard implementation.

    Returns
    -------
    array
        ``dx``, like ``dout``.

    Examples
    --------
    >>> import numpy as np
    >>> import xdrop
    >>> out, cache = xdrop.dropout_forward(np.ones(4), 0.25, seed=1)
    >>> bool((xdrop.dropout_backward(np.ones(4), cache) == out).all())
    True
    """
    if not isinstance(cache, DropoutCache):
        raise TypeError(f"cache must be the DropoutCache returned by dropout_forward, got {type(cache).__name__}")
    if is_dtensor(dout):  # the cache holds the forward's local shard: shape and block
        local, gs, gst, wrap = unwrap_dtensor(dout, None, None)
        fits = cache.block is not None and all(n in (1, g) for n, g in zip(cache.block.shape, gs, strict=False))
        if tuple(local.shape) != cache.shape and cache.block is not None and fits:
            # autograd may hand the gradient over with other placements: draw dout's own block
            # of the same global mask (the forward's DTensor was the whole global array)
            global_noise = cache.block.shape
            noise = tuple(1 if g == 1 else d for g, d in zip(global_noise, local.shape, strict=True))
            block = noise_block(Block(gs, tuple(gst)), global_noise)
            cache = replace(cache, shape=tuple(local.shape), noise_shape=noise, block=block)
        return wrap(dropout_backward(local, cache, impl=impl))
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
    _preflight(dout, at.xp, impl, cache.noise_shape)
    return _apply(dout, at.xp, cache.seed, cache.step, cache.p, impl, cache.noise_shape, cache.grad_scale, cache.block)


def keep_mask(
    shape: Any,
    p: float,
    *,
    seed: int | Generator,
    step: int = 0,
    xp: ModuleType,
    device: Any = None,
    impl: str = "auto",
    global_shape: Any = None,
    global_start: Any = None,
) -> Any:
    """The boolean keep mask that :func:`dropout` uses for an array of ``shape``.

    Parameters
    ----------
    shape : tuple of int
        The mask's shape; flat row-major indices in it select the stream.
    p : float
        Probability of dropping, in ``[0, 1]``.
    seed : int or Generator
        A seed in ``[0, 2**64)`` or a :class:`Generator`.
    step : int, optional
        A step in ``[0, 2**64)``.
    xp : namespace
        The array namespace to build the mask in (a module such as ``numpy``
        or ``torch``, or its array-api-compat wrapper).
    device : optional
        Device to build the mask on.
    impl : {"auto", "reference"}, optional
        ``"reference"`` forces the pure-standard implementation.
    global_shape, global_start : tuple of int, optional
        The mask is the block at ``global_start`` of the mask of an array of
        ``global_shape``, as in :func:`dropout`.

    Returns
    -------
    array
        ``bool`` array of ``shape``: True where the element is kept.

    Examples
    --------
    >>> import numpy as np
    >>> import xdrop
    >>> xdrop.keep_mask((2, 4), 0.5, seed=7, xp=np)
    array([[False, False,  True,  True],
           [ True, False,  True, False]])
    """
    shape = check_shape(shape)
    n = check_mask_size(shape)
    p = check_probability(p)
    if not isinstance(xp, ModuleType) or not callable(getattr(xp, "empty", None)):
        raise TypeError(f"xp must be an array namespace module, got xp={xp!r}")
    xp = array_namespace(xp.empty(0))
    check_device(xp, device)
    check_impl(impl)
    block = resolve_block(xp, shape, global_shape, global_start, impl, lambda s: s, "shape")
    if not _kernels.library_of(xp).lazy:  # an eager mask is allocated now: refuse one that cannot fit
        check_mask_memory(shape, n)
    kernel = _kernels.select_mask(xp, impl, device)
    seed, step = resolve_seed(seed, step, allow_none=False, xp=xp)
    if block is not None and not is_whole(block, shape):
        return _kernels.block_mask(xp, shape, block, seed, step, keep_count(p), device, impl)
    return xp.reshape(kernel(xp, 0, n, seed, step, keep_count(p), device), shape)
