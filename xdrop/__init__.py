"""xdrop: one inverted dropout, the same bits on every array library.

``import xdrop`` imports no framework: arrays are recognised through
array-api-compat, which only looks at modules already imported.
"""

from . import random
from ._dropout import DropoutCache, dropout, dropout_backward, dropout_forward, keep_mask
from ._generator import Generator
from ._stream import STREAM_VERSION

__version__ = "0.1.0"

__all__ = [
    "STREAM_VERSION",
    "DropoutCache",
    "Generator",
    "__version__",
    "dropout",
    "dropout_backward",
    "dropout_forward",
    "keep_mask",
    "random",
]
