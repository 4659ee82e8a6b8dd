"""Sphinx extension for xdrop's site: generated pages, offline MathJax, and build-failing checks.

- ``builder-inited``: writes the generated fragments (see ``generate.py``) and
  reports their problems as warnings;
- MathJax 3 is served from the built site (copied from the ``mathjax``
  package of ``django-static-mathjax``), never from a CDN;
- every public name in ``xdrop.__all__`` (and in the ``__all__`` of its public
  submodules) must have a docstring and an entry in the API reference;
- every Python code example on a page must be a doctest/testcode block, so
  ``sphinx-build -b doctest`` runs all of them;
- every fenced code block in a page's source (any language) is either run
  (``{doctest}``, ``{testcode}`` and its ``{testoutput}``/``{testsetup}``) or
  marked on the line before it, with a reason, as not run:
  ``% not run: <reason>`` (a MyST comment) or ``<!-- not run: <reason> -->``
  (for README.md, which GitHub renders).
"""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)
PYTHON_LANGS = {"python", "python3", "py", "pycon", "ipython"}


def mathjax_dir() -> Path:
    """The MathJax 3 ``es5`` bundle directory shipped by ``django-static-mathjax``."""
    spec = importlib.util.find_spec("mathjax")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("MathJax for offline docs is missing: pip install django-static-mathjax (the docs extra)")
    es5 = Path(next(iter(spec.submodule_search_locations))) / "static" / "mathjax" / "es5"
    if not (es5 / "tex-chtml.js").is_file():
        raise RuntimeError(f"no tex-chtml.js under {es5}; is the 'mathjax' module django-static-mathjax's?")
    return es5


def copy_mathjax(app: Sphinx, exc: Exception | None) -> None:
    if exc is None and app.builder.format == "html":
        shutil.copytree(mathjax_dir(), Path(app.outdir) / "_static" / "mathjax", dirs_exist_ok=True)


def generate(app: Sphinx) -> None:
    import generate as gen

    for problem in gen.run(missing_only=True):
        logger.warning(problem, type="xdrop", subtype="generated")


TOCTREE = re.compile(r"^```\{toctree\}\n(.*?)^```", re.MULTILINE | re.DOTALL)


def list_unlisted_pages(app: Sphinx, docname: str, source: list[str]) -> None:
    """Append every top-level page that no toctree of the index names to its last toctree."""
    if docname != app.config.root_doc:
        return
    text = source[0]
    blocks = list(TOCTREE.finditer(text))
    if not blocks:
        return
    listed = {ln.strip() for b in blocks for ln in b.group(1).splitlines() if ln.strip() and ln[0] not in ":%"}
    pages = sorted(p.stem for p in Path(app.srcdir).glob("*.md") if p.stem != docname)
    extra = [p for p in pages if p not in listed]
    if extra:
        end = blocks[-1].end(1)
        source[0] = text[:end] + "".join(f"{p}\n" for p in extra) + text[end:]


def public_names() -> list[tuple[str, Any]]:
    """(qualified name, object) for ``xdrop.__all__`` and its public submodules' ``__all__``."""
    import xdrop

    found: list[tuple[str, Any]] = []
    todo: list[ModuleType] = [xdrop, importlib.import_module("xdrop.cs231n")]
    while todo:
        mod = todo.pop(0)
        for name in mod.__all__:
            obj = getattr(mod, name)
            found.append((f"{mod.__name__}.{name}", obj))
            if isinstance(obj, ModuleType) and hasattr(obj, "__all__"):
                todo.append(obj)
    return found


def api_problems(names: list[tuple[str, Any]], documented: set[str]) -> list[str]:
    """Public names without a docstring (functions, classes, modules) or without an API entry."""
    problems = []
    for qualname, obj in names:
        needs_doc = callable(obj) or isinstance(obj, ModuleType)
        doc = (obj.__doc__ or "").strip()
        if isinstance(obj, type) and doc.startswith(f"{obj.__name__}("):
            doc = ""  # the signature dataclasses write when a class has no docstring
        if needs_doc and not doc:
            problems.append(f"public name {qualname} has no docstring")
        if qualname not in documented:
            problems.append(f"public name {qualname} is missing from the API reference: add it to docs/api.md")
    return problems


