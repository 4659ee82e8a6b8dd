"""The build installs listed files only: every folder's meson.build lists exactly the package's tracked sources.

meson-python installs what the ``meson.build`` files list (``py.install_sources``),
so a file lying in the tree (an in-place build's ``.so``, ``__pycache__``) never
reaches the wheel; this checks the lists against git's tracked files, so a new
module fails here until its folder's ``meson.build`` names it. The wheels
themselves are checked file by file by ``nox -s wheel`` (``tools/wheel_contents.py``).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from helpers import load_tool

ROOT = Path(__file__).resolve().parent.parent
if shutil.which("git") is None or not (ROOT / ".git").exists():
    pytest.skip("the expected files are git's tracked files: needs a git checkout", allow_module_level=True)
wheel_contents = load_tool("wheel_contents")

INSTALL = re.compile(r"py\.install_sources\(\s*\[(?P<files>[^\]]*)\],\s*subdir:\s*'(?P<subdir>[^']+)'", re.S)
SUBDIR = re.compile(r"^subdir\('([^']+)'\)", re.M)


def listed(folder: Path) -> set[str]:
    """The files the meson.build of ``folder`` and of the folders it descends into install (paths from the root)."""
    text = (folder / "meson.build").read_text()
    out = set()
    for m in INSTALL.finditer(text):
        out |= {f"{m['subdir']}/{name}" for name in re.findall(r"'([^']+)'", m["files"])}
    for sub in SUBDIR.findall(text):
        out |= listed(folder / sub)
    return out


def test_meson_installs_exactly_the_tracked_sources():
    assert listed(ROOT) == wheel_contents.expected(ROOT)


def test_install_subdir_is_not_used():
    """install_subdir copies whatever lies in a folder, strays included."""
    assert not [p for p in wheel_contents.meson_files(ROOT) if "install_subdir" in p.read_text()]
