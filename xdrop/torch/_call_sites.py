"""Whole-model conversion: the dropouts ``replace_dropout`` cannot swap as modules.

Three kinds of call draw from torch's RNG without a dropout module
(``torch.nn.MultiheadAttention``, a fourth, is converted by :mod:`xdrop.torch._mha`):

- **transformers attention** (``F.dropout`` of the weights in the "eager"
  implementation, ``dropout_p`` of ``F.scaled_dot_product_attention`` in
  "sdpa"). Each attention module (one whose ``forward`` dispatches through
  transformers' ``ALL_ATTENTION_FUNCTIONS``) gets a child ``xdrop_attention``
  holding its stream (seed ``blake2b(seed, path + "#attention")``, its step a
  buffer, advanced per training call), and the model switches to the
  attention implementation ``"xdrop_eager"`` / ``"xdrop_sdpa"`` (registered
  with ``AttentionInterface``, with the original's mask function). In
  training with ``dropout > 0`` it runs :func:`xdrop.scaled_dot_product_attention`
  with the module's own ``p`` (transformers passes ``dropout=self.dropout.p``);
  otherwise (eval, p = 0) the original implementation, so eval outputs are
  unchanged bit for bit.
- **attention call sites**: a module (not the converted one itself) whose
  ``forward`` calls ``F.scaled_dot_product_attention`` (timm's attention,
  hand-written blocks) gets a child ``xdrop_attention`` too; while its
  forward runs in training, a ``TorchFunctionMode`` runs its calls with
  ``dropout_p > 0`` through :func:`xdrop.scaled_dot_product_attention` at
  that stream's next step.
- **other functional calls** made while the converted module's ``forward``
  runs in training: ``torch.nn.functional.dropout`` (and so ``nn.Dropout`` subclasses the
  conversion leaves as they are) and ``F.scaled_dot_product_attention`` with
  ``dropout_p > 0`` are routed to xdrop by a ``TorchFunctionMode``. Their
  stream is the converted module's int64 buffer ``xdrop_functional``
  ``(seed, step)``, seed ``blake2b(seed, "#functional")``: the ``c``-th such
  call of a forward uses seed ``blake2b(that seed, "call{c}")`` and ``step``,
  which advances once per forward that makes such a call. (A buffer, not a
  child: a container such as ``nn.Sequential`` calls its children.)

The ``xdrop_attention`` children are xdrop.torch dropout layers (their
``forward`` is never called). All this state is in ``state_dict``; a
checkpoint without them loads (they keep their values), and
:func:`xdrop.torch.plain_state_dict` drops them.
"""

from __future__ import annotations

import copy
import inspect
import sys
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from .._kernels.torch import _ops as _torch_ops
from .._lib._u64 import from_int64, next_u64, to_int64
from ._layers import Dropout
from ._seeded import _STEP_LOCK, _op_constants, path_seed

STREAM = "xdrop_attention"
FUNCTIONAL = "xdrop_functional"
# The attention implementations converted, and the name each becomes.
CONVERTED = {"eager": "xdrop_eager", "sdpa": "xdrop_sdpa"}


class Stream(Dropout):
    """The ``(seed, step)`` state of one converted attention call site; not a layer to call.

    ``p`` is the dropout the site applies, shown in the repr: the owner's at
    conversion, then the one of its latest training call (the call passes it).
    """

    _mask_free_at_zero = False  # its p may be 0 at conversion: each call passes its own

    def __init__(self, seed: int, p: float = 0.0) -> None:
        super().__init__(p, seed=seed)

    def forward(self, input: Any) -> Any:
        raise RuntimeError("xdrop's Stream holds the state of a converted call site: it is not a layer to call")

    def extra_repr(self) -> str:
        return f"p={self.p}, {self._state_repr()}"

    def show(self, p: float) -> None:
        """Record ``p`` as the dropout applied (a Python attribute: not while torch.compile traces)."""
        if p != self.p and not torch.compiler.is_compiling():
            self.p = p

    def drop(self, x: Tensor, p: float, taken: tuple[int, int] | Tensor) -> Tensor:
        """``x`` dropped with probability ``p`` at the ``(seed, step)`` ``taken`` by :meth:`_take`."""
        k, a, b, c = _op_constants(False, p, x.dtype, True)
        seed, step = taken if isinstance(taken, tuple) else (taken, 0)
        out: Tensor = _torch_ops.dropout(x, seed, step, k, tuple(x.shape), a, b, c)
        return out


