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


def test_attention_ab_rows_and_the_loaded_row(tmp_path, capsys, monkeypatch):
    """The alternating A/B rows (math with the same dropout, fused at p = 0, a float mask each side) and the
    row beside busy processes, which are all stopped after it."""
    import os
    import subprocess

    from xdrop._cli.bench import _attention as _bench_attention

    started = []

    class Recorded(subprocess.Popen):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(self)

    monkeypatch.setattr(subprocess, "Popen", Recorded)
    monkeypatch.setattr(_bench_attention, "LOADED_LENGTH", 32)
    path = tmp_path / "bench.json"
    args = ["bench", "--quick", "--backend", "torch", "--sizes", "8", "--mlp-epochs", "0", "--json", str(path)]
    assert main([*args, "--attention-lengths", "32", "--attention-ab-lengths", "32,48", "--attention-load", "1"]) == 0
    assert "attention A/B, fwd+bwd, alternating" in capsys.readouterr().out
    section = json.loads(path.read_text())["attention"]
    assert [r["L"] for r in section["ab"]] == [32, 48]
    for r in section["ab"]:
        times = r["forward_backward_s"]
        assert set(times) == {"xdrop", "torch-math", "torch-fused-p0", "xdrop-mask", "torch-math-mask"}
        assert all(s > 0 for s in times.values())
        assert r["ratios"] == {
            "vs-torch-math": times["xdrop"] / times["torch-math"],
            "vs-torch-fused-p0": times["xdrop"] / times["torch-fused-p0"],
            "mask-vs-torch-math-mask": times["xdrop-mask"] / times["torch-math-mask"],
        }
    (row,) = section["loaded"]
    assert row["L"] == 32 and row["busy_processes"] == os.cpu_count() == len(started)
    assert set(row["forward_backward_s"]) == {"xdrop", "torch-math"}
    assert all(proc.poll() is not None for proc in started)  # stopped
    with pytest.raises(SystemExit):
        main([*args, "--attention-load", "-1"])
    assert "--attention-load: must be a non-negative integer, got '-1'" in capsys.readouterr().err