def check_api(app: Sphinx, env: Any) -> None:
    """Fail (via -W) when a public name has no docstring or no API-reference entry."""
    for problem in api_problems(public_names(), set(env.get_domain("py").objects)):
        logger.warning(problem, type="xdrop", subtype="api")


def _marked_not_run(node: nodes.Node) -> bool:
    """Whether the block follows a ``% not run: <reason>`` comment (MyST keeps it as a comment node)."""
    before = node.previous_sibling() if hasattr(node, "previous_sibling") else None
    return isinstance(before, nodes.comment) and before.astext().strip().startswith("not run:")


def untested_examples(doctree: nodes.Node) -> list[nodes.literal_block]:
    """Python code blocks that the doctest builder would not run and that no marker says why."""
    return [
        node
        for node in doctree.findall(nodes.literal_block)
        if node.get("language") in PYTHON_LANGS and "testnodetype" not in node and not _marked_not_run(node)
    ]


def check_examples(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    """A Python example shown on a page must run under the doctest builder."""
    for node in untested_examples(doctree):
        logger.warning(
            "Python example not run as a doctest: use a {doctest} or {testcode} block",
            location=node,
            type="xdrop",
            subtype="example",
        )


FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
# Directives whose body the doctest builder runs (or checks as a run block's output).
RUN_DIRECTIVES = {"doctest", "testcode", "testoutput", "testsetup", "testcleanup"}
# Directives that show code without running it: they need a "not run" marker like a plain fence.
CODE_DIRECTIVES = {"code-block", "code", "sourcecode", "literalinclude"}
NOT_RUN = re.compile(r"^\s*(?:%\s*not run:\s*(?P<a>\S.*)|<!--\s*not run:\s*(?P<b>\S.*?)\s*-->)\s*$")


def unmarked_code_blocks(text: str, run_languages: frozenset[str] = frozenset()) -> list[tuple[int, str]]:
    """(line number, info string) of each fenced code block that is neither run nor marked not run.

    A fenced block is code unless its info string names a directive (``{name}``)
    other than a code-showing one. The marker must be the nearest non-blank
    line above the fence and must give a reason.
    """
    lines = text.splitlines()
    found: list[tuple[int, str]] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        fence, info = m.group("fence"), m.group("info").strip()
        directive = re.match(r"^\{([\w:-]+)\}", info)
        name = directive.group(1) if directive else None
        is_code = name is None or name in CODE_DIRECTIVES
        if is_code and name not in RUN_DIRECTIVES and not (name is None and info in run_languages):
            above = next((ln for ln in reversed(lines[:i]) if ln.strip()), "")
            if NOT_RUN.match(above) is None:
                found.append((i + 1, info))
        # Skip to the closing fence: the same character, at least as long, nothing after it.
        close = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        i += 1
        while i < len(lines) and close.match(lines[i]) is None:
            i += 1
        i += 1
    return found


def check_code_blocks(app: Sphinx, docname: str, source: list[str]) -> None:
    """Warn (so ``-W`` fails the build) on each code block neither run nor marked as not run."""
    for line, info in unmarked_code_blocks(source[0]):
        logger.warning(
            f"code block ({info or 'no language'}) is neither run ({{doctest}}/{{testcode}}) nor marked "
            "'% not run: <reason>' on the line above",
            location=(docname, line),
            type="xdrop",
            subtype="example",
        )


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("builder-inited", generate)
    app.connect("source-read", list_unlisted_pages)
    app.connect("source-read", check_code_blocks)
    app.connect("build-finished", copy_mathjax)
    app.connect("env-check-consistency", check_api)
    app.connect("doctree-resolved", check_examples)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