def forward_names(module: nn.Module) -> tuple[str, ...]:
    """The global and attribute names the code of ``type(module).forward`` uses."""
    forward = inspect.unwrap(type(module).forward)
    names: tuple[str, ...] = getattr(getattr(forward, "__code__", None), "co_names", ())
    return names


def _dispatches_attention(module: nn.Module) -> bool:
    return "ALL_ATTENTION_FUNCTIONS" in forward_names(module)


# Where attention modules keep their dropout probability: a float, or a dropout module's ``p``.
_P_ATTRIBUTES = ("attention_dropout", "dropout", "dropout_prob", "dropout_p", "attn_dropout", "attn_drop")


def site_p(module: nn.Module) -> float:
    """The dropout an attention module applies in training, as far as its attributes tell (else 0)."""
    for name in _P_ATTRIBUTES:
        value = getattr(module, name, None)
        value = getattr(value, "p", value)
        if isinstance(value, (float, int)) and not isinstance(value, bool):
            return float(value)
    return 0.0


def _attention(module: nn.Module, query: Any, key: Any, value: Any, attention_mask: Any, **kwargs: Any) -> Any:
    """transformers' attention function for the converted models (``"xdrop_eager"`` / ``"xdrop_sdpa"``)."""
    stream = module._modules.get(STREAM)
    if stream is None:
        raise RuntimeError(
            f"{type(module).__name__} has no xdrop stream: select an xdrop attention implementation "
            "through xdrop.torch.replace_dropout(model, seed=...)"
        )
    dropout = float(kwargs.get("dropout", 0.0))
    if not (module.training and dropout > 0):  # eval, p = 0: the original implementation, unchanged
        original: Any = stream.xdrop_original
        return original(module, query, key, value, attention_mask, **kwargs)
    stream.show(dropout)  # type: ignore[operator]
    from .._functional._attention import attention_with_state

    is_causal = kwargs.get("is_causal")
    is_causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    is_causal = bool(query.shape[2] > 1 and attention_mask is None and is_causal)
    if kwargs.get("position_bias") is not None:
        from transformers.integrations.sdpa_attention import create_position_bias_mask

        attention_mask = create_position_bias_mask(kwargs["position_bias"], attention_mask, is_causal, query, key)
        is_causal = False
    if attention_mask is not None and attention_mask.dtype != torch.bool:
        attention_mask = attention_mask.to(query.dtype)
    taken = stream._take()  # type: ignore[operator]  # (the module is an xdrop Stream)
    out = attention_with_state(query, key, value, attention_mask, dropout, is_causal, kwargs.get("scaling"), taken)
    return out.transpose(1, 2).contiguous(), None


def _original(module: nn.Module, implementation: str) -> Any:
    if implementation == "eager":
        found = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
        if found is None:
            raise TypeError(f"{type(module).__name__}: no eager_attention_forward in {type(module).__module__}")
        return found
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    return ALL_ATTENTION_FUNCTIONS[implementation]


def _register() -> None:
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    for old, new in CONVERTED.items():
        if new not in ALL_ATTENTION_FUNCTIONS:
            ALL_ATTENTION_FUNCTIONS.register(new, _attention)
            ALL_MASK_ATTENTION_FUNCTIONS.register(new, ALL_MASK_ATTENTION_FUNCTIONS[old])


