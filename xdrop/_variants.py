"""The dropout family: channel dropout, alpha dropout and drop path.

Every variant draws its keep decisions from stream spec v1 on a *noise shape*
(Keras semantics, see ``docs/stream-spec.md``): one decision per (sample,
channel) for ``dropout1d/2d/3d`` and ``feature_alpha_dropout``, one per sample
for ``drop_path``, one per element for ``alpha_dropout``. So each is the same
bits on every backend, and its gradient is :func:`xdrop.dropout_backward` of
the cache its ``*_forward`` returns: the mask is regenerated, never stored.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from types import FrameType
from typing import Any

from . import _kernels
from ._arith import alpha_constants, float_format
from ._checks import check_call, check_flag
from ._compat import device, is_torch_namespace
from ._dropout import DropoutCache, SeedLike, _apply, _mask, _preflight, resolve_seed
from ._generator import Generator
from ._sharding import is_dtensor, is_whole, local_noise, unwrap_dtensor
from ._stream import keep_count

NoiseRule = Callable[[tuple[int, ...]], tuple[int, ...]]

_SPATIAL_NAMES = {1: "L", 2: "H, W", 3: "D, H, W"}


class RankError(ValueError, RuntimeError):
    """An input of a rank the function does not take.

    A ``ValueError``, as xdrop raises for bad values, and a ``RuntimeError``, as
    PyTorch raises for the same inputs: ``except`` clauses written for either catch it.
    """


def _user_stacklevel() -> int:
    """The ``stacklevel`` of the first frame outside xdrop and torch, so a warning names the caller's line."""
    here, torch_dir = os.path.dirname(os.path.abspath(__file__)), f"{os.sep}torch{os.sep}"
    frame: FrameType | None = sys._getframe(1)
    level = 1
    while frame is not None and (frame.f_code.co_filename.startswith(here) or torch_dir in frame.f_code.co_filename):
        frame, level = frame.f_back, level + 1
    return level


def _deprecated_rank(name: str, ndim: int, spatial: int) -> None:
    # PyTorch 2.x's wording, so code that filters its warnings filters these too.
    warnings.warn(
        f"{name}: Received a {ndim}-D input to {name}, which is deprecated and will result in an error in a "
        "future release. To retain the behavior and silence this warning, please use dropout instead. Note that "
        f"{name} exists to provide channel-wise dropout on inputs with {spatial} spatial dimensions, a channel "
        f"dimension, and an optional batch dimension (i.e. {spatial + 1}D or {spatial + 2}D inputs).",
        UserWarning,
        stacklevel=_user_stacklevel(),
    )


DATA_FORMATS = ("channels_first", "channels_last")


