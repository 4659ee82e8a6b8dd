"""The verification matrix: one test session per backend, plus lint.

``nox`` runs the default set; ``nox -l`` lists every session.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import nox

nox.options.default_venv_backend = "venv"
nox.options.error_on_missing_interpreters = True
nox.options.sessions = ["tests", "tests_gpu", "lint"]

CONSTRAINTS = ("-c", "tests/constraints.txt")
# Each backend's session installs its library beside the test extra.
BACKENDS = {
    "numpy": [],
    "array_api_strict": [],
    "torch": ["torch"],
    "jax": ["jax"],
    "dask": ["dask[array]", "distributed"],
}
GPU_BACKENDS = {"cupy": ["cupy-cuda12x"], "torch-cuda": ["torch"]}


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
    env = {"XDROP_BACKENDS": backend}
    args = session.posargs or ["-q"]
    session.run("pytest", *args, env=env)


@nox.session
@nox.parametrize("backend", list(BACKENDS))
def tests(session: nox.Session, backend: str) -> None:
    """The property suite on one CPU backend."""
    session.install(*CONSTRAINTS, "-e", ".[test]", *BACKENDS[backend])
    run_suite(session, backend)
    if backend == "numpy":
        session.run("pytest", "-q", "--doctest-modules", "xdrop", "-p", "no:cacheprovider")
    session.run("python", "-m", "xdrop", "verify", "--backend", backend)


@nox.session
@nox.parametrize("backend", list(GPU_BACKENDS))
def tests_gpu(session: nox.Session, backend: str) -> None:
    """The property suite on a CUDA device; skips on a host without one."""
    present, why = cuda_device_present()
    if not present:
        session.skip(f"{backend}: {why}")
    session.install(*CONSTRAINTS, "-e", ".[test]", *GPU_BACKENDS[backend])
    run_suite(session, backend)
    session.run("python", "-m", "xdrop", "verify", "--backend", backend)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint and format check) and strict mypy on the package."""
    session.install("ruff", "mypy", "numpy")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy", "xdrop")


if os.environ.get("CI"):
    nox.options.reuse_existing_virtualenvs = False
