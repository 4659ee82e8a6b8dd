"""The data-parallel modes' arithmetic, read by every xdrop.torch layer's forward.

A layer's mode (:class:`DataParallel`) is a plain attribute that
:func:`xdrop.distributed.data_parallel` sets; this module turns it into the
rank coordinate of a call (a step offset, or the block of the global batch).
Below the layers and :mod:`xdrop.distributed`, so neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist

from .._lib import _sharding

Mode = Literal["per_rank", "global_batch", "shared"]
MODES = ("per_rank", "global_batch", "shared")
# per_rank: the step a rank draws with is step + rank << RANK_SHIFT (steps below 2**40, ranks below 2**24).
RANK_SHIFT = 40
_ATTRIBUTE = "_xdrop_data_parallel"


@dataclass(frozen=True)
class DataParallel:
    """A layer's data-parallel mode: kept as a plain attribute, so no buffer broadcast can change it."""

    mode: Mode = "per_rank"
    group: Any = None  # the data-parallel process group; None is the default group
    batch_axis: int = 0


_DEFAULT = DataParallel()


def _setting(layer: torch.nn.Module) -> DataParallel:
    """The layer's data-parallel mode (``per_rank`` unless set); read from ``__dict__``, where
    ``setattr`` put it, because a missing attribute costs nn.Module a slow failed lookup."""
    setting: DataParallel = layer.__dict__.get(_ATTRIBUTE) or _DEFAULT
    return setting


def _rank_and_size(group: Any) -> tuple[int, int]:
    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def placement_of(x_shape: tuple[int, ...], rank: int, world: int, batch_axis: int = 0) -> tuple[Any, Any]:
    """``(global_shape, global_start)`` of rank ``rank``'s slice of a global batch of ``world`` equal slices.

    Examples
    --------
    >>> from xdrop.distributed import placement_of
    >>> placement_of((4, 3), rank=1, world=2)
    ((8, 3), (4, 0))
    """
    if batch_axis >= len(x_shape):
        raise ValueError(f"batch_axis={batch_axis} is not an axis of an input of shape {x_shape}")
    gshape = tuple(d * world if a == batch_axis else d for a, d in enumerate(x_shape))
    gstart = tuple(d * rank if a == batch_axis else 0 for a, d in enumerate(x_shape))
    return gshape, gstart


def layer_is_placed(layer: torch.nn.Module, x: Any) -> bool:
    """Whether ``layer``'s forward must take :func:`layer_call` (else its plain per-process path).

    A DTensor input, or a ``"global_batch"`` layer in eager mode. (``"per_rank"``, the
    default, needs no placement: :func:`rank_step_offset` folds the rank into the step.)
    """
    if _sharding.is_dtensor(x):
        return True
    setting = _setting(layer)
    return setting.mode == "global_batch" and not torch.compiler.is_compiling()


def rank_step_offset(layer: torch.nn.Module) -> int:
    """``rank << RANK_SHIFT`` for a ``"per_rank"`` layer in a group of more than one rank, else 0.

    Added to the step a layer draws with (eager or compiled), never stored in a buffer.
    """
    setting = _setting(layer)
    if setting.mode != "per_rank":
        return 0
    rank, world = _rank_and_size(setting.group)
    if world == 1:
        return 0
    if rank >> (64 - RANK_SHIFT):
        raise ValueError(f"per-rank masks need rank < 2**{64 - RANK_SHIFT}, got rank={rank}")
    return rank << RANK_SHIFT


def layer_call(layer: torch.nn.Module, variant: Any, x: Any, seed: int, step: int) -> Any:
    """What an xdrop layer's forward runs: ``variant(x, seed, step)`` with the rank coordinate of its mode."""
    setting = _setting(layer)
    if setting.mode == "shared" or _sharding.is_dtensor(x):
        return variant(x, seed, step)
    rank, world = _rank_and_size(setting.group)
    if world == 1 and setting.mode == "per_rank":
        return variant(x, seed, step)
    if setting.mode == "per_rank":
        if step >> RANK_SHIFT or rank >> (64 - RANK_SHIFT):
            raise ValueError(
                f"per-rank masks fold the rank into the step (step + rank * 2**{RANK_SHIFT}), which needs "
                f"step < 2**{RANK_SHIFT} and rank < 2**{64 - RANK_SHIFT}, got step={step}, rank={rank}; "
                "use xdrop.distributed.data_parallel(model, 'global_batch') instead"
            )
        return variant(x, seed, step + (rank << RANK_SHIFT))
    axis = setting.batch_axis
    with _sharding.placed(lambda shape: placement_of(shape, rank, world, axis)):
        return variant(x, seed, step)
