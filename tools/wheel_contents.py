#!/usr/bin/env python3
"""The files a wheel of xdrop must hold, exactly: ``python tools/wheel_contents.py WHEEL [--compiled]``.

Expected are the files of ``xdrop/`` that git tracks, less the build's own
(every ``meson.build``) and the C sources compiled into an extension (the
sources of the ``extension_module`` calls in the ``meson.build`` files, and
the ``.c`` files they ``#include``, unless a ``py.install_sources`` list also
installs one), plus
the extension itself in a compiled wheel (none in the others) and the
metadata. A file the build took from the working tree that git does not track
(an in-place build's ``.so``, ``__pycache__``, a module not yet added) is
therefore an error, as is a tracked file the wheel lacks. ``nox -s wheel``
runs this on every wheel it builds; it exits 1 listing the differences.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "xdrop"
METADATA = {"METADATA", "WHEEL", "RECORD", "entry_points.txt", "licenses/LICENSE"}
EXTENSION_CALL = re.compile(
    r"extension_module\(\s*'(?P<name>\w+)',\s*'(?P<source>[^']+)',\s*subdir:\s*'(?P<subdir>[^']+)'", re.S
)
INCLUDE_C = re.compile(r'^#include "(?P<file>[\w.]+\.c)"', re.M)
INSTALL_LIST = re.compile(r"py\.install_sources\(\s*\[(?P<files>[^\]]*)\]", re.S)


def meson_files(root: Path) -> list[Path]:
    """The repository's meson.build files (the top one and those of the package's folders)."""
    return [root / "meson.build", *sorted((root / PACKAGE).rglob("meson.build"))]


def extensions(root: Path) -> list[tuple[str, str, str]]:
    """(name, installed folder, source path from the root) of each extension module the build makes."""
    found = []
    for path in meson_files(root):
        for m in EXTENSION_CALL.finditer(path.read_text()):
            source = (path.parent / m["source"]).relative_to(root).as_posix()
            found.append((m["name"], m["subdir"], source))
    return found


def compiled_only(root: Path) -> set[str]:
    """The extensions' sources and the ``.c`` files they include, less those a meson.build installs."""
    installed = set()
    for path in meson_files(root):
        for m in INSTALL_LIST.finditer(path.read_text()):
            installed |= {
                (path.parent / name).relative_to(root).as_posix() for name in re.findall(r"'([^']+)'", m["files"])
            }
    out = set()
    for _, _, source in extensions(root):
        out.add(source)
        folder = (root / source).parent
        for m in INCLUDE_C.finditer((root / source).read_text()):
            out.add((folder / m["file"]).relative_to(root).as_posix())
    return out - installed


def expected(root: Path) -> set[str]:
    """The package files every wheel holds: tracked, less meson.build files and compiled-only sources."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", PACKAGE], cwd=root, check=True, capture_output=True, text=True
    ).stdout
    tracked = {p for p in listed.split("\0") if p}
    compiled = compiled_only(root)
    return {p for p in tracked if Path(p).name != "meson.build" and p not in compiled}


def problems(names: list[str], root: Path, compiled: bool) -> list[str]:
    """What is wrong with a wheel holding ``names`` (an empty list: nothing)."""
    out = []
    package = {n for n in names if n.startswith(f"{PACKAGE}/") and not n.endswith("/")}
    for name, subdir, _ in extensions(root):
        pattern = re.compile(rf"{re.escape(subdir)}/{re.escape(name)}(\.[\w-]+)?\.(so|pyd)")
        built = sorted(n for n in package if pattern.fullmatch(n))
        package -= set(built)
        if compiled and len(built) != 1:
            out.append(f"expected one extension {subdir}/{name}.*.so, found {built or 'none'}")
        if not compiled and built:
            out.append(f"a wheel built without the kernel holds the extension {built}")
    want = expected(root)
    out += [f"not in the wheel: {p}" for p in sorted(want - package)]
    out += [f"unexpected in the wheel (no tracked, installed source): {p}" for p in sorted(package - want)]
    info = {n.split("/", 1)[0] for n in names if ".dist-info/" in n}
    if len(info) != 1:
        out.append(f"expected one .dist-info folder, found {sorted(info)}")
    else:
        (folder,) = info
        have = {n.split("/", 1)[1] for n in names if n.startswith(f"{folder}/") and not n.endswith("/")}
        out += [f"metadata missing: {folder}/{m}" for m in sorted(METADATA - have)]
        out += [f"unexpected metadata: {folder}/{m}" for m in sorted(have - METADATA)]
    others = sorted(n for n in names if not n.startswith(f"{PACKAGE}/") and ".dist-info/" not in n)
    out += [f"outside the package and its metadata: {n}" for n in others]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path)
    parser.add_argument("--compiled", action="store_true", help="the wheel must hold the compiled extension")
    args = parser.parse_args(argv)
    with zipfile.ZipFile(args.wheel) as archive:
        found = problems(archive.namelist(), ROOT, args.compiled)
    for line in found:
        print(f"{args.wheel.name}: {line}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
