"""What :func:`xdrop.torch.replace_dropout` converted in a model, and which dropout it could not own.

The scan reads the module tree: xdrop layers, attention streams (children
``xdrop_attention``), functional routes (buffers ``xdrop_functional``), and the
modules that still draw from torch's RNG: ``nn.MultiheadAttention``
subclasses, transformers attention on an implementation xdrop does not route
(flash, flex, paged), and modules holding a dropout probability whose code
calls a function that draws from torch's RNG and that xdrop cannot route
(``torch.bernoulli``, ``F.dropout2d``, timm's ``drop_path``, ...). Modules are
recognised by their attributes and the names their methods' code uses, so a
dropout hidden behind a helper of another name is not seen.
"""

from __future__ import annotations

import inspect
import types
from dataclasses import dataclass, field

from torch import nn

from ._call_sites import FUNCTIONAL, STREAM, _dispatches_attention, site_p
from ._mha import MultiheadAttention, missing_helpers
from ._seeded import _SeededDropout

__all__ = ["DropoutReport", "dropout_report"]

# Calls that draw from torch's RNG and that no route of xdrop's intercepts.
RNG_CALLS = frozenset(
    {
        "bernoulli",
        "bernoulli_",
        "rand_like",
        "randn",
        "randn_like",
        "randint",
        "randperm",
        "multinomial",
        "uniform_",
        "normal_",
        "exponential_",
        "dropout1d",
        "dropout2d",
        "dropout3d",
        "alpha_dropout",
        "feature_alpha_dropout",
        "native_dropout",
        "drop_path",
        "drop_block_2d",
        "drop_block_fast_2d",
        "stochastic_depth",
    }
)
# Attributes that hold a module's dropout probability.
P_ATTRIBUTES = (
    "p",
    "prob",
    "drop_prob",
    "drop_rate",
    "dropout",
    "dropout_p",
    "dropout_prob",
    "dropout_rate",
    "attention_dropout",
    "attn_drop_rate",
)
# Layer drop (skipping whole layers) draws ``torch.rand``.
LAYERDROP_ATTRIBUTES = ("layerdrop", "encoder_layerdrop", "decoder_layerdrop")


