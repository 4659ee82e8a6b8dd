"""The state every xdrop.torch layer shares: seed and step buffers, the step lock, checkpoint replay.

:class:`_SeededDropout` reads and advances ``(seed, step)`` (see
:mod:`xdrop.torch` for the guarantees) and calls the registered operator
``torch.ops.xdrop.dropout``; each layer in :mod:`xdrop.torch._layers` only
picks the variant (its noise shape, alpha's constants, drop path's scaling).
"""

from __future__ import annotations

import copy
import hashlib
import threading
import types
from typing import Any

import torch
from torch import Tensor, nn

from .._functional._dropout import dropout
from .._functional._variants import alpha_dropout, drop_path
from .._kernels.torch import _ops as _torch_ops
from .._lib._arith import alpha_constants, float_format
from .._lib._checks import check_probability, check_u64
from .._lib._replay import NoReplay, Replay, draw_u64, take
from .._lib._stream import keep_count, scale_for
from .._lib._u64 import MASK64, from_int64, next_u64, to_int64
from ._clones import find_root, separate
from ._ranks import RANK_SHIFT, layer_call, layer_is_placed, rank_step_offset

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


def _u64(buffer: Tensor) -> int:
    """The u64 value an int64 buffer holds."""
    return from_int64(int(buffer.item()))


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
        self._replay = Replay()  # recent training calls, for checkpoint recomputation
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Back to the seed the layer was built with and step 0 (``to_empty()`` calls it)."""
        if not self.seed.is_meta:
            with torch.no_grad():
                self.seed.fill_(to_int64(self._initial_seed))
                self.step.zero_()
        self._replay.clear()

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
    # The mask ignores (seed, step) when p = 0 (False where p is given per call, as for attention streams).
    _mask_free_at_zero = True

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
        try:
            return take(self._replay, _STEP_LOCK, self._advance, self)
        except NoReplay as unmatched:
            if self.p or not self._mask_free_at_zero:
                raise
            # p = 0 keeps every element whatever (seed, step) it uses: never an error, and the step stays
            found: tuple[int, int] | Tensor = unmatched.fallback or (_u64(self.seed), _u64(self.step))
            return found

    def _advance(self) -> tuple[int, int] | Tensor:
        """Read ``(seed, step)`` and write ``step + 1`` (under ``_STEP_LOCK``)."""
        views = self._state_views()
        if views is not None:  # CPU buffers, read and advanced through their memory
            # the u64 forms' arithmetic inline: this runs on every training call of every layer
            seed, step = int(views[0]) & MASK64, int(views[1]) & MASK64
            views[1][()] = to_int64((step + 1) & MASK64)
            return seed, step
        if self.step.device.type == "cpu":  # buffers NumPy cannot view (a tensor subclass)
            seed, step = _u64(self.seed), _u64(self.step)
            self.step.fill_(to_int64(next_u64(step)))  # a buffer: no autograd to pause
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
        state.pop("_take", None)  # a clone's mark (below): a copy is marked by its own deep copy
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)  # type: ignore[no-untyped-call]
        if "_replay" not in self.__dict__:  # a layer pickled by an xdrop before Replay (it kept "_draws")
            self.__dict__.pop("_draws", None)
            self._replay = Replay()

    def __deepcopy__(self, memo: dict[int, Any]) -> _SeededDropout:
        """The default deep copy; the copy and its source are marked as clones (see :mod:`xdrop.torch._clones`).

        The mark replaces ``_take`` for the layer's next training call, which
        gives the clones in its model their own streams and drops the mark, so
        layers that were never copied pay nothing for it.
        """
        cls = type(self)
        twin = cls.__new__(cls)
        memo[id(self)] = twin
        twin.__setstate__(copy.deepcopy(self.__getstate__(), memo))
        for layer in (self, twin):
            layer.__dict__["_take"] = types.MethodType(_SeededDropout._take_as_clone, layer)
        return twin

    def _take_as_clone(self) -> tuple[int, int] | Tensor:
        """A marked layer's first training call: separate the clones in the model that runs it, then take."""
        if torch.compiler.is_compiling():  # no call stack to read: the mark stays for an eager call
            return _SeededDropout._take(self)
        with _STEP_LOCK:
            separate_clones(find_root(self))
        self.__dict__.pop("_take", None)
        return self._take()

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
            seed, step = taken if isinstance(taken, tuple) else (from_int64(v) for v in taken.tolist())
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

    def get_stream(self) -> tuple[int, int]:
        """The layer's ``(seed, step)`` as unsigned integers in ``[0, 2**64)``: the stream its next call draws.

        The buffers hold the bits of these u64 values as int64, so ``int(layer.seed)``
        is negative for seeds of ``2**63`` and above; this reads them as the values
        every xdrop function, and the Flax and Keras layers' ``set_stream``, take.
        Buffers on a CUDA device are copied to the host (a sync).

        Returns
        -------
        tuple of int
            ``(seed, step)``; the next training forward uses ``step``.

        Examples
        --------
        >>> import torch, xdrop.torch
        >>> layer = xdrop.torch.Dropout(0.5, seed=2**64 - 1)
        >>> int(layer.seed)  # the int64 buffer's bits
        -1
        >>> _ = layer(torch.ones(4))
        >>> layer.get_stream()
        (18446744073709551615, 1)
        """
        self._require_values("get_stream")
        return _u64(self.seed), _u64(self.step)

    def set_stream(self, seed: int, step: int = 0) -> None:
        """Set the layer's ``(seed, step)``: its next training forward draws ``(seed, step)``.

        The counterpart of :meth:`get_stream` (and of the Flax and Keras layers'
        ``get_stream``), for porting a model's dropout state between frameworks.
        The seed the layer was built with, to which ``reset_parameters()`` returns,
        is unchanged.

        Parameters
        ----------
        seed, step : int
            Integers in ``[0, 2**64)``.

        Examples
        --------
        >>> import torch, xdrop, xdrop.torch
        >>> layer = xdrop.torch.Dropout(0.5, seed=1)
        >>> layer.set_stream(2**63 + 5, step=3)
        >>> layer.get_stream()
        (9223372036854775813, 3)
        >>> bool(layer(torch.ones(8)).eq(xdrop.dropout(torch.ones(8), 0.5, seed=2**63 + 5, step=3)).all())
        True
        """
        seed, step = check_u64(seed, "seed"), check_u64(step, "step")
        self._require_values("set_stream")
        with torch.no_grad(), _STEP_LOCK:
            self.seed.fill_(to_int64(seed))
            self.step.fill_(to_int64(step))
            self._replay.clear()  # recorded calls of the old stream are not replays of the new one

    def _require_values(self, method: str) -> None:
        if self.seed.is_meta or self.step.is_meta:
            raise RuntimeError(
                f"{type(self).__name__}.{method}: the seed and step buffers are on the meta device and hold no "
                "values; call to_empty() first"
            )

    def _state_repr(self) -> str:
        if self.seed.is_meta:
            return f"seed={self._initial_seed}, step=?"
        return f"seed={_u64(self.seed)}, step={_u64(self.step)}"

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}, {self._state_repr()}"


def _seed_of(layer: nn.Module) -> int | None:
    seed: Tensor = layer.seed  # type: ignore[assignment]
    return None if seed.is_meta else _u64(seed)


def _reseed(layer: nn.Module, seed: int) -> None:
    with torch.no_grad():
        layer.seed.fill_(to_int64(seed))  # type: ignore[operator]


def separate_clones(root: nn.Module) -> None:
    """Give the clones of xdrop.torch layers in ``root`` streams of their own (see :mod:`xdrop.torch._clones`)."""
    separate(root, _SeededDropout, _seed_of, _reseed, path_seed)


def path_seed(seed: int, path: str) -> int:
    """A u64 seed for the layer at ``path``: a hash of (seed, path), so every layer has its own stream."""
    digest = hashlib.blake2b(f"xdrop.torch.replace_dropout:{seed}:{path}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")
