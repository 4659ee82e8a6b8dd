"""A seed with a step counter, for training loops."""

from __future__ import annotations

import threading

from ._replay import Replay
from ._replay import take as replay_take  # imports no torch: torch is loaded when the input is a torch tensor
from ._values import MAX_U64, check_u64


class Generator:
    """A seed and a step that advances by one at each dropout call.

    Pass it as ``seed=`` to :func:`xdrop.dropout` (or any function taking a
    seed): the call uses the current ``(seed, step)`` and then advances the
    step, so successive calls draw independent masks and a run restarted from
    a saved ``(seed, step)`` draws the very same ones. Unlike
    ``np.random.seed``, it touches no global state.

    Thread safety: taking a step is atomic (a lock guards it), so threads that
    share a Generator never get the same step twice; which thread gets which
    step then depends on scheduling. Give each thread its own Generator (or
    explicit steps) where the assignment must be reproducible.

    ``torch.utils.checkpoint`` (both ``use_reentrant`` modes): on a torch
    tensor, a call that checkpoint recomputes during backward replays the step
    its forward took instead of taking the next one, so the gradient uses the
    forward's mask; this works as for the :mod:`xdrop.torch` layers (a call
    that may be recomputed draws a token from torch's default generator, which
    checkpoint restores, ``preserve_rng_state=True``, its default; the last 256
    such calls can be replayed; other calls draw nothing from it). With
    ``preserve_rng_state=False`` a Generator called once in the checkpointed
    forward replays that call; one called several times there raises rather
    than guess. A call from a gradient hook or an ``autograd.Function``'s
    backward (grad mode off) is an ordinary call: it takes the next step.

    A Generator pickles and deep-copies as its ``(seed, step)``: the copy
    continues from the same step, independently of the original.

    Parameters
    ----------
    seed : int
        An integer in ``[0, 2**64)``.
    step : int, optional
        The first step to use, 0 by default.

    Examples
    --------
    >>> import numpy as np
    >>> import xdrop
    >>> gen = xdrop.Generator(42)
    >>> a = xdrop.dropout(np.ones(8), 0.5, seed=gen)
    >>> b = xdrop.dropout(np.ones(8), 0.5, seed=gen)
    >>> gen.step
    2
    >>> bool((a == xdrop.dropout(np.ones(8), 0.5, seed=42, step=0)).all())
    True
    """

    __slots__ = ("_lock", "_replay", "_seed", "_step")

    def __init__(self, seed: int, step: int = 0) -> None:
        self._seed = check_u64(seed, "seed")
        self._step = check_u64(step, "step")
        self._lock = threading.Lock()
        self._replay = Replay()  # the calls a checkpoint may recompute (torch only)

    @property
    def seed(self) -> int:
        """The 64-bit seed (fixed for the Generator's life)."""
        return self._seed

    @property
    def step(self) -> int:
        """The step the next call will use (``2**64`` once every step is used)."""
        return self._step

    def take_step(self) -> int:
        """Return the current step and advance it by one, atomically.

        The last step, ``2**64 - 1``, is usable; after it the Generator is
        exhausted and every further call raises ValueError (and changes nothing).
        """
        with self._lock:
            return self._advance()

    def _advance(self) -> int:
        """The step, advanced by one; the caller holds the lock."""
        step = self._step
        if step > MAX_U64:
            raise ValueError(f"Generator(seed={self._seed}) has used every step up to 2**64 - 1; make a new Generator")
        self._step = step + 1
        return step

    def _take_torch_step(self) -> int:
        """:meth:`take_step` for a call on a torch tensor: replays its step when checkpoint recomputes it."""
        return replay_take(self._replay, self._lock, self._advance, self)

    def __getstate__(self) -> tuple[int, int]:
        """``(seed, step)``: what pickling and ``copy.deepcopy`` keep (the lock is recreated)."""
        with self._lock:
            return self._seed, self._step

    def __setstate__(self, state: tuple[int, int]) -> None:
        seed, step = state
        self._seed = check_u64(seed, "seed")
        if not (type(step) is int and 0 <= step <= MAX_U64 + 1):  # 2**64: an exhausted Generator
            raise ValueError(f"step must be an integer in [0, 2**64], got step={step!r}")
        self._step = step
        self._lock = threading.Lock()
        self._replay = Replay()  # recent calls are not state: a copy replays none of the original's

    def __repr__(self) -> str:
        return f"Generator(seed={self._seed}, step={self._step})"
