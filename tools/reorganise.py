#!/usr/bin/env python3
"""One-shot: move xdrop's modules into folders that show the import layers, and list what meson installs.

Run from the repository root on a clean checkout (nothing staged or modified), with
ruff on PATH or in the running Python::

    python tools/reorganise.py --check    # computes everything, changes nothing
    python tools/reorganise.py            # applies it and stages the result (no commit)

Everything is computed in memory first, so it fails changing nothing when a
file under ``xdrop/`` is not in ``MOVES`` (add one line), a file named in
``MOVES`` is gone (remove or rename its line), a moved module uses
``__file__`` unreviewed, or a literal edit (``EDITS``) no longer matches. It
refuses to run twice (``xdrop/_lib/`` or ``tests/test_import_layers.py`` exists). What it does:

1. ``git mv`` every file of ``xdrop/`` to its place in ``MOVES`` and writes the
   new packages' ``__init__.py``;
2. rewrites every import of an xdrop module (found with ``ast``, relative ones
   recomputed for the new depth, ``from . import _x`` kept bound to ``_x``),
   then, in every tracked text file but data and history, each ``from xdrop...
   import _x`` in a string, dotted name (``xdrop._dropout.x``) and source
   path (``xdrop/_kernels/philox_dropout.c``), then the literal edits in ``EDITS``;
3. writes one ``meson.build`` per folder listing its files
   (``py.install_sources``), the host kernel's in ``_kernels/host/src/``;
4. renames ``tests/test_layers.py`` to ``tests/test_import_layers.py`` (its table
   reader now takes folders), redraws docs/architecture.md's layers as a table
   by folder with the folder tree, writes ``tests/test_packaging.py``;
5. sorts imports and formats (ruff), stages, then lists the modules directly
   in ``xdrop/``, any module over 600 lines and any line the renames made too long.

After it: reinstall the editable build (the meson files changed), run the
tests, ruff and mypy, commit. Templates live in ``tools/reorganise_templates/``;
delete both after use.
"""

from __future__ import annotations

import argparse
import ast
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = Path(__file__).resolve().parent / "reorganise_templates"
MAX_TOP_LEVEL = 16
MAX_LINES = 600

