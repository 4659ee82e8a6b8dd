"""The variants' shared numpydoc blocks: filled into every docstring from one template (xdrop._lib._docfill)."""

from __future__ import annotations

import pytest

import xdrop
from xdrop._lib import _docfill

VARIANTS = [
    "dropout1d",
    "dropout2d",
    "dropout3d",
    "alpha_dropout",
    "feature_alpha_dropout",
    "drop_path",
]


@pytest.mark.parametrize("name", VARIANTS + [f"{n}_forward" for n in VARIANTS])
def test_every_variant_docstring_is_filled(name):
    doc = getattr(xdrop, name).__doc__
    assert "%(" not in doc, f"{name}: an unfilled template field"
    if name.endswith("_forward"):
        assert "    seed : int or Generator\n        Required (no OS entropy)" in doc
    else:
        assert "    seed : int, Generator or None, optional\n        As in :func:`xdrop.dropout`." in doc
        assert "    Returns\n    -------\n    array\n        Like ``x``." in doc


def test_a_block_keeps_the_indent_of_its_field():
    assert _docfill.fill("x\n        %(impl)s\ny") == (
        'x\n        impl : {"auto", "reference"}, optional\n'
        '            ``"reference"`` forces the pure-standard implementation.\ny'
    )


def test_an_unknown_field_is_an_error_naming_it():
    with pytest.raises(KeyError, match=r"%\(sead\)s"):
        _docfill.fill("    %(sead)s\n")
