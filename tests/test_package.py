import inspect
import subprocess
import sys

import xdrop


def test_import_loads_no_framework():
    code = (
        "import sys, xdrop, xdrop.random, xdrop.cs231n;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'cupy', 'jax', 'jaxlib', 'dask'});"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_import_leaves_slow_standard_modules_to_the_calls_that_need_them():
    """A fresh ``import xdrop`` stays cheap (the first-call row of ``bench`` times it): each of these
    costs milliseconds to import and only some calls need it (pathlib ~8 ms, concurrent.futures with
    logging ~8 ms: large calls' threads; fractions with decimal ~4 ms: a scale not cached yet; secrets
    ~5 ms: seed=None)."""
    slow = ["pathlib", "concurrent.futures", "logging", "fractions", "decimal", "secrets"]
    # (An editable install's import hook may have imported some at start-up: those do not count.)
    code = (
        "import sys; before = set(sys.modules); import xdrop;"
        f"print(','.join(m for m in {slow!r} if m in sys.modules and m not in before))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_all_lists_exactly_the_public_names():
    public = {n for n in vars(xdrop) if not n.startswith("_") and not inspect.ismodule(getattr(xdrop, n))}
    public |= {"random", "__version__"}
    assert set(xdrop.__all__) == public


def test_every_public_callable_has_a_numpydoc_docstring():
    for name in xdrop.__all__:
        obj = getattr(xdrop, name)
        if callable(obj):
            doc = inspect.getdoc(obj) or ""
            assert "Examples" in doc or (inspect.isclass(obj) and doc), name


def test_array_api_compat_is_imported_in_one_place():
    from pathlib import Path

    root = Path(xdrop.__file__).parent
    users = sorted(
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if "array_api_compat" in p.read_text() and p.name != "_compat.py"
    )
    assert users == []


def test_adoption_files_are_in_the_repository_and_declared_for_the_wheel():
    """LICENSE (the MIT text pyproject's licence names), listed in license-files so wheels carry it,
    and a CITATION.cff giving the package's current version."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    licence = (root / "LICENSE").read_text()
    assert licence.startswith("MIT License") and "xdrop developers" in licence
    pyproject = (root / "pyproject.toml").read_text()
    assert 'license = "MIT"' in pyproject and 'license-files = ["LICENSE"]' in pyproject
    citation = (root / "CITATION.cff").read_text().splitlines()
    assert "cff-version: 1.2.0" in citation
    assert f'version: "{xdrop.__version__}"' in citation
    assert (root / "CONTRIBUTING.md").is_file()
