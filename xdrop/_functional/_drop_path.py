"""Drop path (stochastic depth): whole samples of a residual branch are zeroed."""

from __future__ import annotations

from typing import Any

from .._lib._docfill import fill_doc
from .._lib._generator import Generator
from ._call import DropoutCache, SeedLike, forward, run
from ._variant_call import drop_path_rule

__all__ = ["drop_path", "drop_path_forward"]


@fill_doc
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
    %(seed)s
    %(step)s
    %(training)s
    scale_by_keep : bool, optional
        Scale kept samples by ``1 / keep`` (default), or leave them unscaled.
    %(impl)s
    %(global_block)s

    %(returns)s

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
    return run(
        x,
        p,
        seed,
        step,
        impl,
        drop_path_rule,
        training=training,
        scale_by_keep=scale_by_keep,
        global_shape=global_shape,
        global_start=global_start,
    )[0]


@fill_doc
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
    %(forward_seed)s

    Returns
    -------
    out : array
        As :func:`drop_path`.
    %(forward_cache)s

    Examples
    --------
    >>> import numpy as np
    >>> import xdrop
    >>> out, cache = xdrop.drop_path_forward(np.ones((4, 3)), 0.5, seed=7, scale_by_keep=False)
    >>> xdrop.dropout_backward(np.full((4, 3), 5.0), cache)[:, 0]
    array([0., 0., 5., 5.])
    """
    return forward(
        x,
        p,
        seed,
        step,
        impl,
        drop_path_rule,
        scale_by_keep=scale_by_keep,
        global_shape=global_shape,
        global_start=global_start,
    )