def channel_noise_shape(
    shape: tuple[int, ...], spatial: int, name: str, data_format: str = "channels_first"
) -> tuple[int, ...]:
    """One decision per (sample, channel): PyTorch 2.x's ``dropout{1,2,3}d`` rank rules.

    ``spatial + 2`` dims are ``(N, C, *spatial)``; ``spatial + 1`` dims are the
    unbatched ``(C, *spatial)``, whose flat mask indices equal those of the
    batched input with ``N = 1``. As in PyTorch: ``dropout1d`` takes only those
    ranks; ``dropout2d`` reads a 3-d input as ``(N, C, L)`` and any other rank
    >= 2 as ``(N, C, ...)``, ``dropout3d`` any rank >= 1 other than 5 as
    unbatched, each with PyTorch's ``UserWarning``.
    A rank that PyTorch refuses raises :class:`RankError`.

    ``data_format="channels_last"`` (Keras' ``SpatialDropout``): ``(N, *spatial, C)``
    or ``(*spatial, C)`` only, noise shape ``(N, 1, ..., 1, C)``.
    """
    if not isinstance(data_format, str) or data_format not in DATA_FORMATS:
        raise ValueError(f"data_format must be one of {DATA_FORMATS}, got data_format={data_format!r}")
    if data_format == "channels_last":
        dims = _SPATIAL_NAMES[spatial]
        if len(shape) not in (spatial + 1, spatial + 2):
            raise RankError(
                f"{name} expects x with {spatial + 1} dims ({dims}, C) or {spatial + 2} dims (N, {dims}, C), "
                f"got x.ndim={len(shape)} (x.shape={shape})"
            )
        return shape[: len(shape) - spatial - 1] + (1,) * spatial + shape[-1:]
    dims, ndim = _SPATIAL_NAMES[spatial], len(shape)
    expected = (
        f"{name} expects x with {spatial + 1} dims (C, {dims}) or {spatial + 2} dims (N, C, {dims}), "
        f"got x.ndim={ndim} (x.shape={shape})"
    )
    if spatial == 1 and ndim not in (2, 3):
        raise RankError(f"{expected}; as PyTorch: {name}: Expected 2D or 3D input, but received a {ndim}D input.")
    unbatched = ndim != spatial + 2 and spatial != 2  # dropout2d reads every rank as batched
    feature_dims = ndim + 1 if unbatched else ndim
    if feature_dims < 2:
        raise RankError(f"{expected}; PyTorch's feature dropout needs at least 2 dimensions (N, C, ...)")
    if ndim not in (spatial + 1, spatial + 2):
        _deprecated_rank(name, ndim, spatial)
    if spatial == 2 and ndim == 3:
        warnings.warn(
            "dropout2d: Received a 3D input to dropout2d and assuming that channel-wise 1D dropout behavior is "
            "desired - input is interpreted as shape (N, C, L), where C is the channel dim. This behavior will "
            "change in a future release to interpret the input as one without a batch dimension, i.e. shape "
            "(C, H, W). To maintain the 1D channel-wise dropout behavior, please switch to using dropout1d instead.",
            UserWarning,
            stacklevel=_user_stacklevel(),
        )
    if unbatched:
        return shape[:1] + (1,) * (ndim - 1)
    return shape[:2] + (1,) * (ndim - 2)


def feature_noise_shape(shape: tuple[int, ...], name: str) -> tuple[int, ...]:
    """``(N, C, 1, ...)``: axis 0 is samples and axis 1 channels, whatever the rank (as PyTorch)."""
    if len(shape) < 2:
        raise RankError(f"{name} expects x with at least 2 dims (N, C, ...), got x.ndim={len(shape)} (x.shape={shape})")
    return shape[:2] + (1,) * (len(shape) - 2)


def sample_noise_shape(shape: tuple[int, ...], name: str) -> tuple[int, ...]:
    """``(N, 1, ...)``: one decision per sample (axis 0)."""
    if len(shape) < 1:
        raise RankError(f"{name} expects x with at least 1 dim (N, ...), got x.ndim=0 (x.shape=())")
    return shape[:1] + (1,) * (len(shape) - 1)


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
    if alpha and is_torch_namespace(xp) and is_whole(block, noise_shape):  # the one torch path: no mask kept
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


# -- dropout1d / dropout2d / dropout3d --------------------------------------------------------------


