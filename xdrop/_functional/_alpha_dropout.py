"""Alpha dropout for SELU networks, per element or per (sample, channel).

Kept elements become ``a * x + b`` and dropped ones the constant ``c``
(``xdrop._lib._arith.alpha_constants``): mean and variance are kept exactly in expectation.
"""

from __future__ import annotations

from typing import Any

from .._lib._docfill import fill_doc
from .._lib._generator import Generator
from ._call import DropoutCache, SeedLike, forward, run
from ._variant_call import feature_alpha_rule

__all__ = ["alpha_dropout", "alpha_dropout_forward", "feature_alpha_dropout", "feature_alpha_dropout_forward"]


@fill_doc
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
    %(seed)s
    %(step)s
    %(training)s
    noise_shape : tuple, optional
        Shape of the mask, as in :func:`xdrop.dropout` (Keras' ``AlphaDropout``
        ``noise_shape``): 1 shares one decision along that axis.
    %(impl)s
    %(global_block)s

    %(returns)s

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
    return run(
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


@fill_doc
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
    %(forward_seed)s

    Returns
    -------
    out : array
        As :func:`alpha_dropout`.
    %(forward_cache)s

    Examples
    --------
    >>> import numpy as np
    >>> import xdrop
    >>> out, cache = xdrop.alpha_dropout_forward(np.zeros(4), 0.5, seed=7)
    >>> xdrop.dropout_backward(np.ones(4), cache)
    array([0.        , 0.        , 0.88640489, 0.88640489])
    """
    return forward(
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


@fill_doc
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
    %(seed)s
    %(step)s
    %(training)s
    %(impl)s
    %(global_block)s

    %(returns)s

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
    return run(
        x,
        p,
        seed,
        step,
        impl,
        feature_alpha_rule,
        training=training,
        alpha=True,
        global_shape=global_shape,
        global_start=global_start,
    )[0]


@fill_doc
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
    %(forward_seed)s

    Returns
    -------
    out : array
        As :func:`feature_alpha_dropout`.
    %(forward_cache)s

    Examples
    --------
    >>> import numpy as np
    >>> import xdrop
    >>> out, cache = xdrop.feature_alpha_dropout_forward(np.zeros((2, 2, 3)), 0.5, seed=7)
    >>> cache.noise_shape
    (2, 2, 1)
    """
    return forward(
        x, p, seed, step, impl, feature_alpha_rule, alpha=True, global_shape=global_shape, global_start=global_start
    )
