"""PyTorch layers: drop-in replacements for ``torch.nn.Dropout`` and its family.

``import xdrop`` does not import this module; ``import xdrop.torch`` imports
torch. Each layer takes its torch.nn counterpart's arguments plus ``seed``, and
keeps ``seed`` and ``step`` as int64 buffers (the u64 value's bits), so they are
in ``state_dict``: a run resumed from a checkpoint draws exactly the masks the
uninterrupted run would have. The step advances by one per training forward.

- **The buffers are the state.** Every training forward reads ``seed`` and
  ``step`` from the buffers and writes ``step + 1`` back, under one lock, so
  writes through ``.data``, ``.numpy()``, ``load_state_dict`` or
  ``dist.broadcast`` are honoured and threads sharing a layer never get the
  same step. With the buffers on a CUDA device the layer never reads them on
  the host: it passes them to the operator, which reads them on the device, and
  advances ``step`` there (no sync per forward; a CUDA graph captured around a
  step replays with the current step, so masks advance between replays).
- **Seeds.** Without ``seed`` a layer draws one from torch's default
  generator when it is built, so ``torch.manual_seed`` reproduces the run, and
  distinct layers get distinct streams. Two layers given the same explicit
  seed draw the *same* masks: give each its own (or use :func:`replace_dropout`).
  Drawing the seed consumes torch's default generator once per layer built,
  so parameters initialised after it differ from a model built with
  ``nn.Dropout`` under the same ``torch.manual_seed``.
- **Checkpoints.** An ``nn.Dropout`` model's ``state_dict`` (no ``seed`` /
  ``step`` keys) loads into a model with xdrop layers, strict or not: layers
  whose keys are both absent keep their seed and step. The other way, save
  with :func:`plain_state_dict` (or load with ``strict=False``).
- **Meta device.** A layer built under ``torch.device("meta")`` gets its
  constructed seed and step 0 back on ``to_empty()`` (or ``reset_parameters()``).
- **Autograd** saves no mask: backward regenerates it from ``(seed, step)``;
  forward-mode AD (``torch.autograd.forward_ad``) is supported.
- **torch.utils.checkpoint** (both ``use_reentrant`` modes): a recomputation
  replays the mask of the call it recomputes, also for a layer called several
  times in the region and for a later ``retain_graph`` backward. Each training
  forward that may be recomputed (grad mode off, as in a reentrant
  checkpoint's first pass, or saved-tensor hooks active, as in a non-reentrant
  one) draws a token from torch's CPU generator, which ``checkpoint``
  restores before recomputing (``preserve_rng_state=True``, its default); a
  recomputation with ``preserve_rng_state=False`` raises. The last 256 calls
  of each layer can be replayed. Other forwards draw nothing from torch's
  generator.
- **torch.jit.trace** of a training-mode layer raises: the trace would freeze
  ``(seed, step)``. Trace in ``eval()`` mode, or use ``torch.compile``.
- **torch.compile** (``fullgraph=True`` works, any backend): a compiled
  forward calls ``torch.ops.xdrop.dropout`` with ``(seed, step)`` stacked from
  the buffers and advances ``step`` in the graph, so there is no graph break, no
  recompilation per step, and the bits equal eager's step by step. Compiled
  forwards draw no checkpoint token and take no lock: ``torch.utils.checkpoint``
  *inside* a compiled region is left to torch's own handling (the graph's
  recomputation sees the step value the graph read), but a compiled layer's
  call is not replayed by the eager replay table, and two threads running the
  same compiled layer at once may share a step.
- **Layout**: the output has the input's memory layout (``channels_last``,
  permuted strides), as ``torch.nn.Dropout``'s.
- ``inplace=True`` writes the result into the input, as torch does.
- Ranks: ``Dropout1d/2d/3d`` accept, warn about and refuse exactly the ranks
  ``torch.nn`` 2.x does (``Dropout2d`` reads 3-d input as ``(N, C, L)``);
  refusals are a ``RankError``, both ``ValueError`` and ``RuntimeError``.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from ._arith import alpha_constants, float_format
from ._checks import check_probability, check_u64
from ._dropout import dropout
from ._kernels import _torch_ops
from ._replay import draw_u64, take
from ._stream import keep_count, scale_for
from ._variants import alpha_dropout, channel_noise_shape, drop_path, feature_noise_shape, sample_noise_shape
from .distributed import RANK_SHIFT, layer_call, layer_is_placed, rank_step_offset

__all__ = [
    "AlphaDropout",
    "DropPath",
    "Dropout",
    "Dropout1d",
    "Dropout2d",
    "Dropout3d",
    "FeatureAlphaDropout",
    "plain_state_dict",
    "replace_dropout",
]

_U64 = 1 << 64
M = TypeVar("M", bound=nn.Module)

# One lock for every layer's read-step / write-step + 1 (a layer holds no lock, so it pickles).
_STEP_LOCK = threading.Lock()


def _op_constants(alpha: bool, p: float, dtype: torch.dtype, scale_by_keep: bool) -> tuple[int, float, float, float]:
    """``(k, a, b, c)`` of ``torch.ops.xdrop.dropout`` for a layer: what the functional ``*_forward`` uses.

    Cached: exact rational arithmetic per call would dominate a small forward (torch.compile folds it).
    """
    key = (alpha, p, dtype, scale_by_keep)
    found = None if torch.compiler.is_compiling() else _CONSTANTS.get(key)  # a dict filled while tracing recompiles
    if found is None:
        k = keep_count(p)
        if alpha:
            a, b, c = alpha_constants(k, float_format(torch, dtype))
        else:
            a, b, c = (scale_for(k, torch, dtype) if scale_by_keep else 1.0), 0.0, 0.0
        found = (k, a, b, c)
        if not torch.compiler.is_compiling():
            _CONSTANTS[key] = found
    return found


_CONSTANTS: dict[tuple[bool, float, torch.dtype, bool], tuple[int, float, float, float]] = {}


def _to_int64(value: int) -> int:
    """A u64 as the int64 with the same bits (two's complement), for an int64 buffer."""
    return value - _U64 if value >= 1 << 63 else value


def _u64(buffer: Tensor) -> int:
    return int(buffer.item()) % _U64


def _addresses(seed: Tensor, step: Tensor) -> tuple[int, int]:
    return seed.data_ptr(), step.data_ptr()


def _dense_like(x: Tensor, values: Tensor) -> Tensor:
    """``values`` (row-major) in the layout torch's elementwise ops give for ``x``: x's strides where x is
    dense (``empty_like``), else dense in x's stride order."""
    if x.is_contiguous():
        return values
    out = torch.empty_like(x, dtype=values.dtype)
    if out.stride() != x.stride():  # x has gaps (a slice): order the dims by x's strides, as TensorIterator
        strides = x.stride()
        order = sorted(range(x.ndim), key=lambda d: -strides[d])  # stable: equal strides keep their order
        out = torch.empty([x.shape[d] for d in order], dtype=values.dtype, device=values.device)
        out = out.permute([order.index(d) for d in range(x.ndim)])
    return values if values.stride() == out.stride() else out.copy_(values)


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
        self._initial_seed = draw_u64() if seed is None else check_u64(seed, "seed")
        self.register_buffer("seed", torch.empty((), dtype=torch.int64))
        self.register_buffer("step", torch.empty((), dtype=torch.int64))
        # (RNG token) -> (seed, step) of recent training calls, for checkpoint recomputation.
        self._draws: OrderedDict[int, tuple[int, int] | Tensor] = OrderedDict()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Back to the seed the layer was built with and step 0 (``to_empty()`` calls it)."""
        if not self.seed.is_meta:
            with torch.no_grad():
                self.seed.fill_(_to_int64(self._initial_seed))
                self.step.zero_()
        self._draws.clear()

    def _apply(self, fn: Any, recurse: bool = True) -> Any:
        was_meta = self.seed.is_meta
        out = super()._apply(fn, recurse)  # type: ignore[no-untyped-call]
        if was_meta and not self.seed.is_meta:  # to_empty(): the buffers hold garbage
            self.reset_parameters()
        return out

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        keys = (prefix + "seed", prefix + "step")
        from_torch_dropout = not any(key in state_dict for key in keys)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        if from_torch_dropout:  # a torch.nn dropout layer's (empty) state: keep seed and step
            for key in keys:
                if key in missing_keys:
                    missing_keys.remove(key)

    def _noise_shape(self, x: Tensor) -> tuple[int, ...] | None:
        """Checks x's rank (warning as torch does) before any state changes; ``None`` is x's own shape."""
        return None

    # Class-level settings of the variant, read by forward: alpha dropout's affine form, DropPath's scaling.
    _alpha = False
    scale_by_keep = True

    def _take(self) -> tuple[int, int] | Tensor:
        """The ``(seed, step)`` of this training call: the next step, or the replayed one of a recomputation.

        The one place that reads and advances the layer's state. Python ints for
        buffers on the CPU; for buffers on another device (CUDA) and under
        torch.compile, an int64 tensor ``(seed, step)`` of shape ``(2,)`` on the
        buffers' device, read by the kernel there (no host sync per call).
        """
        if torch.compiler.is_compiling():
            # No token, no lock: AOT autograd's backward (and recomputation) reuses this stacked value.
            pair = torch.stack((self.seed, self.step))
            self.step.add_(1)  # int64 wraps around: the u64 step + 1 mod 2**64 in two's complement
            return pair
        if torch.jit.is_tracing():  # type: ignore[attr-defined,no-untyped-call]
            raise RuntimeError(
                f"torch.jit.trace of a training-mode xdrop.torch.{type(self).__name__} would freeze its seed and "
                "step into the trace (the same mask at every call); trace in eval() mode or use torch.compile"
            )
        return take(self._draws, _STEP_LOCK, self._advance, self)

    def _advance(self) -> tuple[int, int] | Tensor:
        """Read ``(seed, step)`` and write ``step + 1`` (under ``_STEP_LOCK``)."""
        views = self._state_views()
        if views is not None:  # CPU buffers, read and advanced through their memory
            seed, step = int(views[0]) % _U64, int(views[1]) % _U64
            views[1][()] = _to_int64((step + 1) % _U64)
            return seed, step
        if self.step.device.type == "cpu":  # buffers NumPy cannot view (a tensor subclass)
            seed, step = _u64(self.seed), _u64(self.step)
            self.step.fill_(_to_int64((step + 1) % _U64))  # a buffer: no autograd to pause
            return seed, step
        # stays on the device: a fresh tensor, so the in-place advance does not change it
        pair = torch.stack((self.seed, self.step))
        self.step.add_(1)
        return pair

    def _state_views(self) -> tuple[Any, Any] | None:
        """NumPy views of the seed and step buffers when they are plain CPU tensors, else None.

        Reading and writing a 0-d buffer through a view costs a tenth of ``item()``/``fill_()``,
        and it is the buffers' own memory, so every write to them is seen (``load_state_dict``,
        ``dist.broadcast``, ``.data``, ``.numpy()``). The views are made again when a buffer is
        replaced (``.to()``, assignment) or its storage moves (``.data = ...``, ``share_memory_()``),
        and are not part of the layer's state (:meth:`__getstate__`).
        """
        buffers = self._buffers
        seed, step = buffers["seed"], buffers["step"]
        found = self.__dict__.get("_views")
        if found is not None and found[0] is seed and found[1] is step and found[2:4] == _addresses(seed, step):
            views: tuple[Any, Any] = found[4]
            return views
        if not (type(seed) is Tensor and type(step) is Tensor and seed.is_cpu and step.is_cpu):
            return None
        if seed.dtype != torch.int64 or step.dtype != torch.int64 or seed.ndim or step.ndim:
            return None
        try:
            views = (seed.numpy(), step.numpy())
        except RuntimeError:  # e.g. a buffer that requires grad or has the neg/conj bit: the tensor path
            return None
        self.__dict__["_views"] = (seed, step, *_addresses(seed, step), views)
        return views

    def __getstate__(self) -> dict[str, Any]:
        state: dict[str, Any] = super().__getstate__()  # type: ignore[no-untyped-call]
        state.pop("_views", None)  # views of this process's buffers: made again on first use
        return state

    def _functional(self, x: Tensor, seed: int, step: int, noise: tuple[int, ...] | None) -> Tensor:
        """The layer's dropout through the public functions (which place blocks of a global array)."""
        out: Tensor
        if self._alpha:
            out = alpha_dropout(x, self.p, seed=seed, step=step, noise_shape=noise)
        elif not self.scale_by_keep:
            out = drop_path(x, self.p, seed=seed, step=step, scale_by_keep=False)
        else:
            out = dropout(x, self.p, seed=seed, step=step, noise_shape=noise)
        return out

    def forward(self, input: Tensor) -> Tensor:
        if not self.training:
            return input
        if not isinstance(input, Tensor) or not input.is_floating_point():
            what = f"x.dtype={input.dtype}" if isinstance(input, Tensor) else f"x of type {type(input).__name__}"
            raise TypeError(f"x must have a real floating dtype, got {what}")
        noise = self._noise_shape(input)
        if input.is_meta:  # shape inference: no state to read or advance
            return torch.empty_like(input)
        taken = self._take()
        if layer_is_placed(self, input):  # DTensor, or a global-batch layer: the functional path places blocks
            seed, step = taken if isinstance(taken, tuple) else (int(v) % _U64 for v in taken.tolist())
            placed: Tensor = layer_call(self, lambda t, s, st: self._functional(t, s, st, noise), input, seed, step)
            return input.copy_(placed) if self.inplace else placed
        if offset := rank_step_offset(self):  # per-rank masks: never in a buffer, so DDP cannot erase it
            if isinstance(taken, tuple):
                if taken[1] >> RANK_SHIFT:
                    raise ValueError(
                        f"per-rank masks fold the rank into the step (step + rank * 2**{RANK_SHIFT}), which needs "
                        f"step < 2**{RANK_SHIFT}, got step={taken[1]}; "
                        "use xdrop.distributed.data_parallel(model, 'global_batch') instead"
                    )
                taken = (taken[0], taken[1] + offset)
            else:
                taken = taken + torch.tensor([0, offset], dtype=taken.dtype, device=taken.device)
        k, a, b, c = _op_constants(self._alpha, self.p, input.dtype, self.scale_by_keep)
        shape = tuple(input.shape) if noise is None else noise
        if isinstance(taken, tuple):
            out: Tensor = _torch_ops.dropout(input, taken[0], taken[1], k, shape, a, b, c)
        else:
            out = _torch_ops.dropout(input, taken, 0, k, shape, a, b, c)
        if self.inplace:
            return input.copy_(out)
        return out if out.stride() == input.stride() else _dense_like(input, out)

    def _state_repr(self) -> str:
        if self.seed.is_meta:
            return f"seed={self._initial_seed}, step=?"
        return f"seed={_u64(self.seed)}, step={_u64(self.step)}"

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}, {self._state_repr()}"