def dropout1d(
    x: Any,
    p: float = 0.5,
    *,
    seed: SeedLike = None,
    step: int = 0,
    training: bool = True,
    data_format: str = "channels_first",
    impl: str = "auto",
    global_shape: Any = None,
    global_start: Any = None,
) -> Any:
    """Channel dropout for ``(N, C, L)`` or unbatched ``(C, L)``: whole channels are zeroed.

    One keep decision per (sample, channel), drawn from the stream on the noise
    shape ``(N, C, 1)`` (``(C, 1)`` unbatched, which gives the same decisions as
    ``N = 1``). Kept channels are scaled by ``1 / keep``, as in :func:`xdrop.dropout`.
    PyTorch's ``torch.nn.functional.dropout1d`` semantics.

    Parameters
    ----------
    x : array
        Real floating, 2 or 3 dims. Never modified.
    p : float, optional
        Probability of dropping a channel, in ``[0, 1]``.
    seed : int, Generator or None, optional
        As in :func:`xdrop.dropout`.
    step : int, optional
        As in :func:`xdrop.dropout`.
    training : bool, optional
        If false, return ``x`` itself.
    data_format : {"channels_first", "channels_last"}, optional
        Where the channel axis is: ``"channels_first"`` (PyTorch, the default)
        reads ``x`` as ``(N, C, ...)``; ``"channels_last"`` (Keras' ``SpatialDropout``)
        as ``(N, ..., C)``, with noise shape ``(N, 1, ..., 1, C)``. The bits are those of
        :func:`xdrop.dropout` with that noise shape.
    impl : {"auto", "reference"}, optional
        ``"reference"`` forces the pure-standard implementation.
    global_shape, global_start : tuple of int, optional
        ``x`` is the block at ``global_start`` of an array of ``global_shape``,
        as in :func:`xdrop.dropout`; the noise shape is the global one's block.

    Returns
    -------
    array
        Like ``x``.

    Raises
    ------
    ValueError
        If ``x`` does not have 2 or 3 dims (the message names both), or ``p``,
        ``seed`` or ``step`` is out of range.

    Examples
    --------
    >>> import numpy as np
    >>> import xdrop
    >>> xdrop.dropout1d(np.ones((2, 3, 4)), 0.5, seed=5)
    array([[[0., 0., 0., 0.],
            [2., 2., 2., 2.],
            [0., 0., 0., 0.]],
    <BLANKLINE>
           [[0., 0., 0., 0.],
            [2., 2., 2., 2.],
            [2., 2., 2., 2.]]])
    """
    return _run(
        x,
        p,
        seed,
        step,
        impl,
        _channel_rule(1, data_format),
        training=training,
        global_shape=global_shape,
        global_start=global_start,
    )[0]


def dropout1d_forward(
    x: Any,
    p: float,
    *,
    seed: int | Generator,
    step: int = 0,
    data_format: str = "channels_first",
    impl: str = "auto",
    global_shape: Any = None,
    global_start: Any = None,
) -> tuple[Any, DropoutCache]:
    """:func:`dropout1d` in training mode, also returning the cache for :func:`xdrop.dropout_backward`.

    Parameters
    ----------
    x, p, step, data_format, impl, global_shape, global_start
        As in :func:`dropout1d`.
    seed : int or Generator
        Required (no OS entropy): backward regenerates the mask from it.

    Returns
    -------
    out : array
        As :func:`dropout1d`.
    cache : DropoutCache
        O(1) in the size of ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> import xdrop
    >>> out, cache = xdrop.dropout1d_forward(np.ones((3, 2)), 0.5, seed=1)
    >>> bool((xdrop.dropout_backward(np.ones((3, 2)), cache) == out).all())
    True
    """
    return _forward(
        x, p, seed, step, impl, _channel_rule(1, data_format), global_shape=global_shape, global_start=global_start
    )


def dropout2d(
    x: Any,
    p: float = 0.5,
    *,
    seed: SeedLike = None,
    step: int = 0,
    training: bool = True,
    data_format: str = "channels_first",
    impl: str = "auto",
    global_shape: Any = None,
    global_start: Any = None,
) -> Any:
    """Channel dropout for ``(N, C, H, W)`` or unbatched ``(C, H, W)``.

    One keep decision per (sample, channel) on the noise shape ``(N, C, 1, 1)``.
    As PyTorch 2.x does, a 3-d input is read as ``(N, C, L)`` with PyTorch's
    ``UserWarning`` (use :func:`dropout1d` for that, or add the batch axis to a
    ``(C, H, W)`` input), and other ranks >= 2 as ``(N, C, ...)`` with its
    deprecation warning.

    Parameters
    ----------
    x : array
        Real floating, 4 dims (other ranks >= 2 with a warning). Never modified.
    p : float, optional
        Probability of dropping a channel, in ``[0, 1]``.
    seed : int, Generator or None, optional
        As in :func:`xdrop.dropout`.
    step : int, optional
        As in :func:`xdrop.dropout`.
    training : bool, optional
        If false, return ``x`` itself.
    data_format : {"channels_first", "channels_last"}, optional
        Where the channel axis is: ``"channels_first"`` (PyTorch, the default)
        reads ``x`` as ``(N, C, ...)``; ``"channels_last"`` (Keras' ``SpatialDropout``)
        as ``(N, ..., C)``, with noise shape ``(N, 1, ..., 1, C)``. The bits are those of
        :func:`xdrop.dropout` with that noise shape.
    impl : {"auto", "reference"}, optional
        ``"reference"`` forces the pure-standard implementation.
    global_shape, global_start : tuple of int, optional
        ``x`` is the block at ``global_start`` of an array of ``global_shape``,
        as in :func:`xdrop.dropout`; the noise shape is the global one's block.

    Returns
    -------
    array
        Like ``x``.

    Raises
    ------
    RankError
        (a ``ValueError`` and a ``RuntimeError``) if ``x`` has fewer than 2 dims.
    ValueError
        If an argument is out of range.

    Examples
    --------
    >>> import numpy as np
    >>> import xdrop
    >>> out = xdrop.dropout2d(np.ones((2, 3, 4, 4)), 0.5, seed=5)
    >>> out[:, :, 0, 0]
    array([[0., 2., 0.],
           [0., 2., 2.]])
    >>> bool((out == out[:, :, :1, :1]).all())
    True
    """
    return _run(
        x,
        p,
        seed,
        step,
        impl,
        _channel_rule(2, data_format),
        training=training,
        global_shape=global_shape,
        global_start=global_start,
    )[0]


