"""Replaying a call's ``(seed, step)`` when ``torch.utils.checkpoint`` recomputes it.

``torch.utils.checkpoint`` runs a region's forward twice: once without keeping
its activations, and again during backward. Anything that takes a step from
state (an :mod:`xdrop.torch` layer's buffers, a :class:`xdrop.Generator`) would
take the *next* step on the second run, so backward would use another mask than
the forward. Before recomputing, checkpoint restores torch's default generator
(``preserve_rng_state=True``, its default). So each call that may be recomputed
draws a token from that generator and records the ``(seed, step)`` it took under
the token; the recomputation draws the same token and replays what was taken.

A call may be recomputed when grad mode is off (a reentrant checkpoint's first
pass) or saved-tensor hooks are active (a non-reentrant one records its region
with them); a recomputation runs inside backward. Other calls draw nothing from
torch's generator. Both probes are private torch functions that
``torch.utils.checkpoint`` itself relies on (torch has no public way to ask
either question). So they are checked, not guessed: ``import xdrop.torch`` and
the first replayable call on a torch tensor raise :class:`MissingTorchProbe`,
naming the missing function, if a torch release drops one; the replay never
silently stops working.

torch is not imported here: these run only on torch tensors, when torch is
already in ``sys.modules`` (``import xdrop`` imports no framework).
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

__all__ = ["PROBES", "REPLAY_WINDOW", "MissingTorchProbe", "draw_u64", "require_probes", "take"]

# The last calls of each owner that a recomputation can replay.
REPLAY_WINDOW = 256

T = TypeVar("T")

# The private torch functions the replay asks (torch.utils.checkpoint asks the first too).
PROBES = ("_C._current_graph_task_id", "_C._autograd._top_saved_tensors_default_hooks")

Probes = tuple[Callable[[], int], Callable[[bool], Any], Callable[[], bool]]
# (torch._C._current_graph_task_id, torch._C._autograd._top_saved_tensors_default_hooks,
# torch.is_grad_enabled), looked up once: this runs on every Generator call on a torch tensor.
_probes: Probes | None = None


class MissingTorchProbe(RuntimeError):
    """This torch lacks a private function the checkpoint replay needs (see the module docs)."""


def require_probes() -> Probes:
    """The probes, looked up in the imported torch; :class:`MissingTorchProbe` names any that is missing."""
    global _probes
    if _probes is None:
        torch = sys.modules["torch"]
        found = []
        for path in PROBES:
            obj: Any = torch
            for part in path.split("."):
                obj = getattr(obj, part, None)
            if not callable(obj):
                raise MissingTorchProbe(
                    f"xdrop's torch.utils.checkpoint replay needs torch.{path}, which torch {torch.__version__} "
                    "does not have (a private function; xdrop is tested with torch 2.13): without it a "
                    "recomputation cannot be told from a new forward, so its masks would differ from the "
                    "forward's. Use a torch release that has it, or a newer xdrop"
                )
            found.append(obj)
        _probes = (found[0], found[1], torch.is_grad_enabled)
    return _probes


def draw_u64() -> int:
    """64 bits from torch's default CPU generator (explicitly on CPU, also under ``torch.device("meta")``)."""
    torch = sys.modules["torch"]
    return int(torch.randint(-(1 << 63), (1 << 63) - 1, (), dtype=torch.int64, device="cpu")) % (1 << 64)


def take(
    draws: OrderedDict[int, T],
    lock: AbstractContextManager[Any],
    advance: Callable[[], T],
    owner: object,
) -> T:
    """What this call takes: ``advance()``, or the value a recomputed call took before.

    ``draws`` is the owner's replay window (token -> value taken), guarded by
    ``lock``, under which ``advance`` (the owner's read-and-advance) runs.
    ``owner`` (its repr) names the owner in the error raised when a recomputation
    finds no recorded call (the generator was not restored, or the call left the window).
    """
    task_id, hooks, grad_enabled = _probes or require_probes()
    recomputing = task_id() != -1  # -1 outside backward
    # a call may be recomputed later under a reentrant checkpoint's first pass (grad off) or a
    # non-reentrant one's saved-tensor hooks: only such calls draw a token
    may = recomputing or not grad_enabled() or hooks(False) is not None
    token = draw_u64() if may else None
    with lock:
        if recomputing:
            found = draws.get(token) if token is not None else None
            if found is None:
                raise RuntimeError(
                    f"{owner!r} is being recomputed during backward, but torch's RNG state matches none of its "
                    "recent calls, so it cannot replay the mask: use torch.utils.checkpoint with "
                    f"preserve_rng_state=True (the default), and backward within {REPLAY_WINDOW} calls of it"
                )
            return found
        taken = advance()
        if token is not None:
            draws[token] = taken
            if len(draws) > REPLAY_WINDOW:
                draws.popitem(last=False)
        return taken
