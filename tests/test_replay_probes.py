"""xdrop._lib._replay's private torch probes: present in the torch the tests run with, and a loud error without one."""

from __future__ import annotations

import re

import pytest

torch = pytest.importorskip("torch", reason="the checkpoint replay runs on torch tensors")

import xdrop  # noqa: E402
from xdrop._lib import _replay  # noqa: E402


def test_the_probes_exist_in_this_torch():
    """Each private name resolves to a callable here (a torch upgrade that drops one fails this first)."""
    task_id, hooks, grad_enabled = _replay.require_probes()
    assert task_id() == -1  # outside backward
    assert grad_enabled() is torch.is_grad_enabled()
    assert callable(hooks)


@pytest.mark.parametrize("path", _replay.PROBES)
def test_a_missing_probe_fails_loudly_naming_it(monkeypatch, path):
    """Never a silent fallback: the error names the private function and the torch version."""
    owner, _, name = f"torch.{path}".rpartition(".")
    module = torch
    for part in owner.split(".")[1:]:
        module = getattr(module, part)
    monkeypatch.delattr(module, name)
    monkeypatch.setattr(_replay, "_probes", None)  # as in a fresh process
    with pytest.raises(
        _replay.MissingTorchProbe, match=re.escape(f"needs torch.{path}, which torch {torch.__version__}")
    ):
        _replay.require_probes()
    gen = xdrop.Generator(1)
    with pytest.raises(_replay.MissingTorchProbe, match=name):  # the first replayable call says the same
        xdrop.dropout(torch.ones(4), 0.5, seed=gen)
