"""The noise rules of the dropout family: x's shape -> the mask's shape.

A variant is a noise rule (see :mod:`xdrop._lib._noise_shapes`) and a few flags over
the one call path, :func:`xdrop._functional._call.run`, so each variant is the same bits on
every backend by construction.
"""

from __future__ import annotations

from typing import Any

from .._lib._noise_shapes import channel_noise_shape, feature_noise_shape, sample_noise_shape
from ._call import NoiseRule


def channel_rule(spatial: int, data_format: Any) -> NoiseRule:
    """``dropout{spatial}d``'s rule: one decision per (sample, channel) in ``data_format``."""
    return lambda shape: channel_noise_shape(shape, spatial, f"dropout{spatial}d", data_format)


def feature_alpha_rule(shape: tuple[int, ...]) -> tuple[int, ...]:
    """``feature_alpha_dropout``'s rule: one decision per (sample, channel)."""
    return feature_noise_shape(shape, "feature_alpha_dropout")


def drop_path_rule(shape: tuple[int, ...]) -> tuple[int, ...]:
    """``drop_path``'s rule: one decision per sample."""
    return sample_noise_shape(shape, "drop_path")
