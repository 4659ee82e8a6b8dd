#!/usr/bin/env python3
"""Print xdrop's version (``__version__`` in xdrop/__init__.py) for meson.build's project()."""

import re
from pathlib import Path

text = (Path(__file__).resolve().parent.parent / "xdrop" / "__init__.py").read_text()
found = re.search(r'^__version__ = "([^"]+)"', text, re.MULTILINE)
if found is None:
    raise SystemExit("no __version__ in xdrop/__init__.py")
print(found[1])
