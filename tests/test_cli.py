"""The command line: named backends must run, --json fails before the run and writes atomically, --sizes is checked."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest

from xdrop import __main__ as cli
from xdrop import bench, verify


@pytest.fixture
def no_run(monkeypatch):
    """Make the verify run and the benchmark fail the test if they start: errors must come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("the run started before the argument error")

    monkeypatch.setattr(verify, "run", refuse)
    monkeypatch.setattr(bench, "main", refuse)


def usage_error(argv, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    return capsys.readouterr().err


def passing_row(name):
    return verify.BackendResult(name, cells={p: verify.Cell(True, "ok") for p in verify.PROPERTIES}, device="cpu")


@pytest.fixture
def fast_verify(monkeypatch):
    """A verify run of one canned passing row, so the tests exercise the CLI, not the properties."""
    monkeypatch.setattr(verify, "run", lambda names=None: {"numpy": passing_row("numpy")})


# -- --backend ----------------------------------------------------------------------------------------------


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed: the backend can run")
def test_named_backend_that_cannot_run_fails(capsys):
    assert cli.main(["verify", "--backend", "cupy"]) == 1
    err = capsys.readouterr().err
    assert "backend cupy was named with --backend but cannot run" in err


def test_a_named_backend_that_cannot_run_gets_one_verdict(monkeypatch, capsys):
    """The summary line does not say every property holds when the run is failed for a backend it skipped."""
    rows = {"cupy": verify.BackendResult("cupy", skipped="not installed (cupy)")}
    monkeypatch.setattr(verify, "run", lambda names=None: rows)
    assert cli.main(["verify", "--backend", "cupy"]) == 1
    out = capsys.readouterr().out
    assert "all properties hold" not in out
    assert "FAILED: not verified: cupy named with --backend but cannot run" in out


def test_unnamed_skipped_backends_are_not_a_failure(monkeypatch, capsys):
    rows = {"numpy": passing_row("numpy"), "cupy": verify.BackendResult("cupy", skipped="CuPy is not installed")}
    monkeypatch.setattr(verify, "run", lambda names=None: rows)
    assert cli.main(["verify"]) == 0
    out, err = capsys.readouterr()
    assert "all properties hold on every available backend" in out
    assert "cannot run" not in err


def test_unknown_backend_is_a_usage_error(no_run, capsys):
    assert "unknown backend nope" in usage_error(["verify", "--backend", "nope"], capsys)


# -- --json ------------------------------------------------------------------------------------------------


def test_json_to_an_empty_path_fails_before_the_run(no_run, capsys):
    assert "--json: the path is empty" in usage_error(["verify", "--json", ""], capsys)


def test_json_to_a_directory_fails_before_the_run(no_run, capsys, tmp_path):
    assert "is a directory" in usage_error(["verify", "--json", str(tmp_path)], capsys)


def test_json_to_an_unwritable_place_fails_before_the_run(no_run, capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    err = usage_error(["verify", "--json", str(blocker / "out.json")], capsys)
    assert "cannot write there" in err
    assert blocker.read_text() == "x"


def test_json_is_written_whole_and_leaves_no_temporary(fast_verify, tmp_path, capsys):
    out = tmp_path / "sub" / "matrix.json"
    assert cli.main(["verify", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["backends"]["numpy"]["status"] == "pass"
    assert [p.name for p in out.parent.iterdir()] == ["matrix.json"]


def test_json_replaces_a_symlink_instead_of_writing_through_it(fast_verify, tmp_path, capsys):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    out = tmp_path / "matrix.json"
    out.symlink_to(victim)
    (tmp_path / "matrix.json.tmp").symlink_to(victim)  # the old fixed temporary name, planted
    assert cli.main(["verify", "--json", str(out)]) == 0
    assert victim.read_text() == "precious"
    assert not out.is_symlink() and json.loads(out.read_text())["passed"] is True


def test_write_json_leaves_nothing_behind_when_the_rename_fails(tmp_path):
    target = tmp_path / "is-a-dir"
    (target / "inside").mkdir(parents=True)  # os.replace of a file over a non-empty directory fails
    with pytest.raises(OSError):
        verify.write_json({"numpy": passing_row("numpy")}, target)
    assert sorted(os.listdir(tmp_path)) == ["is-a-dir"]


# -- bench --sizes -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sizes", ["abc", "16,x", "", "16,,20", "-1", "99"])
def test_bench_sizes_are_checked(no_run, capsys, sizes):
    assert "--sizes" in usage_error(["bench", "--sizes", sizes], capsys)


def test_bench_sizes_parse():
    from xdrop import bench

    assert bench.log2_sizes("16,20") == [16, 20]


# -- the report fits a terminal ------------------------------------------------------------------------------


def _mixed_rows():
    """A passing row, a failing one with a long figure and a long device, and a skipped one with a long reason."""
    failing = verify.BackendResult(
        "array_api_strict",
        cells={p: verify.Cell(True, "ok") for p in verify.PROPERTIES},
        device="array_api_strict.Device('CPU_DEVICE') with a long description",
    )
    failing.cells["gradient"] = verify.Cell(False, "bwd vs dropout(dout) 12 bits; err 3.00 u; fd 1e-03; " * 4)
    skipped = verify.BackendResult("torch-cuda", skipped="no CUDA device on this host (nvidia-smi not found) " * 3)
    return {"numpy": passing_row("numpy"), "array_api_strict": failing, "torch-cuda": skipped}


def test_default_report_fits_100_columns_and_names_every_failure(monkeypatch, capsys):
    monkeypatch.setattr(verify, "run", lambda names=None: _mixed_rows())
    assert cli.main(["verify"]) == 1
    out = capsys.readouterr().out
    assert max(map(len, out.splitlines())) <= 100
    assert "array_api_strict gradient FAILED: bwd vs dropout(dout) 12 bits" in out
    assert "torch-cuda not run: no CUDA device" in out
    legend = out.split("What each column checks:")[1]
    for prop in verify.PROPERTIES:
        assert f"\n{prop}:" in legend


def test_wide_report_shows_every_figure_and_explains_its_labels(monkeypatch, capsys):
    monkeypatch.setattr(verify, "run", lambda names=None: _mixed_rows())
    cli.main(["verify", "--wide"])
    out = capsys.readouterr().out
    assert "FAIL bwd vs dropout(dout) 12 bits" in out
    for label in ("KAT", "|z|max", "|s*keep-1|", "units u", '"fd"', '"autograd"', '"golden"', '"mask"'):
        assert label in verify.LEGEND and label in out


def test_host_kernel_line_says_why_its_variant_was_chosen(monkeypatch):
    from xdrop._kernels.host import _native

    info = _native.BuildInfo("x.so", 0.0, None, "avx512", ("avx512", "avx2", "base"))
    monkeypatch.setattr(_native, "build_info", lambda: info)
    monkeypatch.delenv(_native.VARIANT_ENV, raising=False)
    text = verify.describe_host_kernel()
    line = " ".join(text.split())  # unwrapped
    assert "variant avx512" in line and "because it is the fastest variant this CPU runs" in line
    assert max(map(len, text.splitlines())) <= 100
    info = _native.BuildInfo("x.so", 0.0, None, "avx2", ("avx512", "avx2", "base"))
    monkeypatch.setenv(_native.VARIANT_ENV, "avx2")
    assert f"because {_native.VARIANT_ENV}=avx2 asks for it" in " ".join(verify.describe_host_kernel().split())


# -- --version and the program's name ------------------------------------------------------------------------


def test_version_prints_the_package_and_stream_versions(capsys):
    import xdrop

    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip().endswith(f"{xdrop.__version__} (stream v{xdrop.STREAM_VERSION})")


@pytest.mark.parametrize(
    ("argv0", "prog"), [("/venv/bin/xdrop", "xdrop"), ("/src/xdrop/__main__.py", "python -m xdrop")]
)
def test_usage_names_the_program_as_invoked(monkeypatch, capsys, argv0, prog):
    monkeypatch.setattr("sys.argv", [argv0, "--help"])
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert capsys.readouterr().out.startswith(f"usage: {prog} ")


def test_a_reader_that_leaves_early_gets_no_traceback(tmp_path):
    """``xdrop verify | head``: the reader closing the pipe ends the command quietly (status 141, SIGPIPE's)."""
    import subprocess
    import sys

    child = (
        "import sys\n"
        "from xdrop import __main__ as cli, verify\n"
        "row = verify.BackendResult('numpy', cells={p: verify.Cell(True, 'ok') for p in verify.PROPERTIES}, "
        "device='cpu')\n"
        "verify.run = lambda names=None: {'numpy': row}\n"
        "sys.exit(cli.main(['verify']))\n"
    )
    err = tmp_path / "stderr"
    with err.open("w") as stderr:
        proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, stderr=stderr)
        proc.stdout.close()  # the reader is gone before the first write
        status = proc.wait(timeout=120)
    assert "Traceback" not in err.read_text() and "BrokenPipeError" not in err.read_text(), err.read_text()
    assert status == 141
