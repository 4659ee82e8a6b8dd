"""The attention column of ``verify``: it passes here and fails when the mask is not keep_mask's."""

from __future__ import annotations

import pytest

import xdrop._functional._attention_reference as reference
from xdrop import verify
from xdrop._cli.verify._attention import check_attention


def test_attention_column_passes(backend):
    with backend.scope():
        cell = check_attention(backend)
    assert cell.passed, cell.figure
    assert cell.detail["differing_bits"] == 0


def test_attention_column_fails_on_the_next_steps_mask(numpy_ref, monkeypatch):
    honest = reference.keep_mask
    monkeypatch.setattr(reference, "keep_mask", lambda *a, step, **kw: honest(*a, step=step + 1, **kw))
    cell = check_attention(numpy_ref)
    assert not cell.passed and cell.detail["differing_bits"] > 0


def test_attention_column_fails_on_a_wrong_torch_backward(monkeypatch):
    pytest.importorskip("torch", reason="the torch operator needs torch")
    from xdrop._kernels.torch import _attention as _attention_torch

    honest = _attention_torch.backward

    def wrong(dout, *args):
        dq, dk, dv = honest(dout, *args)
        return dq * 1.001, dk, dv

    monkeypatch.setattr(_attention_torch, "backward", wrong)
    cell = check_attention(verify.load("torch"))
    assert not cell.passed and cell.detail["differing_bits"] == 0 and cell.detail["finite_difference_error"] > 1e-6


def test_attention_is_a_verify_column():
    assert "attention" in verify.PROPERTIES and "attention" in verify.CHECKS