# old path -> new path, both relative to xdrop/. A new module on a merged branch needs one line here.
MOVES: dict[str, str] = {
    # the public faces stay where they are
    "__init__.py": "__init__.py",
    "__main__.py": "__main__.py",
    "py.typed": "py.typed",
    "bench.py": "bench.py",  # tests import xdrop.bench and xdrop.verify as modules
    "verify.py": "verify.py",
    "cs231n.py": "cs231n.py",
    "distributed.py": "distributed.py",
    "keras.py": "keras.py",
    "random/__init__.py": "random/__init__.py",
    "random/_philox.py": "random/_philox.py",
    "random/_variates.py": "random/_variates.py",
    "random/_words.py": "random/_words.py",
    # layers 1-4
    "_compat.py": "_lib/_compat.py",
    "_arith.py": "_lib/_arith.py",
    "_noise_shapes.py": "_lib/_noise_shapes.py",
    "_docfill.py": "_lib/_docfill.py",
    "_replay.py": "_lib/_replay.py",
    "_values.py": "_lib/_values.py",
    "_traced.py": "_lib/_traced.py",
    "_stream.py": "_lib/_stream.py",
    "_checks.py": "_lib/_checks.py",
    "_sharding.py": "_lib/_sharding.py",
    "_generator.py": "_lib/_generator.py",
    # the public functions
    "_dropout.py": "_functional/_dropout.py",
    "_variants.py": "_functional/_variants.py",
    "_variant_call.py": "_functional/_variant_call.py",
    "_channel_dropout.py": "_functional/_channel_dropout.py",
    "_alpha_dropout.py": "_functional/_alpha_dropout.py",
    "_drop_path.py": "_functional/_drop_path.py",
    "_attention.py": "_functional/_attention.py",
    "_attention_reference.py": "_functional/_attention_reference.py",
    # kernels: the choice stays at the top of _kernels/, the fast paths go by family
    "_kernels/__init__.py": "_kernels/__init__.py",
    "_kernels/_select.py": "_kernels/_select.py",
    "_kernels/_engines.py": "_kernels/_engines.py",
    "_kernels/_reference.py": "_kernels/_reference.py",
    "_kernels/_dask.py": "_kernels/_dask.py",
    "_kernels/_host.py": "_kernels/host/_buffers.py",
    "_kernels/_native.py": "_kernels/host/_native.py",
    "_kernels/_numpy.py": "_kernels/host/_numpy.py",
    "_kernels/philox_dropout.c": "_kernels/host/src/philox_dropout.c",
    "_kernels/_philox_module.c": "_kernels/host/src/_philox_module.c",
    "_kernels/_torch.py": "_kernels/torch/_cpu.py",
    "_kernels/_torch_ops.py": "_kernels/torch/_ops.py",
    "_kernels/_torch_onnx.py": "_kernels/torch/_onnx.py",
    "_kernels/_attention_torch.py": "_kernels/torch/_attention.py",
    "_kernels/_cuda.py": "_kernels/cuda/_nvrtc.py",
    "_kernels/_triton.py": "_kernels/cuda/_triton.py",
    "_kernels/_attention_triton.py": "_kernels/cuda/_attention_triton.py",
    "_kernels/_jax.py": "_kernels/jax/_dropout.py",
    "_kernels/_attention_jax.py": "_kernels/jax/_attention.py",
    # framework integrations as packages (xdrop.torch, xdrop.flax keep their import paths)
    "torch.py": "torch/__init__.py",
    "_torch_layers.py": "torch/_layers.py",
    "_torch_seeded.py": "torch/_seeded.py",
    "_torch_clones.py": "torch/_clones.py",
    "_torch_pretrained.py": "torch/_pretrained.py",
    "_torch_ranks.py": "torch/_ranks.py",
    "_torch_attention.py": "torch/_call_sites.py",
    "_torch_mha.py": "torch/_mha.py",
    "_torch_report.py": "torch/_dropout_report.py",
    "flax.py": "flax/__init__.py",
    "_flax_attention.py": "flax/_attention.py",
    # the command line's parts
    "_report.py": "_cli/verify/_report.py",
    "_properties.py": "_cli/verify/_properties.py",
    "_property_cell.py": "_cli/verify/_cell.py",
    "_attention_properties.py": "_cli/verify/_attention.py",
    "_bench_cases.py": "_cli/bench/_cases.py",
    "_bench_memory.py": "_cli/bench/_memory.py",
    "_bench_mlp.py": "_cli/bench/_mlp.py",
    "_bench_report.py": "_cli/bench/_report.py",
    "_bench_timing.py": "_cli/bench/_timing.py",
    "_bench_attention.py": "_cli/bench/_attention.py",
    "_bench_first_call.py": "_cli/bench/_first_call.py",
    # the backend registry (the noxfile loads it by path)
    "_backends.py": "_testing/_backends.py",
}
# Modules expected from branches in flight: moved when present, no error when absent.
OPTIONAL: dict[str, str] = {
    "_bench_attention_jax.py": "_cli/bench/_attention_jax.py",  # branch attn-jax
    "_call.py": "_functional/_call.py",  # branch call-path: the one call path
    "_u64.py": "_lib/_u64.py",  # branch call-path: u64 forms (imports nothing of xdrop)
}
# The layer of each module of _lib/ (folders elsewhere have one layer; see LAYERS). A new _lib module needs one here.
LIB_LAYERS: dict[str, int] = {
    "_lib/__init__.py": 1,  # a docstring, no import
    "_lib/_compat.py": 1,
    "_lib/_u64.py": 1,
    "_lib/_arith.py": 1,
    "_lib/_noise_shapes.py": 1,
    "_lib/_docfill.py": 1,
    "_lib/_replay.py": 1,
    "_lib/_values.py": 2,
    "_lib/_traced.py": 2,
    "_lib/_stream.py": 3,
    "_lib/_checks.py": 4,
    "_lib/_sharding.py": 4,
    "_lib/_generator.py": 4,
}
# Layers, top first: (number, name, what, entries). An entry ending in "/" is a folder (every module under
# it, unless a longer entry names the module); the _lib/ rows come from LIB_LAYERS.
LAYERS: list[tuple[int, str, str, list[str]]] = [
    (8, "tools", "verify, bench, their checks and tables, the backend registry",
     ["__main__.py", "bench.py", "verify.py", "_cli/", "_testing/"]),
    (7, "frameworks", "xdrop.torch, distributed, flax, keras, cs231n",
     ["torch/", "flax/", "keras.py", "distributed.py", "cs231n.py"]),
    (6, "public", "dropout, the variants, attention, xdrop/__init__",
     ["__init__.py", "random/__init__.py", "_functional/"]),
    (5, "kernels", "reference and fast paths; one object per array library chooses among them", ["_kernels/"]),
    (4, "gate", "check_call, block arithmetic (sharding), Generator", []),
    (3, "stream", "Philox4x32-10, stream spec v1's rules, uniform variates",
     ["random/_philox.py", "random/_variates.py"]),
    (2, "words", "32-bit words per namespace, the single checks, traced JAX words", ["random/_words.py"]),
    (1, "base", "array-api-compat, output arithmetic, noise-shape rules, docstring blocks, replay", []),
]  # fmt: skip
# The new packages' __init__.py: the folder's one-line description (also the folder tree's).
PACKAGES: dict[str, str] = {
    "_lib": "Layers 1 to 4, under the public functions: base, words, stream rules, the argument gate.",
    "_functional": "The public functions: dropout, its family (channel, alpha, drop path) and attention.",
    "_kernels/host": "Host (CPU) fast paths on NumPy buffers: blocked NumPy and the compiled C kernel (src/).",
    "_kernels/torch": "Torch: CPU tensors through the host kernels, the registered operators, their ONNX form.",
    "_kernels/cuda": "CUDA fast paths: Triton kernels for torch, philox_dropout.c through NVRTC for CuPy.",
    "_kernels/jax": "JAX kernels: stream v1 compiled by jax.jit, and fused attention.",
    "_cli": "The parts of the command line (python -m xdrop): verify and bench.",
    "_cli/verify": "verify's checks of one backend, its table and report.",
    "_cli/bench": "bench's timing, cases, rows and table.",
    "_testing": "The backend registry that the tests, verify, bench and the noxfile read.",
}
# What each folder holds, for the tree in docs/architecture.md (packages above add theirs).
FOLDERS: dict[str, str] = {
    "": "The public modules: xdrop, bench, verify, keras, distributed, cs231n",
    "random": "xdrop.random: Philox4x32-10 on any namespace, uniform variates",
    "torch": "xdrop.torch: layers, replace_dropout and its conversions, the seeded state",
    "flax": "xdrop.flax: NNX and linen layers, attention_fn",
    "_kernels": "Kernel choice (_select: one Library per array library), the reference, Dask",
    "_kernels/host/src": "philox_dropout.c, the extension's wrapper, their meson.build",
}
TOP_MESON_COMMENT = """\
# The build: the pure-Python package plus the host kernel, philox_dropout.c, as the extension
# xdrop._kernels.host._philox (see docs/api.md, "The compiled kernel"). Each folder's meson.build
# lists the files it installs, so a stray file in the tree never reaches the wheel; the
# extension's is xdrop/_kernels/host/src/meson.build.
"""
# Files compiled into the extension and not installed.
COMPILED_ONLY = {"_kernels/host/src/_philox_module.c"}
EXTENSION = ("_philox", "_kernels/host", "_kernels/host/src/_philox_module.c")  # name, package folder, source
# Literal edits after the move: (file, old, new), each old text found exactly once (OPTIONAL_EDITS: at most once).
EDITS: list[tuple[str, str, str]] = [
    (  # the C source sits in src/ beside the module that reads it
        "xdrop/_kernels/host/_native.py",
        'SOURCE = os.path.join(os.path.dirname(__file__), "philox_dropout.c")',
        'SOURCE = os.path.join(os.path.dirname(__file__), "src", "philox_dropout.c")',
    ),
    (  # frames anywhere in the package are xdrop's, not only those of _lib/
        "xdrop/_lib/_noise_shapes.py",
        "here, torch_dir = os.path.dirname(os.path.abspath(__file__)), ",
        "here, torch_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ",
    ),
    (  # the longest line the renames make
        "xdrop/_functional/_variants.py",
        "- :mod:`xdrop._functional._channel_dropout`, :mod:`xdrop._functional._alpha_dropout`, "
        ":mod:`xdrop._functional._drop_path`: the public functions;",
        "- :mod:`xdrop._functional._channel_dropout`, :mod:`xdrop._functional._alpha_dropout`,\n"
        "  :mod:`xdrop._functional._drop_path`: the public functions;",
    ),
    (
        "noxfile.py",
        'ROOT / "xdrop" / "_backends.py"',
        'ROOT / "xdrop" / "_testing" / "_backends.py"',
    ),
]
OPTIONAL_EDITS: list[tuple[str, str, str]] = [
    (  # branch call-path's wording: too long once renamed
        "xdrop/_functional/_variants.py",
        "- :mod:`xdrop._functional._variant_call`: the rules, as :mod:`xdrop._functional._call` (the call path they "
        "all take) reads them;",
        "- :mod:`xdrop._functional._variant_call`: the rules, as :mod:`xdrop._functional._call` (the call path\n"
        "  they all take) reads them;",
    ),
]
# Moved modules that use __file__: each needs an entry in EDITS (or here, reviewed: the path still holds).
FILE_USERS_REVIEWED: set[str] = set()
# Other renames the text pass applies (paths relative to the repository root).
RENAMES = {"tests/test_layers.py": "tests/test_import_layers.py"}
# Text files the text pass leaves alone: data, history, this script.
UNTOUCHED = re.compile(r"^(tests/data/|tests/locks/|benchmarks/.*\.json$|docs/changelog\.md$|tools/reorganise)")
TEXT_SUFFIXES = {".py", ".md", ".toml", ".build", ".options", ".cfg", ".txt", ".sh", ".c", ".h", ".cff", ""}


