"""tools/wheel_contents.py, which ``nox -s wheel`` runs on each wheel: it finds strays, gaps and a wrong extension.

The wheels themselves are built by ``nox -s wheel``; here the check runs on
file lists made from this checkout's tracked files, with one fault planted each.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import load_tool

ROOT = Path(__file__).resolve().parent.parent
if shutil.which("git") is None or not (ROOT / ".git").exists():
    pytest.skip("the expected files are git's tracked files: needs a git checkout", allow_module_level=True)
wheel_contents = load_tool("wheel_contents")

INFO = "xdrop-1.0.dist-info"
METADATA = [f"{INFO}/{m}" for m in sorted(wheel_contents.METADATA)]


def good(compiled: bool) -> list[str]:
    names = [*sorted(wheel_contents.expected(ROOT)), *METADATA]
    if compiled:
        for name, subdir, _ in wheel_contents.extensions(ROOT):
            names.append(f"{subdir}/{name}.cpython-311-x86_64-linux-gnu.so")
    return names


def test_the_build_makes_one_extension_from_a_tracked_source():
    (found,) = wheel_contents.extensions(ROOT)
    tracked = subprocess.run(["git", "ls-files", found[2]], cwd=ROOT, capture_output=True, text=True, check=True)
    assert tracked.stdout.strip() == found[2]
    assert found[2] not in wheel_contents.expected(ROOT)  # compiled in, not installed


@pytest.mark.parametrize("compiled", [True, False])
def test_the_expected_wheel_passes(compiled):
    assert wheel_contents.problems(good(compiled), ROOT, compiled) == []


@pytest.mark.parametrize(
    "stray",
    [
        "xdrop/__pycache__/__init__.cpython-311.pyc",
        "xdrop/_philox.cpython-311-x86_64-linux-gnu.so",  # an in-place build's output in another folder
        "xdrop/meson.build",
        "xdrop/notes.txt",
    ],
)
def test_a_stray_file_is_reported(stray):
    found = wheel_contents.problems([*good(True), stray], ROOT, True)
    assert found == [f"unexpected in the wheel (no tracked, installed source): {stray}"]


def test_a_compiled_only_source_in_the_wheel_is_reported():
    ((_, _, source),) = wheel_contents.extensions(ROOT)
    found = wheel_contents.problems([*good(True), source], ROOT, True)
    assert found == [f"unexpected in the wheel (no tracked, installed source): {source}"]


def test_a_missing_module_and_missing_licence_are_reported():
    names = [n for n in good(False) if n not in {"xdrop/__init__.py", f"{INFO}/licenses/LICENSE"}]
    assert wheel_contents.problems(names, ROOT, False) == [
        "not in the wheel: xdrop/__init__.py",
        f"metadata missing: {INFO}/licenses/LICENSE",
    ]


def test_the_extension_must_be_there_exactly_when_compiled():
    assert any("expected one extension" in p for p in wheel_contents.problems(good(False), ROOT, True))
    assert any("without the kernel holds" in p for p in wheel_contents.problems(good(True), ROOT, False))
    ((name, subdir, _),) = wheel_contents.extensions(ROOT)
    twice = [*good(True), f"{subdir}/{name}.abi3.so"]
    assert any("expected one extension" in p for p in wheel_contents.problems(twice, ROOT, True))


def test_files_outside_the_package_are_reported():
    found = wheel_contents.problems([*good(True), "tests/conftest.py"], ROOT, True)
    assert found == ["outside the package and its metadata: tests/conftest.py"]


def test_a_c_file_the_extension_includes_is_compiled_only():
    """A ``.c`` file the extension's source ``#include``s is compiled in: in the wheel it is a stray, unless a
    meson.build installs it (``philox_dropout.c``, which the CUDA path compiles at run time)."""
    compiled = wheel_contents.compiled_only(ROOT)
    assert "xdrop/_kernels/host/src/xla_attention.c" in compiled
    assert "xdrop/_kernels/host/src/philox_dropout.c" not in compiled
    source = "xdrop/_kernels/host/src/xla_attention.c"
    found = wheel_contents.problems([*good(True), source], ROOT, True)
    assert found == [f"unexpected in the wheel (no tracked, installed source): {source}"]
