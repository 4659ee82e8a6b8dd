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
- **Clones.** A deep copy of a layer keeps its seed: a deep copy of a whole
  model is a twin that draws the same masks. Deep copies placed at several
  paths of *one* model (``nn.TransformerEncoder(layer, n)``, a ``ModuleList``
  of ``copy.deepcopy(block)``) would draw identical masks, so at their first
  training call (or in :func:`replace_dropout`) each gets its own seed,
  ``blake2b(seed, path)``, from its path below the copies' common ancestor:
  a twin of that model gets the same seeds. (Under ``torch.compile`` this
  needs one eager training call or :func:`replace_dropout` first.)
- **Reading and setting the stream.** ``layer.get_stream()`` returns
  ``(seed, step)`` as unsigned integers (``int(layer.seed)`` reads the int64
  buffer, negative for seeds of ``2**63`` and above), and
  ``layer.set_stream(seed, step)`` sets them; :func:`dropout_streams` lists a
  model's streams by module path. They take and give what the Flax and Keras
  layers' ``get_stream`` / ``set_stream`` do, for porting a model.
- **Checkpoints.** An ``nn.Dropout`` model's ``state_dict`` (no ``seed`` /
  ``step`` keys) loads into a model with xdrop layers, strict or not: layers
  whose keys are both absent keep their seed and step. The other way, save
  with :func:`plain_state_dict` (or load with ``strict=False``). transformers'
  ``from_pretrained`` drops the buffers: a converted transformers model keeps
  its streams in ``config.xdrop`` too (see :func:`replace_dropout`).
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
  restores before recomputing (``preserve_rng_state=True``, its default). The
  last 256 calls of each layer can be replayed. Other forwards draw nothing
  from torch's generator. Without the RNG state (``preserve_rng_state=False``,
  or a custom checkpoint function that does not restore it) a layer called
  once in its latest forward (since it was last recomputed) replays that
  call, so gradients equal the run without checkpointing bit for bit; a layer
  called several times there raises (p = 0 never does). A call during
  backward with grad mode off (a gradient hook, an ``autograd.Function``'s
  backward) is no recomputation: it takes the next step.
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

import sys
import warnings
from typing import Any, TypeVar

from torch import nn

from .. import distributed  # noqa: F401  (after ``import xdrop.torch``, ``xdrop.distributed`` needs no import of its own)
from .._lib._checks import check_u64
from .._lib._replay import draw_u64, require_probes
from ._dropout_report import DropoutReport, dropout_report
from ._layers import (
    _REPLACEMENTS,
    AlphaDropout,
    Dropout,
    Dropout1d,
    Dropout2d,
    Dropout3d,
    DropPath,
    FeatureAlphaDropout,
    ScaledDotProductAttention,
)
from ._mha import MultiheadAttention, convert_mha
from ._seeded import _STEP_LOCK, _SeededDropout, separate_clones
from ._seeded import path_seed as _path_seed  # a layer's seed from its path, for checks of replace_dropout

__all__ = [
    "AlphaDropout",
    "DropPath",
    "Dropout",
    "Dropout1d",
    "Dropout2d",
    "Dropout3d",
    "DropoutReport",
    "FeatureAlphaDropout",
    "MultiheadAttention",
    "ScaledDotProductAttention",
    "dropout_report",
    "dropout_streams",
    "onnx_export",
    "plain_state_dict",
    "replace_dropout",
]


# The layers' public home: pickles and the docs name xdrop.torch.Dropout, not the module that defines it.
for _layer in (
    AlphaDropout,
    DropPath,
    Dropout,
    Dropout1d,
    Dropout2d,
    Dropout3d,
    DropoutReport,
    FeatureAlphaDropout,
    MultiheadAttention,
    ScaledDotProductAttention,
    dropout_report,
):
    _layer.__module__ = __name__
del _layer

M = TypeVar("M", bound=nn.Module)

require_probes()  # at import: a torch without the checkpoint replay's private probes fails here, loudly