def convert_attention(module: nn.Module, base: int) -> None:
    """Give each transformers attention module its stream and switch its model to xdrop attention."""
    transformers = sys.modules.get("transformers")
    if transformers is None:  # no transformers model can be in a program that has not imported it
        return
    from transformers import PretrainedConfig, PreTrainedModel

    models = [m for m in module.modules() if isinstance(m, PreTrainedModel)]
    originals = {id(m.config): m.config._attn_implementation for m in models}
    _register()
    for path, sub in module.named_modules():
        if STREAM in sub._modules or not _dispatches_attention(sub):
            continue
        config = getattr(sub, "config", None)
        implementation = originals.get(id(config), getattr(config, "_attn_implementation", None))
        if implementation not in CONVERTED:
            continue  # flash / flex / paged kernels: left as they are (see the docs)
        stream = Stream(path_seed(base, f"{path}#attention"), site_p(sub)).train(sub.training)
        stream.xdrop_original = _original(sub, implementation)
        sub.add_module(STREAM, stream)
    # Models built from one config object share it: the converted model switches its own copy.
    copies: dict[int, Any] = {}
    for sub in module.modules():
        config = sub.__dict__.get("config")
        if isinstance(config, PretrainedConfig) and config._attn_implementation in CONVERTED:
            if id(config) not in copies:
                copies[id(config)] = copy.copy(config)
                copies[id(config)]._attn_implementation = CONVERTED[config._attn_implementation]
            sub.config = copies[id(config)]


_DROPOUT_SIGNATURE = inspect.signature(torch.nn.functional.dropout)
_DROPOUT_NAMES = tuple(_DROPOUT_SIGNATURE.parameters)  # input, p, training, inplace
_DROPOUT_DEFAULTS = {n: v.default for n, v in _DROPOUT_SIGNATURE.parameters.items()}


