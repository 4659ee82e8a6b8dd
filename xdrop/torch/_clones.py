"""Clones: deep copies of an xdrop.torch layer placed in one model get streams of their own.

``nn.TransformerEncoder(layer, n)`` and ``nn.ModuleList([copy.deepcopy(block)
for _ in range(n)])`` copy each xdrop layer's seed with it: left alone, the
copies would draw the same masks in every block. A deep copy marks the copy and
its source; the first training call of a marked layer (or
:func:`xdrop.torch.replace_dropout`) finds the model it runs in, and every set
of layers there that share a seed (the copies and the source) gets new seeds
``path_seed(seed, path)``, ``path`` the layer's module path below the set's
common ancestor. So the result depends only on the model's structure: a deep
copy of a whole model (a twin) separates its clones into the very same seeds,
and draws the masks the original draws.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from torch import nn

_CALL_IMPL = nn.Module._call_impl.__code__


def find_root(layer: nn.Module) -> nn.Module:
    """The outermost module whose call (or ``forward``, called directly) is running ``layer``; else ``layer``."""
    root = layer
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is _CALL_IMPL or frame.f_code.co_name == "forward":
            found = frame.f_locals.get("self")
            if isinstance(found, nn.Module):
                root = found
        frame = frame.f_back  # type: ignore[assignment]
    return root


def separate(
    root: nn.Module,
    kind: type[nn.Module],
    seed_of: Callable[[nn.Module], int | None],
    reseed: Callable[[nn.Module, int], None],
    derive: Callable[[int, str], int],
) -> None:
    """Give each set of distinct ``kind`` layers in ``root`` sharing a seed, one of them a copy, their own seeds.

    ``seed_of`` reads a layer's seed (``None``: unknown, as on the meta device),
    ``reseed`` writes one, ``derive(seed, path)`` makes the new seed. Every
    layer of ``root`` is unmarked.
    """
    groups: dict[int, list[tuple[str, nn.Module]]] = {}
    copied: set[int] = set()
    for path, sub in root.named_modules():  # a layer shared by several parents is one stream: listed once
        if isinstance(sub, kind):
            if sub.__dict__.pop("_take", None) is not None:  # marked by a deep copy
                copied.add(id(sub))
            seed = seed_of(sub)
            if seed is not None:
                groups.setdefault(seed, []).append((path, sub))
    for seed, members in groups.items():
        if len(members) < 2 or not any(id(sub) in copied for _, sub in members):
            continue  # one layer, or layers given one seed on purpose (the docs: they draw the same masks)
        split = [path.split(".") for path, _ in members]
        common = 0
        while all(len(parts) > common + 1 and parts[common] == split[0][common] for parts in split):
            common += 1
        for parts, (_, sub) in zip(split, members, strict=True):
            reseed(sub, derive(seed, ".".join(parts[common:])))
