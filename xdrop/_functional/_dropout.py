"""Inverted dropout on any standard namespace: the public functions.

Each goes through the one call path of :mod:`xdrop._functional._call`.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from .. import _kernels
from .._lib._checks import check_device, check_impl, check_mask_memory, check_mask_size, check_probability, check_shape
from .._lib._compat import array_namespace
from .._lib._generator import Generator
from .._lib._sharding import resolve_block
from .._lib._stream import keep_count
from ._call import DropoutCache, SeedLike, backward, draw_mask, forward, numpy_call, resolve_seed, run

__all__ = ["DropoutCache", "dropout", "dropout_backward", "dropout_forward", "keep_mask"]


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
    if plain or out is not None:  # the fast paths' seam
        return numpy_call(x, p, seed, step, training, noise_shape, impl, global_shape, global_start, out, plain)
    return run(x, p, seed, step, impl, None, noise_shape, global_shape, global_start, training)[0]


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
    return forward(x, p, seed, step, impl, None, noise_shape, global_shape, global_start)


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
    return backward(dout, cache, impl)


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
    _kernels.select_mask(xp, impl, device)  # an impl that does not apply raises before the seed is taken
    seed, step = resolve_seed(seed, step, allow_none=False, xp=xp)
    return draw_mask(xp, shape, seed, step, keep_count(p), device, impl, block)
