"""transformers checkpoints: the streams' state travels in the model's config, as ``config.xdrop``.

``save_pretrained`` writes the state dict (the xdrop buffers with it) and
``config.json``; ``from_pretrained`` builds a fresh model with torch's
dropouts, where the xdrop buffers are unexpected keys, and drops them. So
:func:`xdrop.torch.replace_dropout` gives each transformers model it converts
a config entry ``xdrop`` that ``config.json`` writes as the current
``(seed, step)`` of every stream (the config is serialized through a deep copy
of its attributes, which reads the streams at that moment), and a
``replace_dropout`` of a model whose config holds such an entry, read back by
``from_pretrained``, restores the streams it creates from it. The entry::

    {"format": 1, "seed": <replace_dropout's seed>, "streams": {<state-dict prefix>: [seed, step], ...}}

The prefix of a layer is its module path; of the functional stream, the
buffer's name. Where a model is loaded into one already converted (what
``Trainer``'s ``resume_from_checkpoint`` does with ``load_state_dict``), the
buffers in the weights file carry the state and the entry is not read.
"""

from __future__ import annotations

import copy
import sys
import warnings
from typing import Any

import torch
from torch import Tensor, nn

from .._lib._checks import check_u64
from .._lib._u64 import from_int64, to_int64
from ._call_sites import FUNCTIONAL
from ._seeded import _SeededDropout, _u64

KEY = "xdrop"
FORMAT = 1


def _models(module: nn.Module) -> list[Any]:
    """The outermost transformers models in ``module`` (a model's inner models share its config)."""
    transformers = sys.modules.get("transformers")
    if transformers is None:  # no transformers model can be in a program that has not imported it
        return []
    found: list[tuple[str, Any]] = []
    for path, sub in module.named_modules():
        if isinstance(sub, transformers.PreTrainedModel) and not any(
            not outer or path.startswith(outer + ".") for outer, _ in found
        ):
            found.append((path, sub))
    return [model for _, model in found]


def _streams(model: nn.Module) -> dict[str, _SeededDropout | Tensor]:
    """State-dict prefix -> each stream of ``model``: an xdrop layer, or the functional ``(seed, step)`` buffer."""
    out: dict[str, _SeededDropout | Tensor] = {}
    for path, sub in model.named_modules():
        if isinstance(sub, _SeededDropout):
            out[path] = sub
        if FUNCTIONAL in sub._buffers:
            out[f"{path}.{FUNCTIONAL}" if path else FUNCTIONAL] = sub._buffers[FUNCTIONAL]
    return out


def _read(stream: _SeededDropout | Tensor) -> list[int]:
    if isinstance(stream, _SeededDropout):
        return [_u64(stream.seed), _u64(stream.step)]
    return [from_int64(int(v)) for v in stream.tolist()]


def _write(stream: _SeededDropout | Tensor, seed: int, step: int) -> None:
    with torch.no_grad():
        if isinstance(stream, _SeededDropout):
            stream.seed.fill_(to_int64(seed))
            stream.step.fill_(to_int64(step))
        else:
            stream.copy_(torch.tensor([to_int64(seed), to_int64(step)]))


class StreamState:
    """``config.xdrop`` of a converted model: written to ``config.json`` as its streams' current state."""

    def __init__(self, model: nn.Module, seed: int) -> None:
        self.model = model
        self.seed = seed

    def snapshot(self) -> dict[str, Any]:
        """The entry as ``config.json`` holds it."""
        streams = {prefix: _read(stream) for prefix, stream in _streams(self.model).items()}
        return {"format": FORMAT, "seed": self.seed, "streams": streams}

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        twin = memo.get(id(self.model))
        if twin is not None:  # the model itself is being copied: the copy's config follows the copy
            return StreamState(twin, self.seed)
        return self.snapshot()  # config.to_dict() (and so config.json): plain data

    def __repr__(self) -> str:
        return repr(self.snapshot())


def saved_entries(module: nn.Module) -> list[tuple[nn.Module, dict[str, Any]]]:
    """The models in ``module`` whose config holds an entry read back from ``config.json``, with it, checked."""
    out = []
    for model in _models(module):
        entry = getattr(model.config, KEY, None)
        if entry is None or isinstance(entry, StreamState):
            continue
        where = f"{type(model).__name__}.config.{KEY}"
        if not (isinstance(entry, dict) and entry.get("format") == FORMAT and isinstance(entry.get("streams"), dict)):
            raise ValueError(
                f"{where} must be the streams' state xdrop {FORMAT} writes "
                f'({{"format": {FORMAT}, "seed": ..., "streams": {{...}}}}), got {entry!r:.200}'
            )
        check_u64(entry.get("seed"), f"{where}['seed']")
        for prefix, value in entry["streams"].items():
            if not (isinstance(value, list) and len(value) == 2):
                raise ValueError(f"{where}['streams'][{prefix!r}] must be [seed, step], got {value!r}")
            for item in value:
                check_u64(item, f"{where}['streams'][{prefix!r}]")
        out.append((model, entry))
    return out


def saved_seed(saved: list[tuple[nn.Module, dict[str, Any]]], seed: int | None) -> int | None:
    """``replace_dropout``'s seed: the saved run's (``seed`` must be it or ``None``)."""
    for model, entry in saved:
        if seed is not None and entry["seed"] != seed:
            raise ValueError(
                f"{type(model).__name__}.config.{KEY} holds the streams of a run with seed={entry['seed']}, "
                f"not seed={seed}: pass seed={entry['seed']} (or None) to resume it, or delete "
                f"config.{KEY} to start new streams"
            )
        seed = entry["seed"]
    return seed


def stream_ids(module: nn.Module) -> set[int]:
    """The ``id`` of every stream in ``module`` (to tell the ones a conversion makes)."""
    return {id(stream) for stream in _streams(module).values()}


def restore(saved: list[tuple[nn.Module, dict[str, Any]]], new: set[int]) -> None:
    """Set the streams this conversion made (``id`` in ``new``) to the saved state; warn about any mismatch."""
    for model, entry in saved:
        streams = {p: s for p, s in _streams(model).items() if id(s) in new}
        absent = sorted(set(entry["streams"]) - set(streams))
        fresh = sorted(set(streams) - set(entry["streams"]))
        for prefix in set(streams) & set(entry["streams"]):
            _write(streams[prefix], *entry["streams"][prefix])
        name = f"{type(model).__name__}.config.{KEY}"
        if absent:
            warnings.warn(
                f"{name} holds the state of {len(absent)} streams this model has no new stream for "
                f"(first: {absent[:3]}); they are not restored",
                stacklevel=3,
            )
        if fresh:
            warnings.warn(
                f"{name} holds no state for {len(fresh)} streams of this model (first: {fresh[:3]}); "
                "they start at step 0",
                stacklevel=3,
            )


def track(module: nn.Module, seed: int) -> None:
    """Give each transformers model in ``module`` its own config, whose ``xdrop`` entry follows its streams."""
    for model in _models(module):
        config = model.config
        own = copy.copy(config)  # a config shared with another model must not carry this one's state
        for sub in model.modules():
            if sub.__dict__.get("config") is config:
                sub.config = own
        setattr(own, KEY, StreamState(model, seed))
