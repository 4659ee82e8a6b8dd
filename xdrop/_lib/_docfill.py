"""The numpydoc blocks the dropout variants share, written once and filled into their docstrings.

A docstring names a block on a line of its own, ``%(name)s`` (scipy's
``doccer`` convention); :func:`fill_doc` puts the block there, indented as that
line. So a wording fix lands in every variant at once.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., object])

BLOCKS = {
    "seed": """\
seed : int, Generator or None, optional
    As in :func:`xdrop.dropout`.""",
    "step": """\
step : int, optional
    As in :func:`xdrop.dropout`.""",
    "training": """\
training : bool, optional
    If false, return ``x`` itself.""",
    "data_format": """\
data_format : {"channels_first", "channels_last"}, optional
    Where the channel axis is: ``"channels_first"`` (PyTorch, the default)
    reads ``x`` as ``(N, C, ...)``; ``"channels_last"`` (Keras' ``SpatialDropout``)
    as ``(N, ..., C)``, with noise shape ``(N, 1, ..., 1, C)``. The bits are those of
    :func:`xdrop.dropout` with that noise shape.""",
    "impl": """\
impl : {"auto", "reference"}, optional
    ``"reference"`` forces the pure-standard implementation.""",
    "global_block": """\
global_shape, global_start : tuple of int, optional
    ``x`` is the block at ``global_start`` of an array of ``global_shape``,
    as in :func:`xdrop.dropout`; the noise shape is the global one's block.""",
    "returns": """\
Returns
-------
array
    Like ``x``.""",
    "forward_seed": """\
seed : int or Generator
    Required (no OS entropy): backward regenerates the mask from it.""",
    "forward_cache": """\
cache : DropoutCache
    For :func:`xdrop.dropout_backward`; O(1) in the size of ``x``.""",
}

_FIELD = re.compile(r"^( *)%\((\w+)\)s$", re.MULTILINE)


def fill(doc: str) -> str:
    """``doc`` with each ``%(name)s`` line replaced by :data:`BLOCKS`'s block, at that line's indent.

    Examples
    --------
    >>> print(fill("Parameters\\n----------\\n    %(step)s\\n"))
    Parameters
    ----------
        step : int, optional
            As in :func:`xdrop.dropout`.
    <BLANKLINE>
    """

    def block(match: re.Match[str]) -> str:
        indent, name = match.groups()
        if name not in BLOCKS:
            raise KeyError(f"docstring names %({name})s, which is not a block; the blocks are {sorted(BLOCKS)}")
        return "\n".join(indent + line if line else line for line in BLOCKS[name].split("\n"))

    return _FIELD.sub(block, doc)


def fill_doc(func: F) -> F:
    """Decorator: fill ``func``'s docstring (left as it is under ``python -OO``, which strips it)."""
    if func.__doc__:
        func.__doc__ = fill(func.__doc__)
    return func
