"""torch.distributed: which masks data-parallel ranks draw.

``import xdrop`` does not import this module; ``import xdrop.torch`` does (it
imports torch). Three modes, set per model with :func:`data_parallel`:

``"per_rank"`` (the default once a process group of more than one rank exists)
    Each rank folds its rank into the step it draws with: ``step + rank * 2**40``.
    DDP broadcasts rank 0's buffers (``seed`` and ``step``) at construction and
    before each forward, so a per-rank seed kept in a buffer would be erased and
    every rank would draw the same masks; the rank is read from the process group
    at each forward instead, so nothing DDP broadcasts can erase it. Masks differ
    between ranks and depend on the world size.
``"global_batch"``
    Each rank's input is its slice of the global batch along ``batch_axis``
    (equal slices, in rank order, as ``DistributedSampler`` gives): it draws
    exactly the block of the mask one process would draw over the whole global
    batch, so 1, 2, 4 or 8 ranks (or gradient accumulation over the same global
    batch) give identical masks.
``"shared"``
    No rank coordinate: every rank draws what one process would. For
    tensor-parallel code with replicated plain tensors that must share masks.

A DTensor input is always placed by its own placements (see
:func:`xdrop.dropout`), whatever the mode.

The state to checkpoint is the layers' ``state_dict`` (``seed`` and ``step``):
the rank coordinate is not state, so a run resumed on the same world size (or
on any world size in ``"global_batch"`` mode) draws the same masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist

from . import _sharding

__all__ = ["RANK_SHIFT", "DataParallel", "data_parallel", "placement_of"]

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


def data_parallel(
    module: torch.nn.Module, mode: Mode = "global_batch", *, group: Any = None, batch_axis: int = 0
) -> torch.nn.Module:
    """Set the data-parallel mode of every xdrop layer in ``module`` (itself included); returns ``module``.

    Parameters
    ----------
    module : torch.nn.Module
        A model (wrapped in DDP or not) or a single xdrop layer.
    mode : {"global_batch", "per_rank", "shared"}, optional
        See the module docstring. ``"per_rank"`` is what layers do when this is never called.
    group : ProcessGroup, optional
        The data-parallel group whose rank and size are used (default: the default group).
    batch_axis : int, optional
        The batch axis of the layers' inputs, for ``"global_batch"``.

    Examples
    --------
    >>> import torch, xdrop.torch
    >>> from xdrop.distributed import data_parallel
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4), xdrop.torch.Dropout(0.5, seed=7))
    >>> data_parallel(model, "global_batch") is model
    True
    >>> model[1](torch.ones(8))  # one process: the whole global batch
    tensor([0., 0., 2., 2., 2., 0., 2., 0.])
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got mode={mode!r}")
    if not isinstance(batch_axis, int) or isinstance(batch_axis, bool) or batch_axis < 0:
        raise ValueError(f"batch_axis must be a non-negative int, got batch_axis={batch_axis!r}")
    from .torch import _SeededDropout

    setting = DataParallel(mode, group, batch_axis)
    for layer in module.modules():
        if isinstance(layer, _SeededDropout):
            setattr(layer, _ATTRIBUTE, setting)
    return module


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
