"""The JAX attention rows of ``python -m xdrop bench``: both broadcast modes, well-formed, skippable."""

from __future__ import annotations

import json

import pytest

from xdrop.__main__ import main

pytest.importorskip("jax", reason="the JAX rows time JAX")
pytest.importorskip("flax", reason="the JAX rows compare with Flax's attention")

ARGS = ["bench", "--quick", "--backend", "numpy", "--sizes", "6", "--mlp-epochs", "0", "--first-call-runs", "0"]


def test_jax_attention_rows(tmp_path, capsys):
    path = tmp_path / "bench.json"
    assert main([*ARGS, "--jax-attention-lengths", "32,64", "--json", str(path)]) == 0
    assert "JAX attention fwd+bwd" in capsys.readouterr().out
    rows = json.loads(path.read_text())["attention_jax"]["rows"]
    assert [(r["L"], r["broadcast_dropout"]) for r in rows] == [(32, True), (32, False), (64, True), (64, False)]
    for r in rows:
        ours, flax = r["xdrop"], r["flax"]
        assert ours["forward_backward_s"] > 0 and flax["forward_backward_s"] > 0
        assert r["ratios"]["forward_backward_s"] == ours["forward_backward_s"] / flax["forward_backward_s"]
        if ours["temp_bytes"] is not None and flax["temp_bytes"]:
            assert r["ratios"]["temp_bytes"] == ours["temp_bytes"] / flax["temp_bytes"]


def test_jax_attention_rows_can_be_skipped_and_lengths_are_checked(tmp_path, capsys):
    path = tmp_path / "bench.json"
    assert main([*ARGS, "--jax-attention-lengths", "0", "--json", str(path)]) == 0
    report = json.loads(path.read_text())
    assert "attention_jax" not in report and report["skipped"]["jax-attention"] == "--jax-attention-lengths 0"
    with pytest.raises(SystemExit):
        main([*ARGS, "--jax-attention-lengths", "12,x"])
    assert "comma-separated integers" in capsys.readouterr().err
