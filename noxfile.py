"""The verification matrix: one test session per backend, plus lint and docs.

``nox`` runs the default set (GPU sessions skip, saying why, on a host without
a CUDA device); ``nox -l`` lists every session. Adding a backend is one entry
in ``BACKENDS`` (or ``GPU_BACKENDS``).
"""

from __future__ import annotations

import os
import shutil
import subprocess

import nox

nox.options.default_venv_backend = "venv"
nox.options.error_on_missing_interpreters = True
nox.options.sessions = ["tests", "tests_gpu", "lint", "docs"]

# Test-environment pins: torch's CPU build from local disk, the lint tools' versions.
CONSTRAINTS = ("-c", "tests/constraints.txt")
# Each CPU backend's session installs its library beside the test extra.
BACKENDS: dict[str, list[str]] = {
    "numpy": [],
    "array_api_strict": [],
    # transformers: replace_dropout on tiny BERT / GPT-2; triton: test_triton.py runs the CUDA kernels in its interpreter
    "torch": ["torch", "transformers", "triton"],
    "jax": ["jax"],
    "dask": ["dask[array]", "distributed"],
}
# GPU backends: (module to import, package to install when the host lacks it).
# GPU hosts usually have a CUDA build installed (and may have no network), so
# their sessions see the system's packages and install only what is missing.
GPU_BACKENDS: dict[str, tuple[str, str]] = {
    "cupy": ("cupy", os.environ.get("XDROP_CUPY_PACKAGE", "cupy-cuda12x")),
    "torch-cuda": ("torch", "torch"),
}


def cuda_device_present() -> tuple[bool, str]:
    """Whether this host has a CUDA device, and why not."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False, "no CUDA device on this host (nvidia-smi not found)"
    listed = subprocess.run([smi, "-L"], capture_output=True, text=True, check=False)
    if listed.returncode != 0 or "GPU" not in listed.stdout:
        return False, "no CUDA device on this host (nvidia-smi lists none)"
    return True, ""


def run_suite(session: nox.Session, backend: str) -> None:
    """The property suite on one backend, then ``python -m xdrop verify`` on it."""
    args = session.posargs or ["-q"]
    session.run("pytest", *args, env={"XDROP_BACKENDS": backend})
    session.run("python", "-m", "xdrop", "verify", "--backend", backend)


@nox.session
@nox.parametrize("backend", list(BACKENDS))
def tests(session: nox.Session, backend: str) -> None:
    """The property suite on one CPU backend."""
    session.install(*CONSTRAINTS, "-e", ".[test]", *BACKENDS[backend])
    run_suite(session, backend)
    if backend == "numpy":
        # xdrop/torch.py imports torch (absent here); tests/test_torch_layers.py runs its doctests
        session.run(
            "pytest",
            "-q",
            "--doctest-modules",
            "xdrop",
            "--ignore=xdrop/torch.py",
            "--ignore=xdrop/distributed.py",
            "-p",
            "no:cacheprovider",
        )


CUDA_PRESENT, NO_CUDA_REASON = cuda_device_present()


# Without a device there is nothing to install: no environment ("none"), so the skip is immediate.
@nox.session(venv_backend="venv" if CUDA_PRESENT else "none", venv_params=["--system-site-packages"])
@nox.parametrize("backend", list(GPU_BACKENDS))
def tests_gpu(session: nox.Session, backend: str) -> None:
    """The property suite on a CUDA device; skips on a host without one."""
    if not CUDA_PRESENT:
        session.skip(f"{backend}: {NO_CUDA_REASON}")
    module, package = GPU_BACKENDS[backend]
    found = session.run(
        "python", "-c", f"import importlib.util; print(importlib.util.find_spec({module!r}) is not None)", silent=True
    )
    if str(found).strip() != "True":
        session.install(package)  # no CPU-build constraint here: this host wants the CUDA build
    session.install("-e", ".[test]")
    run_suite(session, backend)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint and format check) and strict mypy on the package."""
    session.install(*CONSTRAINTS, "-e", ".[torch]", "ruff", "mypy")  # torch: xdrop/torch.py's types
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy", "xdrop")


DOCS_BUILD = "docs/_build"


def ensure_chromium(session: nox.Session) -> None:
    """Debian's chromium for the offline browser check; installed with apt-get when missing."""
    if shutil.which("chromium") or shutil.which("chromium-browser"):
        return
    if os.geteuid() != 0:
        session.error("the docs browser check needs chromium: run `apt-get install -y chromium` as root")
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    session.run("apt-get", "update", "-qq", external=True, env=env)
    session.run("apt-get", "install", "-y", "-qq", "chromium", external=True, env=env)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the site (warnings are errors), run every example, check it offline in headless Chromium."""
    session.install(*CONSTRAINTS, "-e", ".[docs,test,torch,dask]", "distributed")
    shutil.rmtree(DOCS_BUILD, ignore_errors=True)  # a fresh build: an incremental one hides warnings
    shutil.rmtree("docs/generated", ignore_errors=True)
    session.run("python", "docs/_ext/generate.py")
    sphinx = ("sphinx-build", "-W", "--keep-going", "-q", "-d", f"{DOCS_BUILD}/doctrees")
    session.run(*sphinx, "-b", "html", "docs", f"{DOCS_BUILD}/html")
    session.run(*sphinx, "-b", "doctest", "docs", f"{DOCS_BUILD}/doctest")
    session.run("pytest", "-q", "-p", "no:cacheprovider", "tests/test_docs_site.py")
    ensure_chromium(session)
    session.run("python", "docs/check_site.py", f"{DOCS_BUILD}/html")


@nox.session(default=False)
def stream_battery(session: nox.Session) -> None:
    """dieharder on >= 2**30 bits of the mask stream (long; not in the default set).

    Installs dieharder with apt-get when missing and allowed (root), else skips.
    Arguments go to tools/stream_battery.py run, e.g. ``-- --tests 0,2,100``.
    """
    if shutil.which("dieharder") is None:
        apt = shutil.which("apt-get")
        if apt is None or os.geteuid() != 0:
            session.skip("dieharder is not installed and cannot be installed here (needs apt-get as root)")
        session.run(apt, "install", "-y", "-q", "dieharder", external=True, success_codes=[0, 100])
        if shutil.which("dieharder") is None:
            session.skip("dieharder is not installed and apt-get could not install it")
    session.install(*CONSTRAINTS, "-e", ".")
    session.run("python", "tools/stream_battery.py", "run", *session.posargs)