def replace_dropout(module: M, seed: int | None = None, *, verbose: bool = False) -> M:
    """Replace every torch.nn dropout layer in ``module`` with its xdrop.torch counterpart, in place.

    ``nn.Dropout``, ``Dropout1d``, ``Dropout2d``, ``Dropout3d``, ``AlphaDropout``
    and ``FeatureAlphaDropout`` (exactly those classes, not subclasses, whose
    ``forward`` may differ), and timm's ``DropPath``, become the xdrop layer
    with the same ``p``, ``inplace`` (``scale_by_keep``) and training mode. The
    layer at module path ``name`` gets the seed ``blake2b(seed, name)``: its
    own stream, the same in every run for the same ``seed`` and model
    structure. A layer shared by several parents stays shared. The dropouts
    that are not modules are converted too (the docs' "Attention dropout"
    page), each attention module getting its own stream (a child
    ``xdrop_attention``, seeded ``blake2b(seed, name + "#attention")``):
    ``nn.MultiheadAttention`` becomes :class:`MultiheadAttention` (also inside
    ``nn.TransformerEncoderLayer``, ``nn.Transformer``, ...); transformers
    attention modules ("eager" / "sdpa") switch to xdrop's attention; modules
    whose forward calls ``F.scaled_dot_product_attention`` (timm's attention)
    route those calls with ``dropout_p > 0`` to it; and the other
    ``F.dropout`` / ``F.scaled_dot_product_attention`` calls made inside
    ``module``'s forward are routed to xdrop (the buffer ``xdrop_functional``).
    xdrop layers already in ``module`` keep their seeds, except deep copies
    of one layer placed at several paths (clones, as ``nn.TransformerEncoder``
    makes): each gets ``blake2b(its seed, path)``, its own stream.

    Dropout that xdrop cannot own (see :func:`dropout_report`) is reported in
    one ``UserWarning`` naming each module path.

    Checkpoints saved before the conversion load into the converted model
    (the xdrop layers keep their seeds, step 0: see the module docs). Each
    transformers model converted gets a config entry ``config.xdrop`` that
    ``save_pretrained`` writes to ``config.json`` with every stream's current
    ``(seed, step)``; on a model loaded by ``from_pretrained`` from such a
    checkpoint, ``replace_dropout`` restores the streams it creates from it,
    so training resumes where the checkpoint was saved (``seed`` must then be
    that run's seed or ``None``).

    Parameters
    ----------
    module : torch.nn.Module
        The model; changed in place. A bare dropout layer is not a container:
        its replacement is returned and the argument is left unchanged.
    seed : int or None, optional
        Base seed in ``[0, 2**64)``; ``None`` draws one from torch's default
        generator (so ``torch.manual_seed`` reproduces it).
    verbose : bool, optional
        Print :func:`dropout_report` of the converted model.

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
    if not isinstance(verbose, bool):
        raise TypeError(f"verbose must be a bool, got verbose={verbose!r}")
    from ._pretrained import restore, saved_entries, saved_seed, stream_ids, track

    saved = saved_entries(module)  # config.xdrop of a transformers model read back by from_pretrained
    seed = saved_seed(saved, None if seed is None else check_u64(seed, "seed"))
    base = draw_u64() if seed is None else seed
    before = stream_ids(module)
    timm_drop_path = _timm_drop_path()

    def convertible(child: nn.Module) -> bool:
        return type(child) in _REPLACEMENTS or type(child) is timm_drop_path

    def convert(old: nn.Module, path: str) -> _SeededDropout:
        new_seed = _path_seed(base, path)
        if type(old) is timm_drop_path:
            layer: _SeededDropout = DropPath(float(old.drop_prob), bool(old.scale_by_keep), seed=new_seed)  # type: ignore[arg-type]
        else:
            layer = _REPLACEMENTS[type(old)](old.p, old.inplace, seed=new_seed)  # type: ignore[arg-type]
        return layer.train(old.training)

    if convertible(module):
        return convert(module, "")  # type: ignore[return-value]
    done: dict[int, _SeededDropout] = {}
    for parent_path, parent in list(module.named_modules(remove_duplicate=False)):
        for name, child in list(parent._modules.items()):  # named_children() would skip a repeated child
            if child is not None and convertible(child):
                path = f"{parent_path}.{name}" if parent_path else name
                if id(child) not in done:
                    done[id(child)] = convert(child, path)
                setattr(parent, name, done[id(child)])
    # -- hook: the dropouts that are not modules (attention, functional calls) --
    from ._call_sites import convert_attention, convert_functional, convert_sites

    convert_mha(module, base)
    convert_attention(module, base)
    convert_sites(module, base)
    convert_functional(module, base)
    with _STEP_LOCK:
        separate_clones(module)  # deep copies of xdrop layers that were already in the model
    restore(saved, stream_ids(module) - before)  # the streams this call made
    track(module, base)
    report = dropout_report(module)
    if report.not_owned:
        listed = "; ".join(f"{path or '(root)'} ({why})" for path, why in report.not_owned)
        warnings.warn(
            f"xdrop.torch.replace_dropout cannot own {len(report.not_owned)} dropout(s) of this "
            f"{type(module).__name__}, which stay on torch's RNG: {listed}",
            UserWarning,
            stacklevel=2,
        )
    if verbose:
        print(report)
    return module


def _timm_drop_path() -> type | None:
    """timm's ``DropPath`` class where timm is imported (a program that has not imported it holds none)."""
    for name in ("timm.layers.drop", "timm.models.layers.drop"):  # timm >= 0.9, and the older path
        found = getattr(sys.modules.get(name), "DropPath", None)
        if isinstance(found, type):
            return found
    return None


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
        if "xdrop_functional" in sub._buffers:  # hook: the functional stream of xdrop.torch._call_sites
            state.pop(f"{path}.xdrop_functional" if path else "xdrop_functional", None)
    return state


