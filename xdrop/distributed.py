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

from typing import Any

import torch

from .torch._ranks import _ATTRIBUTE, MODES, RANK_SHIFT, DataParallel, Mode, placement_of
from .torch._seeded import _SeededDropout

__all__ = ["RANK_SHIFT", "DataParallel", "data_parallel", "placement_of"]


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
    setting = DataParallel(mode, group, batch_axis)
    for layer in module.modules():
        if isinstance(layer, _SeededDropout):
            setattr(layer, _ATTRIBUTE, setting)
    return module