class Dropout(_SeededDropout):
    """Drop-in ``torch.nn.Dropout`` with a seed: the same masks on every device and backend.

    Parameters
    ----------
    p : float, optional
        Probability of dropping an element, in ``[0, 1]``.
    inplace : bool, optional
        Write the result into the input (as torch.nn.Dropout).
    seed : int or None, optional
        A seed in ``[0, 2**64)``; ``None`` draws one from torch's default
        generator, once, at construction (so ``torch.manual_seed`` reproduces
        it). Stored with the step in ``state_dict``. Layers given the same
        seed draw the same masks.

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

    def _noise_shape(self, x: Tensor) -> tuple[int, ...] | None:
        return channel_noise_shape(tuple(x.shape), 1, "dropout1d")


class Dropout2d(_SeededDropout):
    """Drop-in ``torch.nn.Dropout2d``: whole channels of ``(N, C, H, W)``.

    As ``torch.nn.Dropout2d`` 2.x: a 3-d input is read as ``(N, C, L)`` with
    torch's warning, other ranks >= 2 as ``(N, C, ...)`` with its deprecation
    warning (see :func:`xdrop.dropout2d`).

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

    def _noise_shape(self, x: Tensor) -> tuple[int, ...] | None:
        return channel_noise_shape(tuple(x.shape), 2, "dropout2d")


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

    def _noise_shape(self, x: Tensor) -> tuple[int, ...] | None:
        return channel_noise_shape(tuple(x.shape), 3, "dropout3d")


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

    _alpha = True

    def __init__(self, p: float = 0.5, inplace: bool = False, *, seed: int | None = None) -> None:
        super().__init__(p, inplace, seed)


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

    _alpha = True

    def __init__(self, p: float = 0.5, inplace: bool = False, *, seed: int | None = None) -> None:
        super().__init__(p, inplace, seed)

    def _noise_shape(self, x: Tensor) -> tuple[int, ...] | None:
        return feature_noise_shape(tuple(x.shape), "feature_alpha_dropout")


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

    def _noise_shape(self, x: Tensor) -> tuple[int, ...] | None:
        return sample_noise_shape(tuple(x.shape), "drop_path")

    def extra_repr(self) -> str:
        return f"drop_prob={self.p}, scale_by_keep={self.scale_by_keep}, {self._state_repr()}"


