"""``python -m xdrop verify``: it passes on what is installed, and it fails when a property breaks.

The breakages are test-only hooks (monkeypatching inside this process), never
edits of the library: a fast path that is off by one step, a scale that is not
1/keep (CS231n's "what if we do not divide by p?"), a biased threshold, and a
backward that regenerates the wrong mask.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import Backend

import xdrop._functional._call
import xdrop._functional._dropout
import xdrop._kernels
import xdrop._lib._compat
from xdrop import verify
from xdrop.__main__ import main
from xdrop._testing._backends import Entry


def run_cli(tmp_path: Path, *backends: str, wide: bool = False) -> tuple[int, dict, str]:
    path = tmp_path / "verify.json"
    args = ["verify", "--json", str(path), *(["--wide"] if wide else [])]
    for b in backends:
        args += ["--backend", b]
    status = main(args)
    return status, json.loads(path.read_text()), path.read_text()


def verdicts(report: dict, backend: str = "numpy") -> dict[str, bool]:
    return {prop: cell["passed"] for prop, cell in report["backends"][backend]["cells"].items()}


# -- it passes, and says what it measured --------------------------------------------------------


def test_passes_on_numpy_and_writes_the_table(tmp_path, capsys):
    status, report, _ = run_cli(tmp_path, "numpy", wide=True)
    out = capsys.readouterr().out
    assert status == 0
    assert "all properties hold" in out
    assert report["passed"] is True and report["stream_version"] == 1
    row = report["backends"]["numpy"]
    assert row["status"] == "pass" and row["dtypes"] == ["float16", "float32", "float64"]
    eq, ex, gr = (row["cells"][p]["detail"] for p in ("equivalence", "expectation", "gradient"))
    assert eq["differing_bits"] == 0 and eq["total_bits"] > 0 and eq["golden_failures"] == eq["kat_failures"] == 0
    assert ex["max_abs_z"] < verify.Z_LIMIT and ex["identity_error_units"] <= 1
    assert gr["differing_bits"] == 0 and gr["max_error_units"] <= verify.GRADIENT_UNITS
    assert {"xdrop", "numpy", "array-api-compat", "python"} <= set(report["versions"])
    assert report["host"]["name"] and report["date"]
    for prop in verify.PROPERTIES:  # the wide table shows the figures the JSON holds
        assert "PASS " + row["cells"][prop]["figure"] in out


def test_missing_backend_is_skipped_not_failed(tmp_path, monkeypatch, capsys):
    def absent() -> verify.Backend:
        raise ImportError("No module named 'nolib'", name="nolib")

    entry = Entry("nolib", "nolib", "is_numpy_namespace", ("nolib",), ("nolib",), False, absent)
    monkeypatch.setitem(verify.REGISTRY, "nolib", entry)
    status, report, _ = run_cli(tmp_path, "numpy", "nolib")
    assert status == 1  # named with --backend but cannot run: reported as skipped, yet not a pass
    assert report["backends"]["nolib"] == {
        "status": "skipped",
        "reason": "not installed (nolib)",
        "device": None,
        "dtypes": [],
        "cells": {},
    }
    assert "nolib not run: not installed (nolib)" in capsys.readouterr().out


def test_unknown_backend_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["verify", "--backend", "tensorflow"])
    assert exc.value.code == 2
    assert "unknown backend tensorflow; choose from numpy" in capsys.readouterr().err


def test_a_crashing_check_is_a_failed_cell(tmp_path, monkeypatch):
    def crash(b: verify.Backend) -> verify.Cell:
        raise RuntimeError("kernel launch failed")

    monkeypatch.setitem(verify.CHECKS, "expectation", crash)
    status, report, _ = run_cli(tmp_path, "numpy")
    assert status == 1
    cell = report["backends"]["numpy"]["cells"]["expectation"]
    assert not cell["passed"] and cell["figure"] == "error: RuntimeError: kernel launch failed"


def test_module_entry_point_exits_zero():
    done = subprocess.run(
        [sys.executable, "-m", "xdrop", "verify", "--backend", "numpy"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "numpy" in done.stdout and "PASS" in done.stdout and "FAIL" not in done.stdout


# -- it fails when a property is broken on purpose -------------------------------------------------


@pytest.mark.parametrize("route", ["selection and short path", "short path only"])
def test_fails_when_a_fast_path_is_off_by_one_step(route, tmp_path, monkeypatch, capsys):
    """Property 1: a non-reference kernel that draws from step + 1, reached by kernel selection and by
    ``dropout``'s NumPy short path (which skips selection), or by the short path alone."""
    select, reference = xdrop._kernels.select, xdrop._kernels.reference

    def broken(x, xp, seed, step, k, scale):
        return reference(x, xp, seed, step + 1, k, scale)

    def broken_select(xp, x, impl):
        return select(xp, x, impl) if impl == "reference" else broken

    if route != "short path only":
        monkeypatch.setattr(xdrop._kernels, "select", broken_select)
    monkeypatch.setattr(xdrop._kernels, "auto_kernel", lambda: broken)
    status, report, _ = run_cli(tmp_path, "numpy")
    assert status == 1
    assert verdicts(report)["equivalence"] is False
    assert report["backends"]["numpy"]["cells"]["equivalence"]["detail"]["differing_bits"] > 0
    out = capsys.readouterr().out
    assert "FAIL " in out and "FAILED: a property does not hold" in out


