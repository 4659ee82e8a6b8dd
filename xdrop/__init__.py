"""xdrop: one inverted dropout, the same bits on every array library.

``import xdrop`` imports no framework: arrays are recognised through
array-api-compat, which only looks at modules already imported.
"""

from . import random
from ._functional._attention import scaled_dot_product_attention
from ._functional._dropout import DropoutCache, dropout, dropout_backward, dropout_forward, keep_mask
from ._functional._variants import (
    alpha_dropout,
    alpha_dropout_forward,
    drop_path,
    drop_path_forward,
    dropout1d,
    dropout1d_forward,
    dropout2d,
    dropout2d_forward,
    dropout3d,
    dropout3d_forward,
    feature_alpha_dropout,
    feature_alpha_dropout_forward,
)
from ._lib._generator import Generator
from ._lib._stream import STREAM_VERSION

__version__ = "0.1.0"

__all__ = [
    "STREAM_VERSION",
    "DropoutCache",
    "Generator",
    "__version__",
    "alpha_dropout",
    "alpha_dropout_forward",
    "drop_path",
    "drop_path_forward",
    "dropout",
    "dropout1d",
    "dropout1d_forward",
    "dropout2d",
    "dropout2d_forward",
    "dropout3d",
    "dropout3d_forward",
    "dropout_backward",
    "dropout_forward",
    "feature_alpha_dropout",
    "feature_alpha_dropout_forward",
    "keep_mask",
    "random",
    "scaled_dot_product_attention",
]
