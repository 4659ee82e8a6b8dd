"""The package's imports form layers: no cycle, no import from a lower layer to a higher one.

The layers are the table in ``docs/architecture.md`` ("Layers"), read here, so
the page and the code cannot drift apart. A table entry is a folder
(``xdrop/_kernels/``: every module under it) or a module
(``xdrop/_lib/_stream.py``); a module takes the layer of its longest entry, so
a folder's layer holds unless one of its modules is named on its own. A module
in no entry, or an entry naming nothing, fails too. Every ``import`` counts,
also inside functions and under ``TYPE_CHECKING`` (a lazy import is still a
dependency). An import of a submodule counts as an import of that submodule,
not of the packages above it (Python runs their ``__init__`` first, but they
are importers' parents, not their dependencies).
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "xdrop"
ARCHITECTURE = ROOT / "docs" / "architecture.md"


def modules() -> dict[str, tuple[Path, bool]]:
    """Dotted name -> (file, is a package) for every module of xdrop/."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def imports(name: str, path: Path, is_package: bool, known: set[str]) -> set[str]:
    """The xdrop modules that module ``name`` imports (each ``import``/``from`` anywhere in it)."""
    here = name if is_package else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")[: len(here.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:  # "from . import _kernels" imports the submodule, not the package
                sub = f"{source}.{alias.name}"
                out.add(sub if sub in known else source)
    return {m for m in out if m in known and m != name}


def layers() -> list[tuple[str, list[str]]]:
    """The table of docs/architecture.md's "Layers" section: (layer, its entries), bottom first."""
    text = ARCHITECTURE.read_text()
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|") and not set(line) <= set("|- ")]
    table = []
    for row in rows[1:]:  # the first row is the header
        cells = [c.strip() for c in row.strip("|").split("|")]
        table.append((cells[1], re.findall(r"`([\w./]+)`", cells[2])))
    rank = [int(row.strip("|").split("|")[0]) for row in rows[1:]]
    assert rank == sorted(rank, reverse=True), "the table lists the layers top first"
    return table[::-1]


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(name, path, pkg, set(found)) for name, (path, pkg) in found.items()}


def layer_of() -> dict[str, int]:
    """Dotted module name -> layer: the layer of the longest table entry (folder or file) that holds it."""
    entries: dict[str, int] = {}
    for level, (_, names) in enumerate(layers()):
        for entry in names:
            assert entry not in entries, f"{entry} is in two layers of docs/architecture.md"
            assert (ROOT / entry).exists(), f"docs/architecture.md names {entry}, which does not exist"
            entries[entry] = level
    out: dict[str, int] = {}
    for name, (path, _) in modules().items():
        rel = path.relative_to(ROOT).as_posix()
        holders = [e for e in entries if e == rel or (e.endswith("/") and rel.startswith(e))]
        if holders:
            out[name] = entries[max(holders, key=len)]
    return out


def test_every_module_has_one_layer():
    placed, actual = set(layer_of()), set(modules())
    assert not actual - placed, f"modules in no layer of docs/architecture.md: {sorted(actual - placed)}"


def test_no_import_goes_up_a_layer():
    level, names = layer_of(), [name for name, _ in layers()]
    upward = [
        f"{a} ({names[level[a]]}) imports {b} ({names[level[b]]})"
        for a, targets in graph().items()
        for b in sorted(targets)
        if level[b] > level[a]
    ]
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    component = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        component.append(w)
                        if w == v:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_no_import_cycle():
    found = cycles(graph())
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({"a": {"b"}, "b": {"a"}, "c": set()}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
        ({"a": {"b"}, "b": set()}, []),
    ],
)
def test_the_cycle_finder_finds_cycles(edges, expected):
    """The check above can fail: a planted cycle is found, an acyclic graph passes."""
    assert cycles(edges) == expected


def test_the_import_reader_sees_function_level_and_relative_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "from . import b\nfrom .c import f\nfrom .. import top\n\ndef g():\n    from .d import h\n    import xdrop.e\n"
    )
    known = {"xdrop", "xdrop.p", "xdrop.p.b", "xdrop.p.c", "xdrop.p.d", "xdrop.e", "xdrop.top"}
    assert imports("xdrop.p.m", source, False, known) == {"xdrop.p.b", "xdrop.p.c", "xdrop.p.d", "xdrop.e", "xdrop.top"}


def test_the_namespace_table_is_the_registry_s():
    """The backend registry names the run time's libraries (``_kernels.LIBRARIES``), with the same predicates."""
    import array_api_compat

    from xdrop._kernels import LIBRARIES
    from xdrop._testing import _backends

    registry = {e.namespace: getattr(array_api_compat, e.namespace_check) for e in _backends.REGISTRY.values()}
    assert registry == {name: lib.recognises for name, lib in LIBRARIES.items()}


def test_recognition_asks_the_one_table():
    """``_compat`` recognises a namespace by the kernels layer's ``Library`` objects, not a table of its own."""
    from xdrop._kernels import LIBRARIES
    from xdrop._lib import _compat

    assert _compat._libraries is LIBRARIES
    assert all(lib.name == name for name, lib in LIBRARIES.items())


def test_recognition_without_the_table_fails_loudly(monkeypatch):
    """Before the kernels layer hands its table over, naming a namespace raises rather than guess a name."""
    import numpy as np

    from xdrop._lib import _compat

    monkeypatch.setattr(_compat, "_libraries", {})
    with pytest.raises(RuntimeError, match="no array library is known yet"):
        _compat.namespace_name(np)


def test_a_module_row_overrides_its_folder_row(tmp_path, monkeypatch):
    """A folder row places every module under it, except one a row names on its own."""
    package = tmp_path / "xdrop"
    (package / "a").mkdir(parents=True)
    for name in ["__init__.py", "a/__init__.py", "a/m.py"]:
        (package / name).write_text("")
    page = tmp_path / "architecture.md"
    rows = "| 2 | top | `xdrop/a/` |\n| 1 | low | `xdrop/__init__.py`, `xdrop/a/m.py` |\n"
    page.write_text(f"## Layers\n\n| # | layer | folders and modules |\n|---|---|---|\n{rows}\n## Next\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", package)
    monkeypatch.setattr(sys.modules[__name__], "ARCHITECTURE", page)
    assert layer_of() == {"xdrop": 0, "xdrop.a": 1, "xdrop.a.m": 0}