def fail(message: str) -> None:
    sys.exit(f"reorganise: {message}")


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout


def module_name(rel: str) -> str | None:
    """Dotted name of xdrop/<rel> (None for a non-Python file)."""
    if not rel.endswith(".py"):
        return None
    parts = ["xdrop", *rel[:-3].split("/")]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def plan() -> dict[str, str]:
    """The moves that apply to the tree: fails on a file MOVES does not cover or a mapped file that is gone."""
    tracked = [p[len("xdrop/") :] for p in git("ls-files", "xdrop").splitlines()]
    moves = {**MOVES, **{k: v for k, v in OPTIONAL.items() if k in tracked}}
    unmapped = sorted(set(tracked) - set(moves))
    gone = sorted(set(MOVES) - set(tracked))
    problems = [f"xdrop/{p} is not in MOVES: add a line 'old -> new' for it" for p in unmapped]
    problems += [f"xdrop/{p} is in MOVES but not in the tree: remove or rename its line" for p in gone]
    targets = defaultdict(list)
    for old, new in moves.items():
        targets[new].append(old)
    problems += [f"{olds} all move to xdrop/{new}" for new, olds in targets.items() if len(olds) > 1]
    for new in moves.values():
        if new.startswith("_lib/") and new.endswith(".py") and new not in LIB_LAYERS and new != "_lib/__init__.py":
            problems.append(f"xdrop/{new}: give its layer in LIB_LAYERS")
    if problems:
        fail("the mapping does not fit the tree:\n  " + "\n  ".join(problems))
    return moves


