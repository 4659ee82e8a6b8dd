"""PyTorch layers: drop-in replacements for ``torch.nn.Dropout`` and its family.

``import xdrop`` does not import this module; ``import xdrop.torch`` imports
torch. Each layer takes its torch.nn counterpart's arguments plus ``seed``, and
keeps ``seed`` and ``step`` as int64 buffers, so they are in ``state_dict``: a
run resumed from a checkpoint draws exactly the masks the uninterrupted run
would have. The step advances by one per training forward.

- Autograd saves no mask: backward regenerates it from ``(seed, step)``.
- ``torch.utils.checkpoint``: a forward that runs *during* a backward pass is a
  recomputation; it replays the step of the layer's last training forward
  instead of drawing a new one, so the recomputed mask is the original. A layer
  called more than once between two backward passes cannot tell which call is
  being recomputed and raises instead (use one layer per call site).
- ``torch.compile``: the layers run eagerly inside compiled graphs (a graph
  break), so compiled and eager models give the same bits.
- ``inplace=True`` writes the result into the input, as torch does.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ._checks import check_probability, check_u64
from ._dropout import DropoutCache, dropout_backward, dropout_forward
from ._variants import (
    alpha_dropout_forward,
    drop_path_forward,
    dropout1d_forward,
    dropout2d_forward,
    dropout3d_forward,
    feature_alpha_dropout_forward,
)
from .distributed import layer_call

__all__ = ["AlphaDropout", "DropPath", "Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "FeatureAlphaDropout"]

_U64 = 1 << 64
Forward = Callable[[Tensor], tuple[Tensor, DropoutCache]]


def _to_int64(value: int) -> int:
    """A u64 as the int64 with the same bits (two's complement), for an int64 buffer."""
    return value - _U64 if value >= 1 << 63 else value


class _Regrad(torch.autograd.Function):
    """``g -> dropout_backward(g, cache)``: linear and self-adjoint, so any order of derivative works."""

    @staticmethod
    def forward(ctx: Any, grad: Tensor, cache: DropoutCache) -> Tensor:
        ctx.cache = cache
        out: Tensor = dropout_backward(grad, cache)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return _Regrad.apply(grad, ctx.cache), None  # type: ignore[no-untyped-call]


class _Masked(torch.autograd.Function):
    """Runs a variant's ``*_forward``; keeps only its O(1) cache for backward."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, run: Forward, inplace: bool) -> Tensor:
        out, ctx.cache = run(x)
        if inplace:
            x.copy_(out)
            ctx.mark_dirty(x)
            return x
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        return _Regrad.apply(grad, ctx.cache), None, None  # type: ignore[no-untyped-call]


class _SeededDropout(nn.Module):
    """Seed and step buffers, train/eval, checkpoint replay; subclasses pick the variant."""

    seed: Tensor
    step: Tensor

    def __init__(self, p: float, inplace: bool, seed: int | None) -> None:
        super().__init__()
        self.p = check_probability(p)
        if not isinstance(inplace, bool):
            raise TypeError(f"inplace must be a bool, got inplace={inplace!r}")
        self.inplace = inplace
        seed = secrets.randbits(64) if seed is None else check_u64(seed, "seed")
        self.register_buffer("seed", torch.tensor(_to_int64(seed), dtype=torch.int64))
        self.register_buffer("step", torch.tensor(0, dtype=torch.int64))
        # Python mirrors of the buffers, so a forward never reads a device tensor
        # (a sync on GPU); re-read when the buffer is replaced or written in place.
        self._mirror: dict[str, tuple[Tensor, int, int]] = {}
        self._last_draw: tuple[int, int] | None = None
        self._draws_since_backward = 0
        self._replayed = False

    def _value(self, name: str) -> int:
        buffer: Tensor = getattr(self, name)
        seen = self._mirror.get(name)
        if seen is None or seen[0] is not buffer or seen[1] != buffer._version:
            value = int(buffer.item()) % _U64
            self._mirror[name] = (buffer, buffer._version, value)
            return value
        return seen[2]

    def _set_step(self, value: int) -> None:
        self.step.fill_(_to_int64(value))
        self._mirror["step"] = (self.step, self.step._version, value)

    def _variant(self, x: Tensor, seed: int, step: int) -> tuple[Tensor, DropoutCache]:
        raise NotImplementedError

    @torch.compiler.disable  # type: ignore[untyped-decorator]  # Python-level step bookkeeping
    def forward(self, input: Tensor) -> Tensor:
        if not self.training:
            return input
        recomputing = torch._C._current_graph_task_id() != -1  # a forward inside backward
        if recomputing:
            if self._draws_since_backward != 1 or self._last_draw is None:
                raise RuntimeError(
                    f"{type(self).__name__} is being recomputed during backward (torch.utils.checkpoint) "
                    f"but was called {self._draws_since_backward} times in training mode since the last "
                    "backward, so it cannot tell which call's mask to replay; use one layer per call site "
                    "inside checkpointed code"
                )
            seed, step = self._last_draw
        else:
            seed, step = self._value("seed"), self._value("step")
        # the data-parallel rank coordinate (xdrop.distributed): never a buffer, so DDP cannot erase it
        run: Forward = lambda x: layer_call(self, self._variant, x, seed, step)  # noqa: E731
        out: Tensor = _Masked.apply(input, run, self.inplace)  # type: ignore[no-untyped-call]
        if recomputing:
            self._replayed = True
        else:  # only a call that succeeded advances the step
            if self._replayed:
                self._draws_since_backward, self._replayed = 0, False
            self._draws_since_backward += 1
            self._last_draw = (seed, step)
            self._set_step((step + 1) % _U64)
        return out

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}, seed={self._value('seed')}, step={self._value('step')}"


class Dropout(_SeededDropout):
    """Drop-in ``torch.nn.Dropout`` with a seed: the same masks on every device and backend.

    Parameters
    ----------
    p : float, optional
        Probability of dropping an element, in ``[0, 1]``.
    inplace : bool, optional
        Write the result into the input (as torch.nn.Dropout).
    seed : int or None, optional
        A seed in ``[0, 2**64)``; ``None`` draws one from OS entropy, once, at
        construction. Stored with the step in ``state_dict``.

    Examples
    --------
    >>> import torch
    >>> import xdrop, xdrop.torch
    >>> layer = xdrop.torch.Dropout(0.5, seed=7)
    >>> layer
    Dropout(p=0.5, inplace=False, seed=7, step=0)
    >>> layer(torch.ones(8))
    tensor([0., 0., 2., 2., 2., 0., 2., 0.])
    >>> layer.step
    tensor(1)
    >>> bool(layer.eval()(torch.ones(8)).eq(1).all())
    True
    """

    def __init__(self, p: float = 0.5, inplace: bool = False, *, seed: int | None = None) -> None:
        super().__init__(p, inplace, seed)

    def _variant(self, x: Tensor, seed: int, step: int) -> tuple[Tensor, DropoutCache]:
        out, cache = dropout_forward(x, self.p, seed=seed, step=step)
        return out, cache


class Dropout1d(_SeededDropout):
    """Drop-in ``torch.nn.Dropout1d``: whole channels of ``(N, C, L)`` or ``(C, L)``.

    Parameters
    ----------
    p : float, optional
        Probability of dropping a channel.
    inplace : bool, optional
        Write the result into the input.
    seed : int or None, optional
        As in :class:`Dropout`.

    Examples
    --------
    >>> import torch, xdrop.torch
    >>> xdrop.torch.Dropout1d(0.5, seed=5)(torch.ones(2, 3, 2))[:, :, 0]
    tensor([[0., 2., 0.],
            [0., 2., 2.]])
    """

    def __init__(self, p: float = 0.5, inplace: bool = False, *, seed: int | None = None) -> None:
        super().__init__(p, inplace, seed)

    def _variant(self, x: Tensor, seed: int, step: int) -> tuple[Tensor, DropoutCache]:
        out, cache = dropout1d_forward(x, self.p, seed=seed, step=step)
        return out, cache


class Dropout2d(_SeededDropout):
    """Drop-in ``torch.nn.Dropout2d``: whole channels of ``(N, C, H, W)`` or ``(C, H, W)``.

    A 3-d input is read as ``(C, H, W)`` (see :func:`xdrop.dropout2d`).

    Parameters
    ----------
    p : float, optional
        Probability of dropping a channel.
    inplace : bool, optional
        Write the result into the input.
    seed : int or None, optional
        As in :class:`Dropout`.

    Examples
    --------
    >>> import torch, xdrop.torch
    >>> xdrop.torch.Dropout2d(0.5, seed=5)(torch.ones(2, 3, 2, 2))[:, :, 0, 0]
    tensor([[0., 2., 0.],
            [0., 2., 2.]])
    """

    def __init__(self, p: float = 0.5, inplace: bool = False, *, seed: int | None = None) -> None:
        super().__init__(p, inplace, seed)

    def _variant(self, x: Tensor, seed: int, step: int) -> tuple[Tensor, DropoutCache]:
        out, cache = dropout2d_forward(x, self.p, seed=seed, step=step)
        return out, cache


class Dropout3d(_SeededDropout):
    """Drop-in ``torch.nn.Dropout3d``: whole channels of ``(N, C, D, H, W)`` or ``(C, D, H, W)``.

    Parameters
    ----------
    p : float, optional
        Probability of dropping a channel.
    inplace : bool, optional
        Write the result into the input.
    seed : int or None, optional
        As in :class:`Dropout`.

    Examples
    --------
    >>> import torch, xdrop.torch
    >>> xdrop.torch.Dropout3d(0.5, seed=7)(torch.ones(4, 1, 1, 1)).flatten()
    tensor([0., 0., 2., 2.])
    """

    def __init__(self, p: float = 0.5, inplace: bool = False, *, seed: int | None = None) -> None:
        super().__init__(p, inplace, seed)

    def _variant(self, x: Tensor, seed: int, step: int) -> tuple[Tensor, DropoutCache]:
        out, cache = dropout3d_forward(x, self.p, seed=seed, step=step)
        return out, cache


class AlphaDropout(_SeededDropout):
    """Drop-in ``torch.nn.AlphaDropout`` (see :func:`xdrop.alpha_dropout`).

    Parameters
    ----------
    p : float, optional
        Probability of dropping an element.
    inplace : bool, optional
        Write the result into the input.
    seed : int or None, optional
        As in :class:`Dropout`.

    Examples
    --------
    >>> import torch, xdrop.torch
    >>> xdrop.torch.AlphaDropout(0.5, seed=7)(torch.zeros(4, dtype=torch.float64))
    tensor([-0.7792, -0.7792,  0.7792,  0.7792], dtype=torch.float64)
    """

    def __init__(self, p: float = 0.5, inplace: bool = False, *, seed: int | None = None) -> None:
        super().__init__(p, inplace, seed)

    def _variant(self, x: Tensor, seed: int, step: int) -> tuple[Tensor, DropoutCache]:
        out, cache = alpha_dropout_forward(x, self.p, seed=seed, step=step)
        return out, cache


class FeatureAlphaDropout(_SeededDropout):
    """Drop-in ``torch.nn.FeatureAlphaDropout``: alpha dropout of whole channels (axis 1).

    Parameters
    ----------
    p : float, optional
        Probability of dropping a channel.
    inplace : bool, optional
        Write the result into the input.
    seed : int or None, optional
        As in :class:`Dropout`.

    Examples
    --------
    >>> import torch, xdrop.torch
    >>> out = xdrop.torch.FeatureAlphaDropout(0.5, seed=7)(torch.zeros(2, 2, 3))
    >>> bool((out == out[:, :, :1]).all())
    True
    """

    def __init__(self, p: float = 0.5, inplace: bool = False, *, seed: int | None = None) -> None:
        super().__init__(p, inplace, seed)

    def _variant(self, x: Tensor, seed: int, step: int) -> tuple[Tensor, DropoutCache]:
        out, cache = feature_alpha_dropout_forward(x, self.p, seed=seed, step=step)
        return out, cache


class DropPath(_SeededDropout):
    """Drop-in ``timm.layers.DropPath`` (stochastic depth): whole samples of a residual branch.

    Parameters
    ----------
    drop_prob : float, optional
        Probability of dropping a sample (timm's name; 0 by default as in timm).
    scale_by_keep : bool, optional
        Scale kept samples by ``1 / keep`` (default), or leave them unscaled.
    seed : int or None, optional
        As in :class:`Dropout`.

    Examples
    --------
    >>> import torch, xdrop.torch
    >>> layer = xdrop.torch.DropPath(0.5, seed=7)
    >>> layer
    DropPath(drop_prob=0.5, scale_by_keep=True, seed=7, step=0)
    >>> layer(torch.ones(4, 2))
    tensor([[0., 0.],
            [0., 0.],
            [2., 2.],
            [2., 2.]])
    """

    def __init__(self, drop_prob: float = 0.0, scale_by_keep: bool = True, *, seed: int | None = None) -> None:
        super().__init__(check_probability(drop_prob, "drop_prob"), False, seed)
        if not isinstance(scale_by_keep, bool):
            raise TypeError(f"scale_by_keep must be a bool, got scale_by_keep={scale_by_keep!r}")
        self.scale_by_keep = scale_by_keep

    @property
    def drop_prob(self) -> float:
        """timm's name for ``p``."""
        return self.p

    def _variant(self, x: Tensor, seed: int, step: int) -> tuple[Tensor, DropoutCache]:
        out, cache = drop_path_forward(x, self.p, seed=seed, step=step, scale_by_keep=self.scale_by_keep)
        return out, cache

    def extra_repr(self) -> str:
        return (
            f"drop_prob={self.p}, scale_by_keep={self.scale_by_keep}, "
            f"seed={self._value('seed')}, step={self._value('step')}"
        )
