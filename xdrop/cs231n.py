"""The CS231n dropout interface, on xdrop's stream.

Assignment code calls ``dropout_forward(x, dropout_param)`` and
``dropout_backward(dout, cache)`` with CS231n's conventions:
``dropout_param["p"]`` is the probability of *keeping* a neuron,
``dropout_param["mode"]`` is ``"train"`` or ``"test"``, and an optional
``dropout_param["seed"]`` makes the mask reproducible. Unlike the original,
a seed never reseeds NumPy's global random state, and the cache holds no mask.

Everything the student sees speaks in the student's ``p``, the keep
probability: the cache prints ``p=0.2 (keep)`` after ``p=0.2`` was passed
(xdrop's own functions take the drop probability, ``1 - p``, internally).
(This module was ``xdrop.compat.cs231n``; ``xdrop._lib._compat`` is unrelated: it
wraps array-api-compat.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._functional._call import DropoutCache
from ._functional._dropout import dropout_backward as _backward
from ._functional._dropout import dropout_forward as _forward
from ._lib._checks import check_float_array, check_probability, check_u64

__all__ = ["RegeneratedMask", "dropout_backward", "dropout_forward"]


@dataclass(frozen=True, repr=False)
class RegeneratedMask:
    """The second half of the cache: what backward needs to draw the mask again, not the mask.

    ``keep`` is the student's ``p``. Its text says so, in the student's terms.

    Examples
    --------
    >>> import numpy as np
    >>> from xdrop.cs231n import dropout_forward
    >>> _, cache = dropout_forward(np.ones((2, 3)), {"p": 0.2, "mode": "train", "seed": 7})
    >>> cache[1]
    RegeneratedMask(p=0.2 (keep probability), seed=7, step=0, shape=(2, 3))
    """

    keep: float
    stream: DropoutCache

    def __repr__(self) -> str:
        s = self.stream
        return f"RegeneratedMask(p={self.keep!r} (keep probability), seed={s.seed}, step={s.step}, shape={s.shape})"


Cache = tuple[dict[str, Any], RegeneratedMask | None]


def _mode(dropout_param: Any) -> str:
    if not isinstance(dropout_param, Mapping):
        raise TypeError(f"dropout_param must be a dict with keys 'p' and 'mode', got {type(dropout_param).__name__}")
    mode = dropout_param.get("mode")
    if mode not in ("train", "test"):
        raise ValueError(f'dropout_param["mode"] must be "train" or "test", got {mode!r}')
    return str(mode)


def dropout_forward(x: Any, dropout_param: dict[str, Any]) -> tuple[Any, Cache]:
    """Inverted dropout with CS231n's ``dropout_param`` (``p`` = keep probability).

    Parameters
    ----------
    x : array
        Input of any shape (a NumPy array in the assignment; any backend works).
    dropout_param : dict
        ``"p"``: keep probability in ``[0, 1]``; ``"mode"``: ``"train"`` or
        ``"test"``; optional ``"seed"``: an int in ``[0, 2**64)``. Without a
        seed each call draws a fresh mask from OS entropy.

    Returns
    -------
    out : array
        ``x`` with each element kept with probability ``p`` and scaled by
        ``1 / keep``; ``x`` itself in test mode.
    cache : tuple
        ``(dropout_param, xdrop_cache)`` for :func:`dropout_backward`.

    Examples
    --------
    >>> import numpy as np
    >>> from xdrop.cs231n import dropout_forward, dropout_backward
    >>> x = np.ones((2, 3))
    >>> out, cache = dropout_forward(x, {"p": 0.5, "mode": "train", "seed": 123})
    >>> out
    array([[2., 2., 0.],
           [2., 0., 2.]])
    >>> dropout_backward(np.full((2, 3), 0.5), cache)
    array([[1., 1., 0.],
           [1., 0., 1.]])
    """
    check_float_array(x)
    mode = _mode(dropout_param)
    keep = check_probability(dropout_param.get("p"), 'dropout_param["p"]')
    if mode == "test":
        return x, (dropout_param, None)
    seed = dropout_param.get("seed")
    if seed is None:
        import secrets

        seed = secrets.randbits(64)
    seed = check_u64(seed, 'dropout_param["seed"]')
    out, cache = _forward(x, 1.0 - keep, seed=seed)
    return out, (dropout_param, RegeneratedMask(keep, cache))


def dropout_backward(dout: Any, cache: Cache) -> Any:
    """Gradient of :func:`dropout_forward`: ``dout * mask / keep`` (``dout`` in test mode)."""
    if not (isinstance(cache, tuple) and len(cache) == 2 and isinstance(cache[1], (RegeneratedMask, type(None)))):
        raise TypeError(
            f"cache must be the (dropout_param, cache) pair that dropout_forward returned, got {type(cache).__name__}"
        )
    dropout_param, xdrop_cache = cache
    if _mode(dropout_param) == "test":
        return dout
    if xdrop_cache is None:
        raise ValueError("cache holds no training-mode forward; pass the cache dropout_forward returned")
    return _backward(dout, xdrop_cache.stream)
