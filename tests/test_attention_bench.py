"""The attention rows of ``python -m xdrop bench``: present, well-formed, and skippable."""

from __future__ import annotations

import json

import pytest

from xdrop.__main__ import main

pytest.importorskip("torch", reason="the attention rows compare with torch's SDPA")


def test_attention_rows(tmp_path, capsys):
    path = tmp_path / "bench.json"
    args = ["bench", "--quick", "--backend", "torch", "--sizes", "8", "--mlp-epochs", "0"]
    assert main([*args, "--attention-lengths", "64,128", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "attention (batch 1, 8 heads" in out
    rows = json.loads(path.read_text())["attention"]["rows"]
    assert [r["L"] for r in rows] == [64, 128]
    for r in rows:
        ours, theirs = r["xdrop"], r["torch-math"]
        assert all(ours[k] > 0 and theirs[k] > 0 for k in ("forward_s", "forward_backward_s", "saved_bytes"))
        # the lse per row and the (seed, step) pair, beside torch's (N, L, S) tensors
        assert ours["saved_beyond_inputs_bytes"] == 8 * r["L"] * 4 + 16
        assert theirs["saved_beyond_inputs_bytes"] > 8 * r["L"] * r["S"] * 4
        assert r["ratios"]["saved_bytes"] == ours["saved_bytes"] / theirs["saved_bytes"]


def test_attention_rows_can_be_skipped_and_lengths_are_checked(tmp_path, capsys):
    path = tmp_path / "bench.json"
    args = ["bench", "--quick", "--backend", "torch", "--sizes", "8", "--mlp-epochs", "0", "--json", str(path)]
    assert main([*args, "--attention-lengths", "0"]) == 0
    assert "attention" not in json.loads(path.read_text())
    with pytest.raises(SystemExit):
        main([*args, "--attention-lengths", "12,x"])
    assert "comma-separated integers" in capsys.readouterr().err