@dataclass
class DropoutReport:
    """The dropout of a model: what xdrop owns, and what stays on torch's RNG.

    Attributes
    ----------
    layers : list of (str, str)
        Module path and repr of each xdrop dropout layer.
    attention : list of (str, str)
        Module path and class of each attention module whose attention
        dropout xdrop owns, with the ``p`` it applies.
    functional : list of str
        Module paths whose forward routes ``F.dropout`` and
        ``F.scaled_dot_product_attention`` calls to xdrop.
    not_owned : list of (str, str)
        Module path and reason for each dropout that still draws from torch's RNG.
    """

    layers: list[tuple[str, str]] = field(default_factory=list)
    attention: list[tuple[str, str]] = field(default_factory=list)
    functional: list[str] = field(default_factory=list)
    not_owned: list[tuple[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        head = (
            f"xdrop owns {len(self.layers)} dropout layers, {len(self.attention)} attention dropouts, "
            f"{len(self.functional)} functional routes; {len(self.not_owned)} dropouts stay on torch's RNG"
        )
        lines = [head]
        for title, rows in (
            ("layers", self.layers),
            ("attention", self.attention),
            ("functional routes (F.dropout, F.scaled_dot_product_attention)", [(p, "") for p in self.functional]),
            ("on torch's RNG", self.not_owned),
        ):
            if rows:
                lines.append(f"  {title}:")
                lines.extend(f"    {path or '(root)'}" + (f": {what}" if what else "") for path, what in rows)
        return "\n".join(lines)


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def _function(value: object) -> types.FunctionType | None:
    found = inspect.unwrap(getattr(value, "__func__", value))  # type: ignore[arg-type]
    return found if isinstance(found, types.FunctionType) else None


def forward_code_names(cls: type) -> set[str]:
    """The names used by ``cls.forward`` and by what it calls of its class and its module, transitively.

    Followed: methods of ``cls``, and functions of the modules the code comes
    from, except torch's own (its functions are not dropouts xdrop misses:
    those are named by :data:`RNG_CALLS`). Not followed: the other methods
    (weight initialisation draws from torch's RNG by design).
    """
    names: set[str] = set()
    start = _function(getattr(cls, "forward", None))
    todo = [start] if start is not None else []
    seen: set[types.CodeType] = set()
    while todo and len(seen) < 64:
        function = todo.pop()
        if function.__code__ in seen:
            continue
        seen.add(function.__code__)
        found = _code_names(function.__code__)
        names |= found
        for name in found:
            callee = _function(getattr(cls, name, None)) or _function(function.__globals__.get(name))
            if callee is not None and not (callee.__module__ or "").startswith("torch"):
                todo.append(callee)
    return names


def _largest(module: nn.Module, names: tuple[str, ...]) -> float:
    found = 0.0
    for name in names:
        value = module.__dict__.get(name)
        if isinstance(value, (float, int)) and not isinstance(value, bool):
            found = max(found, float(value))
    return found


def not_owned(path: str, module: nn.Module) -> str | None:
    """Why ``module``'s own dropout stays on torch's RNG, or None where it has none or xdrop owns it."""
    if isinstance(module, (_SeededDropout, MultiheadAttention)):
        return None
    name = type(module).__qualname__
    if isinstance(module, nn.MultiheadAttention):
        if not float(module.dropout) > 0:
            return None
        if type(module) is not nn.MultiheadAttention:
            return f"{name}, a subclass of nn.MultiheadAttention (its forward may differ): its attention dropout"
        missing = missing_helpers()
        if missing:
            return f"nn.MultiheadAttention: this torch lacks torch.nn.functional.{', '.join(missing)}"
        return "nn.MultiheadAttention, not converted"
    if _dispatches_attention(module) and STREAM not in module._modules:
        p = site_p(module)
        implementation = getattr(getattr(module, "config", None), "_attn_implementation", None)
        if p > 0:
            return f"{name} on attention implementation {implementation!r}: its dropout runs inside that kernel"
        return None
    names = forward_code_names(type(module))
    if _largest(module, LAYERDROP_ATTRIBUTES) > 0 and "rand" in names:
        return f"{name}: layer drop (torch.rand)"
    calls = sorted(names & RNG_CALLS)
    if calls and _largest(module, P_ATTRIBUTES) > 0:
        return f"{name}: calls {', '.join(calls)}"
    return None


def dropout_report(module: nn.Module) -> DropoutReport:
    """What xdrop owns of ``module``'s dropout, and what stays on torch's RNG.

    Parameters
    ----------
    module : torch.nn.Module
        A model, converted by :func:`xdrop.torch.replace_dropout` or not.

    Returns
    -------
    DropoutReport
        Its ``str`` is a readable summary.

    Examples
    --------
    >>> import torch, xdrop.torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.1))
    >>> print(xdrop.torch.dropout_report(xdrop.torch.replace_dropout(model, seed=0)))  # doctest: +ELLIPSIS
    xdrop owns 1 dropout layers, 0 attention dropouts, 1 functional routes; 0 dropouts stay on torch's RNG
      layers:
        1: Dropout(p=0.1, inplace=False, seed=..., step=0)
      functional routes (F.dropout, F.scaled_dot_product_attention):
        (root)
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got module of type {type(module).__name__}")
    report = DropoutReport()
    for path, sub in module.named_modules():
        stream = sub._modules.get(STREAM)
        if isinstance(sub, _SeededDropout):
            if STREAM not in path.rsplit(".", 1)[-1]:
                report.layers.append((path, repr(sub)))
        elif isinstance(stream, _SeededDropout):
            report.attention.append((path, f"{type(sub).__qualname__} (p={stream.p})"))
        if FUNCTIONAL in sub._buffers:
            report.functional.append(path)
        why = not_owned(path, sub)
        if why is not None:
            report.not_owned.append((path, why))
    return report