def dropout2d_forward(
    x: Any,
    p: float,
    *,
    seed: int | Generator,
    step: int = 0,
    data_format: str = "channels_first",
    impl: str = "auto",
    global_shape: Any = None,
    global_start: Any = None,
) -> tuple[Any, DropoutCache]:
    """:func:`dropout2d` in training mode, also returning the cache for :func:`xdrop.dropout_backward`.

    Parameters
    ----------
    x, p, step, data_format, impl, global_shape, global_start
        As in :func:`dropout2d`.
    seed : int or Generator
        Required: backward regenerates the mask from it.

    Returns
    -------
    out : array
        As :func:`dropout2d`.
    cache : DropoutCache
        O(1) in the size of ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> import xdrop
    >>> out, cache = xdrop.dropout2d_forward(np.ones((1, 3, 2, 2)), 0.5, seed=1)
    >>> cache.noise_shape
    (1, 3, 1, 1)
    """
    return _forward(
        x, p, seed, step, impl, _channel_rule(2, data_format), global_shape=global_shape, global_start=global_start
    )


def dropout3d(
    x: Any,
    p: float = 0.5,
    *,
    seed: SeedLike = None,
    step: int = 0,
    training: bool = True,
    data_format: str = "channels_first",
    impl: str = "auto",
    global_shape: Any = None,
    global_start: Any = None,
) -> Any:
    """Channel dropout for ``(N, C, D, H, W)`` or unbatched ``(C, D, H, W)``.

    One keep decision per (sample, channel) on the noise shape
    ``(N, C, 1, 1, 1)`` (``(C, 1, 1, 1)`` unbatched).

    Parameters
    ----------
    x : array
        Real floating, 4 or 5 dims (other ranks >= 1 with PyTorch's deprecation
        warning, read as unbatched). Never modified.
    p : float, optional
        Probability of dropping a channel, in ``[0, 1]``.
    seed : int, Generator or None, optional
        As in :func:`xdrop.dropout`.
    step : int, optional
        As in :func:`xdrop.dropout`.
    training : bool, optional
        If false, return ``x`` itself.
    data_format : {"channels_first", "channels_last"}, optional
        Where the channel axis is: ``"channels_first"`` (PyTorch, the default)
        reads ``x`` as ``(N, C, ...)``; ``"channels_last"`` (Keras' ``SpatialDropout``)
        as ``(N, ..., C)``, with noise shape ``(N, 1, ..., 1, C)``. The bits are those of
        :func:`xdrop.dropout` with that noise shape.
    impl : {"auto", "reference"}, optional
        ``"reference"`` forces the pure-standard implementation.
    global_shape, global_start : tuple of int, optional
        ``x`` is the block at ``global_start`` of an array of ``global_shape``,
        as in :func:`xdrop.dropout`; the noise shape is the global one's block.

    Returns
    -------
    array
        Like ``x``.

    Raises
    ------
    RankError
        (a ``ValueError`` and a ``RuntimeError``) if ``x`` is 0-d.
    ValueError
        If an argument is out of range.

    Examples
    --------
    >>> import numpy as np
    >>> import xdrop
    >>> xdrop.dropout3d(np.ones((4, 1, 1, 2)), 0.5, seed=7)[:, 0, 0, 0]
    array([0., 0., 2., 2.])

    Channels last, as Keras' ``SpatialDropout3D``: the mask has shape ``(N, 1, 1, 1, C)``.

    >>> out = xdrop.dropout3d(np.ones((1, 2, 2, 2, 4)), 0.5, seed=7, data_format="channels_last")
    >>> out[0, 0, 0, 0]
    array([0., 0., 2., 2.])
    >>> bool((out == out[:, :1, :1, :1, :]).all())
    True
    """
    return _run(
        x,
        p,
        seed,
        step,
        impl,
        _channel_rule(3, data_format),
        training=training,
        global_shape=global_shape,
        global_start=global_start,
    )[0]


