"""``python -m xdrop bench`` runs and reports what it promises (functional only: no timing assertions)."""

from __future__ import annotations

import importlib.util
import json

import pytest

from xdrop.__main__ import main


def test_bench_help_lists_the_flags(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    flags = ("--backend", "--sizes", "--dtype", "--json", "--plot", "--quick", "--mlp-epochs", "--model-steps")
    for flag in (*flags, "--first-call-runs"):
        assert flag in text


def test_bench_rejects_an_unknown_backend(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--backend", "tpu"])
    assert exc.value.code == 2
    assert "tpu" in capsys.readouterr().err


def test_bench_quick_run_writes_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    plot = tmp_path / "bench.png"
    backends = ["--backend", "numpy", "--backend", "torch", "--backend", "cupy"]
    dtypes = ["--dtype", "float32", "--dtype", "float64"]
    args = ["--json", str(path), "--plot", str(plot), "--mlp-epochs", "1", "--model-steps", "2"]
    code = main(["bench", "--quick", "--sizes", "10,12", *backends, *dtypes, *args])
    assert code == 0
    out = capsys.readouterr().out
    report = json.loads(path.read_text())
    assert "ratio xdrop/impl" in out and "compiled kernel: " in out
    native = report["meta"]["native"]
    if native["error"] is None:  # the variant that ran is recorded, and printed
        assert native["variant"] in native["variants"] and f"compiled kernel: variant {native['variant']}" in out
    else:
        assert f"compiled kernel: unavailable: {native['error']}" in out
    names = {(r["backend"], r["name"], r["direction"]) for r in report["results"]}
    for case in ["xdrop", "numpy-oneliner", "cs231n", "numpy-generator"]:
        assert ("numpy", case, "forward") in names and ("numpy", case, "backward") in names
    assert ("numpy", "multiply", "forward") in names and ("numpy", "copy", "forward") in names
    into = [q for q in report["ratios"] if q["xdrop"] == "xdrop-into" and q["peer"] == "multiply-into"]
    assert ("numpy", "xdrop-into", "forward") in names and len(into) == 4  # two sizes, two dtypes
    assert {r["size"] for r in report["results"]} == {1 << 10, 1 << 12}
    first = report["first_call"]  # --quick: two fresh processes
    assert len(first["runs"]) == 2 and all(r["size"] == 1 << 20 and r["import_s"] > 0 for r in first["runs"])
    assert first["min_total_s"] <= first["median_total_s"] <= first["max_total_s"]
    assert "first call, 2 fresh processes" in out
    assert {r["dtype"] for r in report["results"]} == {"float32", "float64"}
    assert all(r["median_s"] > 0 and r["ns_per_element"] > 0 and r["gb_per_s"] > 0 for r in report["results"])
    peers = {q["peer"] for q in report["ratios"] if q["backend"] == "numpy" and q["xdrop"] == "xdrop"}
    assert {"cs231n", "numpy-generator", "multiply", "copy"} <= peers
    mem = report["memory"][0]["memory"]
    assert mem["xdrop"]["peak_extra_bytes"] >= 4 * (1 << 10)  # at least the output itself
    assert mem["cs231n"]["ratio_to_output"] > mem["xdrop"]["ratio_to_output"]  # float64 mask + rand
    if importlib.util.find_spec("torch") is not None:
        saved = [s for s in report["saved"] if s["backend"] == "torch"]
        assert saved and all(s["saved_for_backward_bytes"]["xdrop"] == 0 for s in saved)
        assert all(s["saved_for_backward_bytes"]["torch"] >= s["size"] for s in saved)
        assert ("torch", "torch", "backward") in names
        for case in ["xdrop", "torch", "xdrop-layer", "torch-layer"]:
            assert ("torch", case, "forward") in names and ("torch", case, "forward+backward") in names
            assert ("torch", case, "sum+backward") in names
        layer_peers = {q["peer"] for q in report["ratios"] if q["xdrop"] == "xdrop-layer"}
        assert "torch-layer" in layer_peers
        mlp = report["mlp"]
        assert mlp["epochs"] == 1 and mlp["xdrop_s"] > 0 and mlp["torch_s"] > 0 and "synthetic" in mlp["data"]
        assert mlp["ratio"] == pytest.approx(mlp["xdrop_s"] / mlp["torch_s"])
        assert report["meta"]["torch_cpu_threads"] == 1 and "MLP 64-256-256-10" in out
        model = report["converted_model"]
        assert model["steps"] == 2 and model["xdrop_s"] > 0 and model["torch_s"] > 0
        assert model["ratio"] == pytest.approx(model["xdrop_s"] / model["torch_s"])
        assert "converted model: nn.TransformerEncoder" in out
    if importlib.util.find_spec("cupy") is None:
        assert report["skipped"]["cupy"].startswith("not installed")
    if importlib.util.find_spec("matplotlib") is None:
        assert "matplotlib is not installed" in out and not plot.exists()
    else:
        assert plot.stat().st_size > 0


def test_bench_rejects_a_bad_dtype(capsys):
    assert main(["bench", "--quick", "--sizes", "8", "--backend", "numpy", "--dtype", "int8"]) == 2
    assert "--dtype" in capsys.readouterr().err


@pytest.mark.parametrize("sizes", ["abc", "10,x", "", "10,99", "-1"])
def test_bench_rejects_bad_sizes_with_a_usage_error(capsys, sizes):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--sizes", sizes])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--sizes" in err and repr(sizes) in err


def test_bench_with_every_backend_skipped_still_succeeds(tmp_path, capsys):
    """A GPU backend on a host without one: skipped with the reason, exit 0, no plot, JSON written."""
    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("cupy is installed here: the cupy backend would run")
    path, plot = tmp_path / "b.json", tmp_path / "b.png"
    assert main(["bench", "--quick", "--backend", "cupy", "--json", str(path), "--plot", str(plot)]) == 0
    report = json.loads(path.read_text())
    assert report["results"] == [] and "cupy" in report["skipped"]
    assert "no plot written" in capsys.readouterr().out and not plot.exists()
