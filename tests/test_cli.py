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