def dropout3d_forward(
    x: Any,
    p: float,
    *,
    seed: int | Generator,
    step: int = 0,
    data_format: str = "channels_first",
    impl: str = "auto",
    global_shape: Any = None,
    global_start: Any = None,
) -> tuple[Any, DropoutCache]:
    """:func:`dropout3d` in training mode, also returning the cache for :func:`xdrop.dropout_backward`.

    Parameters
    ----------
    x, p, step, data_format, impl, global_shape, global_start
        As in :func:`dropout3d`.
    seed : int or Generator
        Required: backward regenerates the mask from it.

    Returns
    -------
    out : array
        As :func:`dropout3d`.
    cache : DropoutCache
        O(1) in the size of ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> import xdrop
    >>> out, cache = xdrop.dropout3d_forward(np.ones((2, 3, 1, 1, 1)), 0.5, seed=1)
    >>> cache.noise_shape
    (2, 3, 1, 1, 1)
    """
    return _forward(
        x, p, seed, step, impl, _channel_rule(3, data_format), global_shape=global_shape, global_start=global_start
    )


# -- alpha dropout ----------------------------------------------------------------------------------


def alpha_dropout(
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
) -> Any:
    """Alpha dropout for SELU networks: keeps mean 0 and variance 1 of its input.

    Each element is kept with the keep probability ``q`` that the stream's
    threshold implements (the decisions of :func:`xdrop.dropout` with the same
    seed, step and p). Kept elements become ``a * x + b``, dropped ones the
    constant ``a * alpha' + b``, with ``alpha' = -1.7580993408473766`` (SELU's
    ``-lambda * alpha``), ``a = (q (1 + (1 - q) alpha'^2))^(-1/2)`` and
    ``b = -a (1 - q) alpha'``: PyTorch's ``alpha_dropout`` with ``1 - p``
    replaced by ``q``, so standard-normal input keeps mean 0 and variance 1
    exactly in expectation. ``a``, ``b`` and the dropped value ``c`` are the
    exact real numbers, each rounded once to x's dtype (``docs/stream-spec.md``). ``p = 0`` is the identity and
    ``p = 1`` gives zeros, as in PyTorch. Dropped elements do not depend on
    ``x`` (also where it is NaN).

    Parameters
    ----------
    x : array
        Real floating, any shape. Never modified.
    p : float, optional
        Probability of dropping an element, in ``[0, 1]``.
    seed : int, Generator or None, optional
        As in :func:`xdrop.dropout`.
    step : int, optional
        As in :func:`xdrop.dropout`.
    training : bool, optional
        If false, return ``x`` itself.
    noise_shape : tuple, optional
        Shape of the mask, as in :func:`xdrop.dropout` (Keras' ``AlphaDropout``
        ``noise_shape``): 1 shares one decision along that axis.
    impl : {"auto", "reference"}, optional
        ``"reference"`` forces the pure-standard implementation.
    global_shape, global_start : tuple of int, optional
        ``x`` is the block at ``global_start`` of an array of ``global_shape``,
        as in :func:`xdrop.dropout`; the noise shape is the global one's block.

    Returns
    -------
    array
        Like ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> import xdrop
    >>> xdrop.alpha_dropout(np.zeros(6), 0.5, seed=7)
    array([-0.77919393, -0.77919393,  0.77919393,  0.77919393,  0.77919393,
           -0.77919393])

    With a noise shape, one decision per row:

    >>> xdrop.alpha_dropout(np.zeros((2, 3)), 0.5, seed=7, noise_shape=(2, 1))
    array([[-0.77919393, -0.77919393, -0.77919393],
           [-0.77919393, -0.77919393, -0.77919393]])
    """
    return _run(
        x,
        p,
        seed,
        step,
        impl,
        None,
        training=training,
        alpha=True,
        noise_shape=noise_shape,
        global_shape=global_shape,
        global_start=global_start,
    )[0]