def dropout_streams(module: nn.Module) -> dict[str, tuple[int, int]]:
    """Every xdrop.torch layer's ``(seed, step)`` in ``module``, by module path, as unsigned integers.

    The seeds :func:`replace_dropout` derives (one per dropout layer and one per
    converted attention module, a child named ``xdrop_attention``) are read here
    as they are: to port the model, give each layer of the Flax or Keras model
    the same pair (``xdrop.flax.Dropout(rate, seed=seed)`` then
    ``layer.set_stream(seed, step)``; see the docs' porting page). Each value is
    the layer's :meth:`~xdrop.torch.Dropout.get_stream`; a layer shared by
    several parents is listed once, under its first path. The stream of the
    routed ``F.dropout`` calls (the buffer ``xdrop_functional``) is not a layer
    and is not listed.

    Parameters
    ----------
    module : torch.nn.Module
        A model containing xdrop.torch layers (or one such layer, listed under ``""``).

    Returns
    -------
    dict
        ``{path: (seed, step)}`` in ``named_modules`` order.

    Examples
    --------
    >>> import torch, xdrop.torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2), xdrop.torch.Dropout(0.5, seed=2**63))
    >>> xdrop.torch.dropout_streams(model)
    {'1': (9223372036854775808, 0)}
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got module of type {type(module).__name__}")
    return {path: sub.get_stream() for path, sub in module.named_modules() if isinstance(sub, _SeededDropout)}


def onnx_export(
    model: nn.Module, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None, **options: Any
) -> Any:
    """Export ``model`` to ONNX with its xdrop dropouts drawing xdrop's masks (``torch.onnx.export(dynamo=True)``).

    ``torch.onnx.export`` has no translation of xdrop's operators
    (``torch.ops.xdrop.dropout``, ``torch.ops.xdrop.attention``) and keeps no
    global table to add one to; this calls it with one (``custom_translation_table``)
    that writes stream spec v1 in standard ONNX operators, so ONNX Runtime (or any
    runtime with ``uint64`` ``Mul``, ``BitShift`` and bitwise operators) draws the
    masks eager torch draws, bit for bit (an attention's products and softmax round
    as the runtime rounds them). Each seed and step buffer that a
    training-mode dropout reads becomes an input of the graph, named as in
    ``state_dict()`` (``"1.step"``), whose default is its value at export: feed
    ``step = s`` to draw the masks of the layer's ``s``-th training forward.
    The exported graph does not advance the step; the caller does. A model in
    ``eval()`` mode exports no dropout and no such inputs. Needs ``onnx``,
    ``onnxscript`` and ``onnx_ir`` (imported here, not by ``import xdrop.torch``).

    Parameters
    ----------
    model : torch.nn.Module or torch.export.ExportedProgram
        The model (layers converted with :func:`replace_dropout` or built from
        xdrop.torch layers).
    args, kwargs : tuple, dict, optional
        Example inputs, as for ``torch.onnx.export``.
    **options
        Passed to ``torch.onnx.export`` (``dynamic_shapes``, ``input_names``,
        ``opset_version``, ``custom_translation_table`` for other operators,
        ``optimize`` ...), except ``f`` and ``dynamo``.

    Returns
    -------
    torch.onnx.ONNXProgram
        The program; ``program.save(path)`` writes the ``.onnx`` file.

    Examples
    --------
    >>> import torch, xdrop.torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4), xdrop.torch.Dropout(0.5, seed=1)).train()
    >>> program = xdrop.torch.onnx_export(model, (torch.ones(2, 4),))  # doctest: +SKIP
    >>> [v.name for v in program.model.graph.inputs]  # doctest: +SKIP
    ['input', '1.seed', '1.step']
    """
    for name in ("f", "dynamo"):
        if name in options:
            raise TypeError(
                f"xdrop.torch.onnx_export takes no {name}= argument: it exports with dynamo=True and returns the "
                f"ONNXProgram (save it with program.save(path)), got {name}={options[name]!r}"
            )
    try:
        from .._kernels.torch import _onnx as _torch_onnx  # imports onnxscript: only when exporting
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
            f"xdrop.torch.onnx_export needs the onnx and onnxscript packages (pip install onnx onnxscript); "
            f"{e.name} is not installed"
        ) from e
    return _torch_onnx.export(model, tuple(args), kwargs, options)
