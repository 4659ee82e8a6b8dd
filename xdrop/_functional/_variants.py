"""The dropout family: channel dropout, alpha dropout and drop path.

Every variant draws its keep decisions from stream spec v1 on a *noise shape*
(Keras semantics, see ``docs/stream-spec.md``): one decision per (sample,
channel) for ``dropout1d/2d/3d`` and ``feature_alpha_dropout``, one per sample
for ``drop_path``, one per element for ``alpha_dropout``. So each is the same
bits on every backend, and its gradient is :func:`xdrop.dropout_backward` of
the cache its ``*_forward`` returns: the mask is regenerated, never stored.

Each lives in a module of its own; this one gathers them (and the rank rules
they share) under the names the rest of xdrop imports:

- :mod:`xdrop._lib._noise_shapes`: the noise-shape rules and :class:`RankError`;
- :mod:`xdrop._functional._variant_call`: the rules, as :mod:`xdrop._functional._call` (the call path
  they all take) reads them;
- :mod:`xdrop._functional._channel_dropout`, :mod:`xdrop._functional._alpha_dropout`,
  :mod:`xdrop._functional._drop_path`: the public functions;
- :mod:`xdrop._lib._docfill`: the parameter blocks their docstrings share.
"""

from .._lib._noise_shapes import DATA_FORMATS, RankError, channel_noise_shape, feature_noise_shape, sample_noise_shape
from ._alpha_dropout import alpha_dropout, alpha_dropout_forward, feature_alpha_dropout, feature_alpha_dropout_forward
from ._channel_dropout import (
    dropout1d,
    dropout1d_forward,
    dropout2d,
    dropout2d_forward,
    dropout3d,
    dropout3d_forward,
)
from ._drop_path import drop_path, drop_path_forward

__all__ = [
    "DATA_FORMATS",
    "RankError",
    "alpha_dropout",
    "alpha_dropout_forward",
    "channel_noise_shape",
    "drop_path",
    "drop_path_forward",
    "dropout1d",
    "dropout1d_forward",
    "dropout2d",
    "dropout2d_forward",
    "dropout3d",
    "dropout3d_forward",
    "feature_alpha_dropout",
    "feature_alpha_dropout_forward",
    "feature_noise_shape",
    "sample_noise_shape",
]