_REPLACEMENTS: dict[type[nn.Module], type[_SeededDropout]] = {
    nn.Dropout: Dropout,
    nn.Dropout1d: Dropout1d,
    nn.Dropout2d: Dropout2d,
    nn.Dropout3d: Dropout3d,
    nn.AlphaDropout: AlphaDropout,
    nn.FeatureAlphaDropout: FeatureAlphaDropout,
}


def _path_seed(seed: int, path: str) -> int:
    """A u64 seed for the layer at ``path``: a hash of (seed, path), so every layer has its own stream."""
    digest = hashlib.blake2b(f"xdrop.torch.replace_dropout:{seed}:{path}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def replace_dropout(module: M, seed: int | None = None) -> M:
    """Replace every torch.nn dropout layer in ``module`` with its xdrop.torch counterpart, in place.

    ``nn.Dropout``, ``Dropout1d``, ``Dropout2d``, ``Dropout3d``, ``AlphaDropout``
    and ``FeatureAlphaDropout`` (exactly those classes, not subclasses, whose
    ``forward`` may differ) become the xdrop layer with the same ``p``,
    ``inplace`` and training mode. The layer at module path ``name`` gets the
    seed ``blake2b(seed, name)``: its own stream, the same in every run for
    the same ``seed`` and model structure. A layer shared by several parents
    stays shared. The dropouts that are not modules are converted too
    (:mod:`xdrop._torch_attention`, the docs' "Attention dropout" page):
    transformers attention modules ("eager" / "sdpa") switch to xdrop's
    attention, each with its own stream (a child ``xdrop_attention``), and
    ``F.dropout`` / ``F.scaled_dot_product_attention`` calls made inside
    ``module``'s forward are routed to xdrop (the buffer ``xdrop_functional``).

    Checkpoints saved before the conversion load into the converted model
    (the xdrop layers keep their seeds, step 0: see the module docs).

    Parameters
    ----------
    module : torch.nn.Module
        The model; changed in place. A bare dropout layer is not a container:
        its replacement is returned and the argument is left unchanged.
    seed : int or None, optional
        Base seed in ``[0, 2**64)``; ``None`` draws one from torch's default
        generator (so ``torch.manual_seed`` reproduces it).

    Returns
    -------
    torch.nn.Module
        ``module`` (or the replacement of a bare dropout layer).

    Examples
    --------
    >>> import torch, xdrop.torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.1), torch.nn.Dropout2d(0.2))
    >>> xdrop.torch.replace_dropout(model, seed=0)[1:]  # doctest: +ELLIPSIS
    Sequential(
      (1): Dropout(p=0.1, inplace=False, seed=..., step=0)
      (2): Dropout2d(p=0.2, inplace=False, seed=..., step=0)
    )
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got module of type {type(module).__name__}")
    base = draw_u64() if seed is None else check_u64(seed, "seed")

    def convert(old: nn.Module, path: str) -> _SeededDropout:
        layer = _REPLACEMENTS[type(old)](old.p, old.inplace, seed=_path_seed(base, path))  # type: ignore[arg-type]
        return layer.train(old.training)

    if type(module) in _REPLACEMENTS:
        return convert(module, "")  # type: ignore[return-value]
    done: dict[int, _SeededDropout] = {}
    for parent_path, parent in list(module.named_modules(remove_duplicate=False)):
        for name, child in list(parent._modules.items()):  # named_children() would skip a repeated child
            if type(child) in _REPLACEMENTS:
                path = f"{parent_path}.{name}" if parent_path else name
                if id(child) not in done:
                    done[id(child)] = convert(child, path)
                setattr(parent, name, done[id(child)])
    # -- hook: the dropouts that are not modules (transformers attention, functional calls) --
    from ._torch_attention import convert_attention, convert_functional

    convert_attention(module, base)
    convert_functional(module, base)
    return module


def plain_state_dict(module: nn.Module) -> dict[str, Any]:
    """``module.state_dict()`` without the xdrop layers' ``seed`` and ``step``.

    What the same model built with ``torch.nn`` dropout layers loads with
    ``strict=True``. (A checkpoint for resuming xdrop training keeps them: use
    ``state_dict()``.)

    Parameters
    ----------
    module : torch.nn.Module
        A model containing xdrop.torch layers.

    Returns
    -------
    dict
        The state dict, less those entries.

    Examples
    --------
    >>> import torch, xdrop.torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2), xdrop.torch.Dropout(0.5, seed=1))
    >>> sorted(model.state_dict())
    ['0.bias', '0.weight', '1.seed', '1.step']
    >>> sorted(xdrop.torch.plain_state_dict(model))
    ['0.bias', '0.weight']
    """
    state = module.state_dict()
    for path, sub in module.named_modules():
        if isinstance(sub, _SeededDropout):
            prefix = f"{path}." if path else ""
            state.pop(prefix + "seed", None)
            state.pop(prefix + "step", None)
        if "xdrop_functional" in sub._buffers:  # hook: the functional stream of xdrop._torch_attention
            state.pop(f"{path}.xdrop_functional" if path else "xdrop_functional", None)
    return state