def test_fails_when_kept_values_are_not_divided_by_keep(tmp_path, monkeypatch):
    """Property 2, CS231n's question: a scale of 1 shrinks E[out] to keep * x."""
    monkeypatch.setattr(xdrop._functional._call, "scale_for", lambda k, xp, dtype: 1.0)
    status, report, _ = run_cli(tmp_path, "numpy")
    assert status == 1
    assert verdicts(report)["expectation"] is False
    assert verdicts(report)["equivalence"] is True  # the same (wrong) bits everywhere: only E[out] shows it
    assert report["backends"]["numpy"]["cells"]["expectation"]["detail"]["identity_error_units"] > 1e3


def test_fails_when_the_threshold_keeps_too_few(tmp_path, monkeypatch):
    """Property 2: a threshold that keeps half as often as p says, scaled to match it."""
    honest = xdrop._functional._call.keep_count
    monkeypatch.setattr(xdrop._functional._call, "keep_count", lambda p: honest(p) // 2)
    status, report, _ = run_cli(tmp_path, "numpy")
    assert status == 1
    detail = report["backends"]["numpy"]["cells"]["expectation"]["detail"]
    assert verdicts(report)["expectation"] is False and detail["max_abs_z"] > verify.Z_LIMIT


def test_fails_when_backward_regenerates_the_wrong_mask(tmp_path, monkeypatch):
    """Property 3: a backward that uses the next step's mask; forward stays correct."""
    honest = xdrop._functional._dropout.dropout_backward

    def broken_backward(dout, cache, **kwargs):
        return honest(dout, dataclasses.replace(cache, step=cache.step + 1), **kwargs)

    monkeypatch.setattr(xdrop._functional._dropout, "dropout_backward", broken_backward)
    status, report, _ = run_cli(tmp_path, "numpy")
    assert status == 1
    assert verdicts(report) == {
        "equivalence": True,
        "expectation": True,
        "gradient": False,
        "sharding": True,
        "attention": True,
    }
    assert report["backends"]["numpy"]["cells"]["gradient"]["detail"]["differing_bits"] > 0


# -- the pieces verify relies on -------------------------------------------------------------------


def test_backend_enum_is_the_registry():
    assert [b.value for b in Backend] == list(verify.REGISTRY)
    assert Backend.TORCH_CUDA.value == "torch-cuda" and Backend.ARRAY_API_STRICT.value == "array_api_strict"


def test_registry_entries_are_complete_and_name_their_namespace():
    import array_api_compat

    for name, entry in verify.REGISTRY.items():
        assert entry.name == name and entry.modules
        assert callable(getattr(array_api_compat, entry.namespace_check))
        assert entry.gpu or name in ("numpy", "array_api_strict") or entry.packages, name
    loaded = verify.load("numpy")
    assert not isinstance(loaded, str) and xdrop._lib._compat.namespace_name(loaded.xp) == "numpy"
    with pytest.raises(KeyError):
        verify.load("tensorflow")


def test_the_noxfile_sessions_come_from_the_registry(monkeypatch):
    """Loaded by path, as nox does: every registry entry in one environment's sessions, GPU ones apart."""
    import importlib.util

    pytest.importorskip("nox", reason="nox is not installed")
    spec = importlib.util.spec_from_file_location("noxfile_under_test", Path(__file__).parent.parent / "noxfile.py")
    noxfile = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, noxfile)  # as nox does: its dataclass needs its module
    spec.loader.exec_module(noxfile)
    cpu = [n for n, e in verify.REGISTRY.items() if not e.gpu]
    gpu = [n for n, e in verify.REGISTRY.items() if e.gpu]
    assert cpu == noxfile.CPU_BACKENDS and gpu == noxfile.GPU_BACKENDS
    for name in cpu:
        env = noxfile.ENV_OF[name]
        assert set(verify.REGISTRY[name].packages) <= set(env.requirements), name


def test_torch_backend_fixture_selects_torch_namespaces_only():
    """Torch-only tests take ``torch_backend``: a new backend never inherits them."""
    import conftest

    assert conftest.torch_only(list(Backend)) == [Backend.TORCH, Backend.TORCH_CUDA]
    assert conftest.torch_only([Backend.NUMPY, Backend.JAX, Backend.DASK, Backend.CUPY]) == []


def test_golden_copies_match_the_golden_file():
    golden = json.loads((Path(__file__).parent / "data" / "golden_v1.json").read_text())
    cases = {(c["seed"], c["step"], tuple(c["shape"]), c["p"], c["keep"]) for c in golden["cases"]}
    assert set(verify.GOLDEN_V1) <= cases


def test_round_to_bfloat16_matches_torch():
    torch = pytest.importorskip("torch", reason="torch is the reference for bfloat16 rounding")
    rng = np.random.default_rng(5)
    values = rng.standard_normal(10_000).astype(np.float32) * np.float32(2.0) ** rng.integers(-60, 60, 10_000)
    bits = values.view(np.uint32)
    ties = (bits & np.uint32(0xFFFF0000)) | np.uint32(0x8000)  # exactly halfway: half-even decides
    for a in (values, ties.view(np.float32), np.array([0.0, -0.0, 1.0, 3.0e38, -np.inf], dtype=np.float32)):
        want = torch.from_numpy(a).to(torch.bfloat16).float().numpy()
        assert verify.round_to_bfloat16(a).view(np.uint32).tolist() == want.view(np.uint32).tolist()
    assert verify.round_to_bfloat16(np.float32(1.5)).shape == ()
