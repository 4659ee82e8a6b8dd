"""Sphinx configuration for xdrop's documentation (``nox -s docs`` builds and checks it)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))

import xdrop  # noqa: E402

# Keras reads its backend at import (xdrop.keras's API page and examples): the first one installed.
os.environ.setdefault("KERAS_BACKEND", next((b for b in ("jax", "torch") if importlib.util.find_spec(b)), "numpy"))

project = "xdrop"
author = "the xdrop developers"
copyright = "the xdrop developers"
release = xdrop.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_copybutton",
    "xdrop_docs",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "_generated", "Thumbs.db", ".DS_Store"]
suppress_warnings: list[str] = []
nitpicky = False

# Markdown: $...$ math, ::: fences, {doctest} blocks.
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# Math from the built site only: the build-finished hook copies MathJax into _static/mathjax.
mathjax_path = "mathjax/tex-chtml.js"
mathjax3_config = {"tex": {"inlineMath": [["\\(", "\\)"]], "displayMath": [["\\[", "\\]"]]}}

# API reference: autosummary stubs, numpydoc docstrings.
autosummary_generate = True
autosummary_imported_members = True
autodoc_typehints = "none"
autodoc_default_options: dict[str, object] = {}
# Class pages (docs/_templates/autosummary/class.rst) show the class's own documented members,
# not the ~60 that torch.nn.Module or keras.layers.Layer bring, and not a base class's __init__ docstring.
templates_path = ["_templates"]
autoclass_content = "class"
autodoc_inherit_docstrings = False
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False

# Every example runs: doctest blocks in docstrings and {doctest}/{testcode} blocks on pages.
doctest_test_doctest_blocks = "default"
doctest_global_setup = """
import numpy as np
import xdrop
try:
    import cupy
    HAVE_CUPY_DEVICE = cupy.cuda.runtime.getDeviceCount() > 0
except Exception:
    HAVE_CUPY_DEVICE = False
try:
    import torch
    HAVE_TORCH = True
except ImportError:
    HAVE_TORCH = False
try:
    import dask.array
    import distributed
    HAVE_DASK = True
except ImportError:
    HAVE_DASK = False
try:
    import jax
    import flax
    HAVE_JAX = True
except ImportError:
    HAVE_JAX = False
try:
    import keras
    HAVE_KERAS = True
except ImportError:
    HAVE_KERAS = False
try:
    import transformers
    HAVE_TRANSFORMERS = HAVE_TORCH
except ImportError:
    HAVE_TRANSFORMERS = False
"""

# Copy buttons copy the code, not the prompts or the output.
copybutton_prompt_text = r">>> |\.\.\. "
copybutton_prompt_is_regexp = True
copybutton_only_copy_prompt_lines = True

html_theme = "furo"
html_title = f"xdrop {release}"
html_static_path = ["_static"]
html_css_files = ["xdrop.css"]
html_show_sourcelink = False