def dropout_arguments(args: Any, kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """The arguments of an ``F.dropout`` call in parameter order, defaults filled in.

    The parameter order is read once: a call pays a dict, not a signature binding.
    A call that binding would refuse (a missing ``input``, an unknown or repeated
    name, too many arguments) is bound by :mod:`inspect`, which raises its own error.
    """
    free = _DROPOUT_NAMES[len(args) :]
    if len(args) <= len(_DROPOUT_NAMES) and kwargs.keys() <= set(free) and (args or "input" in kwargs):
        given = dict(zip(_DROPOUT_NAMES, args, strict=False)) | kwargs
        return tuple(given[n] if n in given else _DROPOUT_DEFAULTS[n] for n in _DROPOUT_NAMES)
    bound = _DROPOUT_SIGNATURE.bind(*args, **kwargs)
    bound.apply_defaults()
    return tuple(bound.arguments.values())


def sdpa_arguments(args: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The arguments of a ``F.scaled_dot_product_attention`` call, by name."""
    names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
    return dict(zip(names, args, strict=False)) | kwargs


class _Site(TorchFunctionMode):
    """Routes ``F.scaled_dot_product_attention`` with ``dropout_p > 0`` to the module's stream."""

    def __init__(self, stream: Stream) -> None:
        super().__init__()
        self.stream = stream

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func is torch.nn.functional.scaled_dot_product_attention:
            a = sdpa_arguments(args, kwargs)
            p = float(a.get("dropout_p", 0.0))
            if p > 0:
                from .._functional._attention import attention_with_state

                self.stream.show(p)
                taken = self.stream._take()
                mask, causal = a.get("attn_mask"), bool(a.get("is_causal", False))
                return attention_with_state(a["query"], a["key"], a["value"], mask, p, causal, a.get("scale"), taken)
        return func(*args, **kwargs)


def _enter_site(module: nn.Module, args: Any) -> None:
    _enter_mode(module, "_xdrop_site_modes", _Site(module._modules[STREAM]) if module.training else None)  # type: ignore[arg-type]


def _exit_site(module: nn.Module, args: Any, output: Any) -> None:
    _exit_mode(module, "_xdrop_site_modes")


def convert_sites(module: nn.Module, base: int) -> None:
    """Give each module whose forward calls ``F.scaled_dot_product_attention`` its own stream.

    timm's attention modules and hand-written ones: while the module's forward
    runs, its calls with ``dropout_p > 0`` run :func:`xdrop.scaled_dot_product_attention`
    with the stream of its child ``xdrop_attention`` (one step per call).
    """
    for path, sub in module.named_modules():
        if not path:  # the converted module's own calls: its functional route (convert_functional)
            continue
        if STREAM in sub._modules or "scaled_dot_product_attention" not in forward_names(sub):
            continue
        if _dispatches_attention(sub) or isinstance(sub, nn.MultiheadAttention):
            continue
        sub.add_module(STREAM, Stream(path_seed(base, f"{path}#attention"), site_p(sub)).train(sub.training))
        sub.__dict__["_xdrop_site_modes"] = []
        sub.register_forward_pre_hook(_enter_site)
        sub.register_forward_hook(_exit_site, always_call=True)


class _Functional(TorchFunctionMode):
    """Routes ``F.dropout`` / ``F.scaled_dot_product_attention`` with dropout to xdrop while a forward runs."""

    def __init__(self, state: Any) -> None:
        super().__init__()
        self.state = state
        self.calls = 0
        self.taken: tuple[int, int] | None = None

    def _next(self) -> tuple[int, int]:
        """The next call's ``(seed, step)``; the first call of a forward advances the step."""
        if self.taken is None:
            with _STEP_LOCK, torch.no_grad():
                seed, step = (from_int64(v) for v in self.state.tolist())
                self.state[1] = to_int64(next_u64(step))
            self.taken = (seed, step)
        seed, step = self.taken
        c, self.calls = self.calls, self.calls + 1
        return path_seed(seed, f"call{c}"), step

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func is torch.nn.functional.dropout:
            x, p, training, inplace = dropout_arguments(args, kwargs)
            if training and p > 0:
                from .._functional._dropout import dropout

                seed, step = self._next()
                out = dropout(x, p, seed=seed, step=step)
                return x.copy_(out) if inplace else out
        elif func is torch.nn.functional.scaled_dot_product_attention:
            a = sdpa_arguments(args, kwargs)
            if a.get("dropout_p", 0.0) > 0:
                from .._functional._attention import scaled_dot_product_attention

                seed, step = self._next()
                return scaled_dot_product_attention(
                    a["query"],
                    a["key"],
                    a["value"],
                    a.get("attn_mask"),
                    a["dropout_p"],
                    is_causal=a.get("is_causal", False),
                    scale=a.get("scale"),
                    seed=seed,
                    step=step,
                )
        return func(*args, **kwargs)


def _enter_mode(module: nn.Module, key: str, mode: TorchFunctionMode | None) -> None:
    """Enter ``mode`` (None: no mode, in eval) for this call, on the module's stack ``key`` (calls may nest)."""
    if mode is not None:
        mode.__enter__()  # type: ignore[no-untyped-call]
    module.__dict__.setdefault(key, []).append(mode)


def _exit_mode(module: nn.Module, key: str) -> None:
    modes = module.__dict__.get(key)
    if modes:
        mode = modes.pop()
        if mode is not None:
            mode.__exit__(None, None, None)


def _enter(module: nn.Module, args: Any) -> None:
    # In eval no mode: nothing to route, and torch's fast paths (nn.TransformerEncoder's) refuse any mode.
    _enter_mode(module, "_xdrop_modes", _Functional(module._buffers[FUNCTIONAL]) if module.training else None)


def _exit(module: nn.Module, args: Any, output: Any) -> None:
    _exit_mode(module, "_xdrop_modes")


def _keep_if_absent(module: nn.Module, incompatible: Any) -> None:
    """A checkpoint without the functional stream (a plain model's) loads: the buffer keeps its value."""
    missing = incompatible.missing_keys
    missing[:] = [k for k in missing if k != FUNCTIONAL and not k.endswith("." + FUNCTIONAL)]


def convert_functional(module: nn.Module, base: int) -> None:
    """Route the functional dropouts made inside ``module.forward`` to xdrop (its buffer ``xdrop_functional``)."""
    if FUNCTIONAL in module._buffers:
        return
    module.register_buffer(FUNCTIONAL, torch.tensor([to_int64(path_seed(base, "#functional")), 0]))
    module.__dict__["_xdrop_modes"] = []  # now, not at the first forward (torch.compile would trace again)
    module.register_load_state_dict_post_hook(_keep_if_absent)  # type: ignore[no-untyped-call]
    module.register_forward_pre_hook(_enter)
    module.register_forward_hook(_exit, always_call=True)