def new_packages(moves: dict[str, str]) -> list[str]:
    """Folders (relative to xdrop/) that hold Python modules after the move but have no __init__.py."""
    dirs = {str(a) for n in moves.values() if n.endswith(".py") for a in Path(n).parents}
    have = {str(Path(n).parent) for n in moves.values() if n.endswith("__init__.py")}
    missing = sorted(d for d in dirs - have if d != ".")
    unknown = [d for d in missing if d not in PACKAGES]
    if unknown:
        fail(f"new folders without a description in PACKAGES: {unknown}")
    return missing


# ---------------------------------------------------------------- imports


def relative(target: str, package: str) -> str:
    """``target`` (dotted) as a relative module reference from inside ``package``."""
    t, p = target.split("."), package.split(".")
    common = 0
    while common < min(len(t), len(p)) and t[common] == p[common]:
        common += 1
    return "." * (len(p) - common + 1) + ".".join(t[common:])


class ImportRewriter:
    def __init__(self, name_map: dict[str, str]) -> None:
        self.map = name_map  # old dotted module -> new dotted module

    def new_name(self, old: str) -> str:
        return self.map.get(old, old)

    def import_from(self, node: ast.ImportFrom, old_pkg: str | None, new_pkg: str | None, where: str) -> str | None:
        if node.level:
            if old_pkg is None or new_pkg is None:
                return None  # tests/tools are no packages
            base = old_pkg.split(".")[: len(old_pkg.split(".")) - node.level + 1]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        if source.split(".")[0] != "xdrop":
            return None
        groups: dict[str, list[str]] = defaultdict(list)
        renamed = False
        for alias in node.names:
            sub = f"{source}.{alias.name}"
            if sub in self.map:  # a submodule: bind the same name to its new place
                parent, _, leaf = self.map[sub].rpartition(".")
                bound = alias.asname or alias.name
                groups[parent].append(leaf if leaf == bound else f"{leaf} as {bound}")
                renamed |= leaf != alias.name
            else:
                if source not in self.map:
                    fail(f"{where}:{node.lineno}: imports from {source}, which is no module of the tree")
                groups[self.new_name(source)].append(
                    alias.name if alias.asname is None else f"{alias.name} as {alias.asname}"
                )

        def ref(target: str) -> str:
            return relative(target, new_pkg) if node.level else target  # type: ignore[arg-type]

        segment_from = ref(next(iter(groups)))
        if len(groups) == 1 and not renamed:
            return f"\x00{segment_from}"  # only the module changes: handled by the caller's head rewrite
        indent = " " * node.col_offset
        statements = [f"from {ref(src)} import {', '.join(names)}" for src, names in groups.items()]
        return ("\n" + indent).join(statements)

    def plain_import(self, node: ast.Import) -> str | None:
        if not any(a.name.split(".")[0] == "xdrop" for a in node.names):
            return None
        parts = []
        for alias in node.names:
            name = self.new_name(alias.name) if alias.name in self.map else alias.name
            parts.append(name if alias.asname is None else f"{name} as {alias.asname}")
        return "import " + ", ".join(parts)