def alpha_dropout_forward(
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
    """:func:`alpha_dropout` in training mode, also returning the cache for :func:`xdrop.dropout_backward`.

    The gradient is ``dx = dout * a`` where kept, 0 where dropped:
    ``cache.grad_scale`` is ``a``.

    Parameters
    ----------
    x, p, step, noise_shape, impl, global_shape, global_start
        As in :func:`alpha_dropout`.
    seed : int or Generator
        Required: backward regenerates the mask from it.

    Returns
    -------
    out : array
        As :func:`alpha_dropout`.
    cache : DropoutCache
        O(1) in the size of ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> import xdrop
    >>> out, cache = xdrop.alpha_dropout_forward(np.zeros(4), 0.5, seed=7)
    >>> xdrop.dropout_backward(np.ones(4), cache)
    array([0.        , 0.        , 0.88640489, 0.88640489])
    """
    return _forward(
        x,
        p,
        seed,
        step,
        impl,
        None,
        alpha=True,
        noise_shape=noise_shape,
        global_shape=global_shape,
        global_start=global_start,
    )


def feature_alpha_dropout(
    x: Any,
    p: float = 0.5,
    *,
    seed: SeedLike = None,
    step: int = 0,
    training: bool = True,
    impl: str = "auto",
    global_shape: Any = None,
    global_start: Any = None,
) -> Any:
    """Alpha dropout of whole channels: one decision per (sample, channel).

    As :func:`alpha_dropout` on the noise shape ``(N, C, 1, ...)``: axis 0 is
    the sample and axis 1 the channel for every rank >= 2, which is what
    PyTorch's ``feature_alpha_dropout`` does (it has no unbatched form).

    Parameters
    ----------
    x : array
        Real floating, at least 2 dims. Never modified.
    p : float, optional
        Probability of dropping a channel, in ``[0, 1]``.
    seed : int, Generator or None, optional
        As in :func:`xdrop.dropout`.
    step : int, optional
        As in :func:`xdrop.dropout`.
    training : bool, optional
        If false, return ``x`` itself.
    impl : {"auto", "reference"}, optional
        ``"reference"`` forces the pure-standard implementation.
    global_shape, global_start : tuple of int, optional
        ``x`` is the block at ``global_start`` of an array of ``global_shape``,
        as in :func:`xdrop.dropout`; the noise shape is the global one's block.

    Returns
    -------
    array
        Like ``x``.

    Raises
    ------
    ValueError
        If ``x`` has fewer than 2 dims, or an argument is out of range.

    Examples
    --------
    >>> import numpy as np
    >>> import xdrop
    >>> xdrop.feature_alpha_dropout(np.zeros((2, 2, 3)), 0.5, seed=7)[:, :, 0]
    array([[-0.77919393, -0.77919393],
           [ 0.77919393,  0.77919393]])
    """
    return _run(
        x,
        p,
        seed,
        step,
        impl,
        _feature_alpha_rule,
        training=training,
        alpha=True,
        global_shape=global_shape,
        global_start=global_start,
    )[0]


def feature_alpha_dropout_forward(
    x: Any,
    p: float,
    *,
    seed: int | Generator,
    step: int = 0,
    impl: str = "auto",
    global_shape: Any = None,
    global_start: Any = None,
) -> tuple[Any, DropoutCache]:
    """:func:`feature_alpha_dropout` in training mode, also returning the cache.

    Parameters
    ----------
    x, p, step, impl, global_shape, global_start
        As in :func:`feature_alpha_dropout`.
    seed : int or Generator
        Required: backward regenerates the mask from it.

    Returns
    -------
    out : array
        As :func:`feature_alpha_dropout`.
    cache : DropoutCache
        For :func:`xdrop.dropout_backward`; O(1) in the size of ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> import xdrop
    >>> out, cache = xdrop.feature_alpha_dropout_forward(np.zeros((2, 2, 3)), 0.5, seed=7)
    >>> cache.noise_shape
    (2, 2, 1)
    """
    return _forward(
        x, p, seed, step, impl, _feature_alpha_rule, alpha=True, global_shape=global_shape, global_start=global_start
    )


# -- drop path --------------------------------------------------------------------------------------


def drop_path(
    x: Any,
    p: float,
    *,
    seed: SeedLike = None,
    step: int = 0,
    training: bool = True,
    scale_by_keep: bool = True,
    impl: str = "auto",
    global_shape: Any = None,
    global_start: Any = None,
) -> Any:
    """Stochastic depth: zero whole samples (axis 0) of a residual branch.

    One decision per sample, on the noise shape ``(N, 1, ...)``. With
    ``scale_by_keep`` (timm's default) kept samples are scaled by ``1 / keep``
    as in :func:`xdrop.dropout`; without it they pass unchanged.

    Parameters
    ----------
    x : array
        Real floating, at least 1 dim; axis 0 indexes samples. Never modified.
    p : float
        Probability of dropping a sample (timm's ``drop_prob``), in ``[0, 1]``.
    seed : int, Generator or None, optional
        As in :func:`xdrop.dropout`.
    step : int, optional
        As in :func:`xdrop.dropout`.
    training : bool, optional
        If false, return ``x`` itself.
    scale_by_keep : bool, optional
        Scale kept samples by ``1 / keep`` (default), or leave them unscaled.
    impl : {"auto", "reference"}, optional
        ``"reference"`` forces the pure-standard implementation.
    global_shape, global_start : tuple of int, optional
        ``x`` is the block at ``global_start`` of an array of ``global_shape``,
        as in :func:`xdrop.dropout`; the noise shape is the global one's block.

    Returns
    -------
    array
        Like ``x``.

    Raises
    ------
    ValueError
        If ``x`` is 0-d, or an argument is out of range.

    Examples
    --------
    >>> import numpy as np
    >>> import xdrop
    >>> xdrop.drop_path(np.ones((4, 3)), 0.5, seed=7)
    array([[0., 0., 0.],
           [0., 0., 0.],
           [2., 2., 2.],
           [2., 2., 2.]])
    >>> xdrop.drop_path(np.ones((4, 3)), 0.5, seed=7, scale_by_keep=False)[:, 0]
    array([0., 0., 1., 1.])
    """
    return _run(
        x,
        p,
        seed,
        step,
        impl,
        _drop_path_rule,
        training=training,
        scale_by_keep=scale_by_keep,
        global_shape=global_shape,
        global_start=global_start,
    )[0]


def drop_path_forward(
    x: Any,
    p: float,
    *,
    seed: int | Generator,
    step: int = 0,
    scale_by_keep: bool = True,
    impl: str = "auto",
    global_shape: Any = None,
    global_start: Any = None,
) -> tuple[Any, DropoutCache]:
    """:func:`drop_path` in training mode, also returning the cache for :func:`xdrop.dropout_backward`.

    Parameters
    ----------
    x, p, step, scale_by_keep, impl, global_shape, global_start
        As in :func:`drop_path`.
    seed : int or Generator
        Required: backward regenerates the mask from it.

    Returns
    -------
    out : array
        As :func:`drop_path`.
    cache : DropoutCache
        O(1) in the size of ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> import xdrop
    >>> out, cache = xdrop.drop_path_forward(np.ones((4, 3)), 0.5, seed=7, scale_by_keep=False)
    >>> xdrop.dropout_backward(np.full((4, 3), 5.0), cache)[:, 0]
    array([0., 0., 5., 5.])
    """
    return _forward(
        x,
        p,
        seed,
        step,
        impl,
        _drop_path_rule,
        scale_by_keep=scale_by_keep,
        global_shape=global_shape,
        global_start=global_start,
    )
