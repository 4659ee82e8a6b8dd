"""Channel dropout, ``dropout1d`` / ``dropout2d`` / ``dropout3d``: whole channels are zeroed.

One keep decision per (sample, channel); PyTorch's rank rules, or Keras'
``SpatialDropout`` with ``data_format="channels_last"``.
"""

from __future__ import annotations

from typing import Any

from .._lib._docfill import fill_doc
from .._lib._generator import Generator
from ._call import DropoutCache, SeedLike, forward, run
from ._variant_call import channel_rule

__all__ = ["dropout1d", "dropout1d_forward", "dropout2d", "dropout2d_forward", "dropout3d", "dropout3d_forward"]


@fill_doc
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
    %(seed)s
    %(step)s
    %(training)s
    %(data_format)s
    %(impl)s
    %(global_block)s

    %(returns)s

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
    return run(
        x,
        p,
        seed,
        step,
        impl,
        channel_rule(1, data_format),
        training=training,
        global_shape=global_shape,
        global_start=global_start,
    )[0]


@fill_doc
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
    %(forward_seed)s

    Returns
    -------
    out : array
        As :func:`dropout1d`.
    %(forward_cache)s

    Examples
    --------
    >>> import numpy as np
    >>> import xdrop
    >>> out, cache = xdrop.dropout1d_forward(np.ones((3, 2)), 0.5, seed=1)
    >>> bool((xdrop.dropout_backward(np.ones((3, 2)), cache) == out).all())
    True
    """
    return forward(
        x, p, seed, step, impl, channel_rule(1, data_format), global_shape=global_shape, global_start=global_start
    )


@fill_doc
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
    %(seed)s
    %(step)s
    %(training)s
    %(data_format)s
    %(impl)s
    %(global_block)s

    %(returns)s

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
    return run(
        x,
        p,
        seed,
        step,
        impl,
        channel_rule(2, data_format),
        training=training,
        global_shape=global_shape,
        global_start=global_start,
    )[0]


@fill_doc
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
    %(forward_seed)s

    Returns
    -------
    out : array
        As :func:`dropout2d`.
    %(forward_cache)s

    Examples
    --------
    >>> import numpy as np
    >>> import xdrop
    >>> out, cache = xdrop.dropout2d_forward(np.ones((1, 3, 2, 2)), 0.5, seed=1)
    >>> cache.noise_shape
    (1, 3, 1, 1)
    """
    return forward(
        x, p, seed, step, impl, channel_rule(2, data_format), global_shape=global_shape, global_start=global_start
    )


@fill_doc
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
    %(seed)s
    %(step)s
    %(training)s
    %(data_format)s
    %(impl)s
    %(global_block)s

    %(returns)s

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
    return run(
        x,
        p,
        seed,
        step,
        impl,
        channel_rule(3, data_format),
        training=training,
        global_shape=global_shape,
        global_start=global_start,
    )[0]


@fill_doc
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
    %(forward_seed)s

    Returns
    -------
    out : array
        As :func:`dropout3d`.
    %(forward_cache)s

    Examples
    --------
    >>> import numpy as np
    >>> import xdrop
    >>> out, cache = xdrop.dropout3d_forward(np.ones((2, 3, 1, 1, 1)), 0.5, seed=1)
    >>> cache.noise_shape
    (2, 3, 1, 1, 1)
    """
    return forward(
        x, p, seed, step, impl, channel_rule(3, data_format), global_shape=global_shape, global_start=global_start
    )
