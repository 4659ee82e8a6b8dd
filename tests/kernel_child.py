"""Run a Triton test file's case table in a child process: the interpreter on the CPU, or CUDA where present.

``TRITON_INTERPRET=1`` must be set before kernels are decorated and would turn
every other Triton user in the process into the interpreter, so the kernels
run in a child (the test file itself, called as ``script OUT_PATH DEVICE``),
which saves its results as one ``.npz``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_child(script: str, mode: str, out_dir: Path, timeout: int = 900) -> dict[str, np.ndarray]:
    """The child's results; ``mode`` "interpreter" (CPU tensors) or "cuda" (skips without a device)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    if mode == "cuda":
        import torch

        if not torch.cuda.is_available():
            pytest.skip("no CUDA device: the compiled kernels are checked on a GPU host only")
        env.pop("TRITON_INTERPRET", None)
        dev = "cuda"
    else:
        env["TRITON_INTERPRET"] = "1"
        dev = "cpu"
    path = str(out_dir / "results.npz")
    done = subprocess.run(
        [sys.executable, script, path, dev], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"the {mode} kernels failed:\n{done.stdout}\n{done.stderr[-5000:]}"
    with np.load(path) as data:
        return {k: data[k] for k in data.files}
