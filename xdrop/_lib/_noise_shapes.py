"""Noise shapes: which axes of ``x`` share one keep decision, and the ranks each variant takes.

PyTorch 2.x's rank rules for ``dropout{1,2,3}d`` and ``feature_alpha_dropout``
(its warnings and refusals, word for word), Keras' ``channels_last`` layout, and
drop path's one decision per sample. Pure shape arithmetic: no arrays, no stream.
"""

from __future__ import annotations

import os
import sys
import warnings
from types import FrameType

_SPATIAL_NAMES = {1: "L", 2: "H, W", 3: "D, H, W"}


class RankError(ValueError, RuntimeError):
    """An input of a rank the function does not take.

    A ``ValueError``, as xdrop raises for bad values, and a ``RuntimeError``, as
    PyTorch raises for the same inputs: ``except`` clauses written for either catch it.
    """


def _user_stacklevel() -> int:
    """The ``stacklevel`` of the first frame outside xdrop and torch, so a warning names the caller's line."""
    here, torch_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__))), f"{os.sep}torch{os.sep}"
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
