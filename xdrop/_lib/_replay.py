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
with them); a recomputation is a call inside backward with grad mode on (see
:func:`take`; calls from gradient hooks and ``Function.backward`` run with grad
mode off and take the next step). Other calls draw nothing from torch's
generator.

Without the forward's RNG state (``preserve_rng_state=False``, or a custom
checkpoint that does not restore it) the token matches nothing. The mask is a
pure function of ``(seed, step)``, so the recomputation still needs only the
step the forward took: an owner called once in its latest forward (the calls
recorded since it was last recomputed) replays that call. An owner called
several times there raises :class:`NoReplay` instead of guessing which call
is being repeated.

The probes (whether backward is running, the saved-tensor hooks) are private
torch functions that ``torch.utils.checkpoint`` itself relies on (torch has no
public way to ask either question). So they are checked, not guessed:
``import xdrop.torch`` and the first replayable call on a torch tensor raise
:class:`MissingTorchProbe`, naming the missing function, if a torch release
drops one; the replay never silently stops working.

torch is not imported here: these run only on torch tensors, when torch is
already in ``sys.modules`` (``import xdrop`` imports no framework).
"""

from __future__ import annotations

import sys
from collections import OrderedDict, deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from ._u64 import MASK64

__all__ = ["PROBES", "REPLAY_WINDOW", "MissingTorchProbe", "NoReplay", "Replay", "draw_u64", "require_probes", "take"]

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
    return int(torch.randint(-(1 << 63), (1 << 63) - 1, (), dtype=torch.int64, device="cpu")) & MASK64


class Replay:
    """One owner's recent calls that a recomputation may replay.

    ``draws`` maps the token each such call drew to what it took (its last
    :data:`REPLAY_WINDOW` calls). ``group`` holds the tokens of its latest
    forward: the calls recorded since it was last recomputed (a recomputation
    closes the group; the next recorded call opens a new one), each with
    whether saved-tensor hooks were active (a non-reentrant checkpoint's region,
    rather than a reentrant one's first pass or another no-grad call).
    """

    __slots__ = ("closed", "draws", "group")

    def __init__(self) -> None:
        self.draws: OrderedDict[int, Any] = OrderedDict()
        self.group: deque[tuple[int, bool]] = deque(maxlen=REPLAY_WINDOW)
        self.closed = False

    def clear(self) -> None:
        """Forget every call (a copy, or a layer reset to its constructed state, replays none)."""
        self.draws.clear()
        self.group.clear()
        self.closed = False

    def record(self, token: int, taken: Any, hooked: bool) -> None:
        if self.closed:
            self.group.clear()
            self.closed = False
        self.group.append((token, hooked))
        self.draws[token] = taken
        if len(self.draws) > REPLAY_WINDOW:
            self.draws.popitem(last=False)

    def replayed(self, token: int, owner: object, hooked: bool) -> Any:
        """What the recomputed call took: the call that drew ``token``, else the one call of the latest forward.

        ``hooked``: saved-tensor hooks are active, as in a non-reentrant
        checkpoint's recomputation; the latest forward's calls of that kind are
        the candidates, where there are any. Raises :class:`NoReplay` where
        neither exists.
        """
        self.closed = True
        found = self.draws.get(token)
        if found is not None:  # torch's RNG was restored (preserve_rng_state=True): this very call
            return found
        recorded = [(t, h) for t, h in self.group if t in self.draws]
        group = [self.draws[t] for t, h in recorded if h == hooked] or [self.draws[t] for t, _ in recorded]
        if len(group) == 1:  # no RNG state, but the latest forward called the owner once: that call
            return group[0]
        if not group:
            message = (
                f"{owner!r} is being recomputed during backward, but it has no recorded call since its last "
                "recomputation, and torch's RNG state matches none of its recent calls, so it cannot replay the "
                f"mask: backward within {REPLAY_WINDOW} calls of the forward"
            )
        else:
            message = (
                f"{owner!r} is being recomputed during backward without the forward's torch RNG state "
                f"(preserve_rng_state=False), and its latest forward called it {len(group)} times, so the "
                "recomputation cannot tell which call it repeats: use preserve_rng_state=True (the default) "
                "for a region that calls it more than once, or give each call its own layer or Generator"
            )
        raise NoReplay(message, group[-1] if group else None)


class NoReplay(RuntimeError):
    """A recomputation during backward that matches no recorded call (see :meth:`Replay.replayed`).

    ``fallback`` is the latest call's value (or ``None``): what a call whose
    output does not depend on the mask (p = 0) may use instead of raising.
    """

    def __init__(self, message: str, fallback: Any) -> None:
        super().__init__(message)
        self.fallback = fallback


def take(replay: Replay, lock: AbstractContextManager[Any], advance: Callable[[], T], owner: object) -> T:
    """What this call takes: ``advance()``, or the value a recomputed call took before.

    ``replay`` is the owner's record, guarded by ``lock``, under which
    ``advance`` (the owner's read-and-advance) runs. ``owner`` (its repr) names
    the owner in the :class:`NoReplay` raised when a recomputation finds no
    recorded call to replay.

    A call inside backward (torch runs one there) is a checkpoint's
    recomputation when grad mode is on: torch.utils.checkpoint (both modes) and
    custom checkpoint functions recompute under ``torch.enable_grad()``, while
    autograd runs gradient hooks and ``Function.backward`` with grad mode off
    (unless ``create_graph=True``). So a call from a hook or a backward is an
    ordinary call that takes the next value.
    """
    task_id, hooks, grad_enabled = _probes or require_probes()
    if task_id() != -1:  # inside backward
        if not grad_enabled():  # a gradient hook, a Function.backward: an ordinary call
            with lock:
                return advance()
        hooked = hooks(False) is not None
        token = draw_u64()
        with lock:
            found: T = replay.replayed(token, owner, hooked)
            return found
    # a call may be recomputed later under a reentrant checkpoint's first pass (grad off) or a
    # non-reentrant one's saved-tensor hooks: only such calls draw a token
    hooked = hooks(False) is not None
    if not hooked and grad_enabled():
        with lock:
            return advance()
    token = draw_u64()
    with lock:
        taken = advance()
        replay.record(token, taken, hooked)
        return taken