def rewrite_imports(text: str, rewriter: ImportRewriter, old_pkg: str | None, new_pkg: str | None, where: str) -> str:
    """Imports rewritten; where only the module of a ``from`` import changes, the rest of the text is kept."""
    tree = ast.parse(text, where)
    lines = text.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    edits: list[tuple[int, int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            new = rewriter.import_from(node, old_pkg, new_pkg, where)
        elif isinstance(node, ast.Import):
            new = rewriter.plain_import(node)
        else:
            continue
        if new is None:
            continue
        assert node.end_lineno is not None
        assert node.end_col_offset is not None
        start = starts[node.lineno - 1] + node.col_offset
        end = starts[node.end_lineno - 1] + node.end_col_offset
        old = text[start:end]
        if new.startswith("\x00"):  # keep the names (and any comments among them), change the module
            head = re.match(r"from\s+[.\w]+\s+import", old)
            assert head is not None, old
            new = f"from {new[1:]} import" + old[head.end() :]
        else:
            if "#" in old:
                print(f"reorganise: note: {where}:{node.lineno}: comments inside this import were dropped")
            line_end = text.find("\n", end)
            trailing = re.match(r"[ \t]*(#.*)", text[end : len(text) if line_end < 0 else line_end])
            if trailing and "\n" in new:  # one statement became several: each keeps the comment (a noqa)
                new = "\n".join(f"{line}  {trailing.group(1)}" for line in new.split("\n"))
                end += trailing.end()
        if new != old:
            edits.append((start, end, new))
    for start, end, new in sorted(edits, reverse=True):
        text = text[:start] + new + text[end:]
    return text


# ---------------------------------------------------------------- text


def text_rewriter(name_map: dict[str, str], path_map: dict[str, str]):
    old_names = sorted(name_map, key=len, reverse=True)

    def dotted(match: re.Match[str]) -> str:
        whole = match.group(0)
        for old in old_names:
            if whole == old or whole.startswith(old + "."):
                return name_map[old] + whole[len(old) :]
        return whole

    paths = sorted(path_map, key=len, reverse=True)
    # a path from the root, or from a page one folder down (docs/: "../xdrop/_x.py")
    path_re = re.compile(r"(?:(?<![\w/])|(?<=\.\./))(" + "|".join(re.escape(p) for p in paths) + r")(?![\w])")
    dotted_re = re.compile(r"(?<![\w.])xdrop(?:\.\w+)+")

    from_re = re.compile(r"from (xdrop(?:\.\w+)*) import (\w+(?: as \w+)?(?:, \w+(?: as \w+)?)*)")

    def from_import(match: re.Match[str]) -> str:
        """``from xdrop._kernels import _native`` in a string or a page (code the ast pass did not see)."""
        source = match.group(1)
        groups: dict[str, list[str]] = defaultdict(list)
        for item in match.group(2).split(", "):
            name, _, bound = item.partition(" as ")
            sub = f"{source}.{name}"
            if sub in name_map and name_map[sub] != sub:
                parent, _, leaf = name_map[sub].rpartition(".")
                groups[parent].append(leaf if leaf == (bound or name) else f"{leaf} as {bound or name}")
            else:
                groups[source].append(item)
        if list(groups) == [source]:
            return match.group(0)
        return "; ".join(f"from {src} import {', '.join(names)}" for src, names in groups.items())

    # A page's `_torch_layers.py` or `_bench_timing` (a moved module by its old file name alone): its new path
    stems = defaultdict(list)
    for old, new in path_map.items():
        if old.startswith("xdrop/") and old.endswith(".py") and not old.endswith("__init__.py"):
            stems[Path(old).stem].append(new[len("xdrop/") : -len(".py")])
    bare = {stem: news[0] for stem, news in stems.items() if len(news) == 1}
    bare_re = re.compile(r"`(" + "|".join(re.escape(b) for b in sorted(bare, key=len, reverse=True)) + r")(\.py)?`")

    def apply(text: str, page: bool = False) -> str:
        text = path_re.sub(lambda m: path_map[m.group(1)], text)
        text = from_re.sub(from_import, text)
        if page:
            text = bare_re.sub(lambda m: f"`{bare[m.group(1)]}{m.group(2) or ''}`", text)
        return dotted_re.sub(dotted, text)

    return apply


def check_names_are_stable(name_map: dict[str, str]) -> None:
    """The text pass may see a new name again: no new name may start with a moved module's old name."""
    moved = {o for o, n in name_map.items() if o != n}
    for new in name_map.values():
        for old in moved:
            if new == old or new.startswith(old + "."):
                fail(f"new name {new} starts with the old name {old}: the text pass would move it twice")


# ---------------------------------------------------------------- generated files


def meson_files(moves: dict[str, str]) -> dict[str, str]:
    """xdrop/<folder>/meson.build for each folder: py.install_sources of its files, subdir() of its children."""
    files: dict[str, list[str]] = defaultdict(list)
    for new in [*moves.values(), *(f"{p}/__init__.py" for p in new_packages(moves))]:
        if new not in COMPILED_ONLY:
            files[str(Path(new).parent)].append(Path(new).name)
    folders = set(files) | {str(Path(new).parent) for new in moves.values()}
    for folder in list(folders):  # every ancestor has a meson.build that descends into it
        p = Path(folder)
        while str(p) != ".":
            p = p.parent
            folders.add(str(p))
    out = {}
    for folder in sorted(folders):
        install = "xdrop" if folder == "." else f"xdrop/{folder}"
        children = sorted(f for f in folders if f != "." and str(Path(f).parent) == folder)
        text = [f"# The files installed from {install}/: listed, so a stray file in the tree is not installed."]
        if folder == "/".join(EXTENSION[2].split("/")[:-1]):
            text[0] = (TEMPLATES / "meson_extension.build").read_text().rstrip("\n")
        if files.get(folder):
            text += ["py.install_sources(", "  ["]
            text += [f"    '{name}'," for name in sorted(files[folder])]
            text += ["  ],", f"  subdir: '{install}',", ")"]
        text += [f"subdir('{Path(c).name}')" for c in children]
        out["xdrop/meson.build" if folder == "." else f"xdrop/{folder}/meson.build"] = "\n".join(text) + "\n"
    return out


def top_meson(text: str) -> str:
    """The top meson.build: its project() and find_installation, then the package's folder."""
    head, sep, _ = text.partition("py = import('python').find_installation(pure: false)\n")
    if not sep or "install_subdir('xdrop'" not in text or "project(" not in head:
        fail("meson.build has changed shape: expected project(), find_installation and install_subdir('xdrop')")
    head = TOP_MESON_COMMENT + head[head.index("project(") :]
    return head + sep + "subdir('xdrop')\n"


def tree(moves: dict[str, str]) -> str:
    """The folder tree of docs/architecture.md: each folder with what it holds, the top-level modules."""
    folders = sorted({str(a) for n in moves.values() for a in Path(n).parents} - {"."})
    notes = {**FOLDERS, **PACKAGES}
    top = sorted(Path(n).name for n in moves.values() if "/" not in n and n.endswith(".py"))
    lines = ["xdrop/".ljust(28) + FOLDERS[""], "  " + ", ".join(top)]
    for folder in folders:
        depth = folder.count("/") + 1
        lines.append(f"{'  ' * depth}{Path(folder).name}/".ljust(28) + notes.get(folder, "").rstrip("."))
    return "\n".join(lines)


def layer_rows(moves: dict[str, str]) -> list[tuple[int, str, str, list[str]]]:
    rows = []
    for number, name, what, entries in LAYERS:
        lib = [m for m, n in LIB_LAYERS.items() if n == number and (m in moves.values() or m == "_lib/__init__.py")]
        rows.append((number, name, what, [*entries, *lib]))
    return rows


def architecture(text: str, moves: dict[str, str]) -> str:
    """docs/architecture.md with its "Layers" section replaced by the layers by folder and the folder tree."""
    template = (TEMPLATES / "architecture_sections.md").read_text()
    rows = layer_rows(moves)
    diagram = "\n                 |\n".join(f" {n} {name:<12}{what}" for n, name, what, _ in rows)
    table = "\n".join(
        f"| {n} | {name} | " + ", ".join(f"`xdrop/{e}`" for e in entries) + " |" for n, name, _, entries in rows
    )
    sections = template.replace("{diagram}", diagram).replace("{table}", table).replace("{tree}", tree(moves))
    following = [h for h in ("## Module map\n", "## Adding a backend\n") if h in text]
    if "## Layers\n" not in text or not following:
        fail(
            "docs/architecture.md has changed shape: expected '## Layers', then '## Module map' or "
            "'## Adding a backend'"
        )
    start = text.index("## Layers\n")
    end = text.index(following[0])  # the module map stays (its paths rewritten), after the folders
    return text[:start] + sections.rstrip("\n") + "\n\n" + text[end:]


REPLACED = {"layers", "layer_of", "test_every_module_has_one_layer"}  # the rest of the template is appended


def import_layers_test(text: str) -> str:
    """tests/test_import_layers.py with its docstring, table reader and placement check taking folders."""
    source = (TEMPLATES / "test_import_layers_parts.py.in").read_text()
    replacements = ast.parse(source)
    wanted = {n.name: ast.get_source_segment(source, n) for n in replacements.body if isinstance(n, ast.FunctionDef)}
    doc = replacements.body[0]
    tree_ = ast.parse(text)
    starts = [0]
    for line in text.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    edits = []
    found = set()
    for node in tree_.body:
        if isinstance(node, ast.FunctionDef) and node.name in wanted:
            found.add(node.name)
            first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
            assert node.end_lineno is not None
            edits.append((starts[first - 1], starts[node.end_lineno], f"{wanted[node.name]}\n"))
    first_node = tree_.body[0]
    if not isinstance(first_node, ast.Expr) or first_node.end_lineno is None:
        fail("tests/test_import_layers.py has no module docstring to replace")
    edits.append(
        (starts[first_node.lineno - 1], starts[first_node.end_lineno], f"{ast.get_source_segment(source, doc)}\n")
    )
    missing = REPLACED - found
    if missing:
        fail(f"tests/test_import_layers.py lacks the functions to replace: {sorted(missing)}")
    for start, end, new in sorted(edits, reverse=True):
        text = text[:start] + new + text[end:]
    added = [wanted[name] for name in wanted if name not in found]  # the template's new tests
    if "\nimport sys\n" not in text:
        text = text.replace("\nimport ast\n", "\nimport ast\nimport sys\n", 1)
    return text.rstrip("\n") + "".join(f"\n\n\n{code}" for code in added) + "\n"


# ---------------------------------------------------------------- main


def ruff(*args: str) -> str:
    exe = shutil.which("ruff")
    cmd = [exe] if exe else [sys.executable, "-m", "ruff"]
    return subprocess.run([*cmd, *args], cwd=ROOT, check=False, capture_output=True, text=True).stdout


def read_text(rel: str) -> str | None:
    path = ROOT / rel
    if UNTOUCHED.match(rel) or path.suffix not in TEXT_SUFFIXES or not path.is_file():
        return None
    try:
        return path.read_text()
    except UnicodeDecodeError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compute everything, change nothing")
    args = parser.parse_args()
    if (ROOT / "xdrop" / "_lib").exists() or (ROOT / "tests" / "test_import_layers.py").exists():
        fail("already applied (xdrop/_lib/ or tests/test_import_layers.py exists): it runs once")
    moves = plan()
    packages = new_packages(moves)
    name_map = {}
    for old, new in moves.items():
        o, n = module_name(old), module_name(new)
        if o is not None and n is not None:
            name_map[o] = n
    for p in packages:
        name_map.setdefault(f"xdrop.{p.replace('/', '.')}", f"xdrop.{p.replace('/', '.')}")
    name_map[f"xdrop._kernels.{EXTENSION[0]}"] = f"xdrop.{EXTENSION[1].replace('/', '.')}.{EXTENSION[0]}"
    check_names_are_stable(name_map)
    users = [old for old in moves if old.endswith(".py") and "__file__" in (ROOT / "xdrop" / old).read_text()]
    edited = {f for f, _, _ in EDITS}
    unreviewed = [o for o in users if f"xdrop/{moves[o]}" not in edited and o not in FILE_USERS_REVIEWED]
    if unreviewed:
        fail(f"these modules use __file__ and move: add an EDITS entry or FILE_USERS_REVIEWED: {unreviewed}")

    # Everything is computed in memory first: a failure below leaves the checkout untouched.
    renames = {f"xdrop/{o}": f"xdrop/{n}" for o, n in moves.items() if o != n}
    renames.update(RENAMES)
    rewriter = ImportRewriter(name_map)
    text_pass = text_rewriter(name_map, renames)
    contents: dict[str, str] = {}  # new path -> new text, for every text file that moves or changes
    for rel in git("ls-files").splitlines():
        text = read_text(rel)
        new_rel = renames.get(rel, rel)
        if text is None:
            continue
        new_text = text
        if rel.endswith(".py") and rel.startswith("xdrop/"):
            old_rel, here = rel[len("xdrop/") :], new_rel[len("xdrop/") :]
            old_mod, new_mod = module_name(old_rel), module_name(here)
            assert old_mod is not None
            assert new_mod is not None
            old_pkg = old_mod if old_rel.endswith("__init__.py") else old_mod.rpartition(".")[0]
            new_pkg = new_mod if here.endswith("__init__.py") else new_mod.rpartition(".")[0]
            new_text = rewrite_imports(new_text, rewriter, old_pkg, new_pkg, rel)
        elif rel.endswith(".py"):
            new_text = rewrite_imports(new_text, rewriter, None, None, rel)
        new_text = text_pass(new_text, page=rel.endswith(".md"))
        if new_text != text or new_rel != rel:
            contents[new_rel] = new_text
    for p in packages:
        contents[f"xdrop/{p}/__init__.py"] = f'"""{PACKAGES[p]}"""\n'
    for edits, allowed in ((EDITS, {1}), (OPTIONAL_EDITS, {0, 1})):
        for rel, old, new in edits:
            text = contents.get(rel) or (ROOT / rel).read_text()
            if text.count(old) not in allowed:
                fail(f"EDITS: {rel}: expected {old!r} once, found it {text.count(old)} times; nothing changed")
            if old in text:
                contents[rel] = text.replace(old, new)
    contents["meson.build"] = top_meson(contents.get("meson.build") or (ROOT / "meson.build").read_text())
    contents.update(meson_files(moves))
    contents["tests/test_import_layers.py"] = import_layers_test(contents["tests/test_import_layers.py"])
    contents["docs/architecture.md"] = architecture(contents.get("docs/architecture.md") or "", moves)
    contents["tests/test_packaging.py"] = (TEMPLATES / "test_packaging.py.in").read_text()
    if args.check:
        print(f"reorganise: all computed ({len(moves)} files, {len(packages)} new packages, {len(contents)} written)")
        return
    if "ruff" not in ruff("--version"):
        fail("ruff is needed (imports are re-sorted): run it with .nox/frameworks/bin/python or put ruff on PATH")
    if git("status", "--porcelain", "--untracked-files=no").strip():
        fail("the checkout has uncommitted changes: commit or stash them first")

    for old, new in sorted(renames.items()):
        (ROOT / new).parent.mkdir(parents=True, exist_ok=True)
        git("mv", old, new)
    for rel, text in contents.items():
        (ROOT / rel).parent.mkdir(parents=True, exist_ok=True)
        (ROOT / rel).write_text(text)
    ruff("check", "--select", "I", "--fix", "-q", ".")  # the moved imports sort differently
    ruff("format", "-q", ".")
    remaining = ruff("check", "--output-format", "concise", "-q", ".")
    git("add", "-u")
    git("add", *contents)
    top = [n for n in moves.values() if "/" not in n and n.endswith(".py")]
    print(f"reorganise: {len(top)} modules directly in xdrop/ (at most {MAX_TOP_LEVEL}): {sorted(top)}")
    if len(top) > MAX_TOP_LEVEL:
        print("reorganise: WARNING: more modules directly in xdrop/ than the limit")
    for name in sorted(moves.values()):
        count = len((ROOT / "xdrop" / name).read_text().splitlines()) if name.endswith(".py") else 0
        if count > MAX_LINES:
            print(f"reorganise: WARNING: xdrop/{name} has {count} lines (limit {MAX_LINES})")
    if remaining.strip():
        print("reorganise: WARNING: ruff still finds these (fix by hand, e.g. a line the renames made too long):")
        print(remaining)
    print("reorganise: done and staged; run the tests, ruff and mypy, then commit")


if __name__ == "__main__":
    main()
