"""``python -m xdrop bench``: xdrop against native dropouts, in one process.

For each backend, size and dtype: the median time of a forward, a backward
and (torch) a forward+backward call of xdrop, functional and layer (with a dense
gradient and through ``.sum().backward()``, whose gradient is expanded), and of its
peers (torch.nn.functional.dropout and nn.Dropout, the NumPy one-liner, the
CS231n NumPy code, a NumPy-Generator dropout, CuPy's own random), the
bandwidth bound (a same-size multiply and copy), ratios of xdrop to each peer,
the peak extra memory of a forward call and the bytes torch autograd saves for
backward; and the epoch time of a small MLP with xdrop.torch.Dropout against
nn.Dropout. torch on the CPU runs with one thread. The protocol is in
``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import sys
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np

from ._cli.bench import _attention as _bench_attention
from ._cli.bench import _attention_jax as _bench_attention_jax
from ._cli.bench import _first_call as _bench_first_call
from ._cli.bench._cases import SEED, P, _cupy_cases, _numpy_cases, _torch_cases, _torch_fwd_bwd_cases
from ._cli.bench._memory import _peak_extra_cuda, _peak_extra_numpy, _saved_bytes
from ._cli.bench._mlp import converted_model_steps, mlp_epochs
from ._cli.bench._report import PEERS, _plot, _ratios, format_table
from ._cli.bench._timing import MAX_CALLS, MAX_REPEATS, MIN_REPEATS, SAMPLE_S, Row, _timer
from ._functional import _dropout
from ._kernels.host import _buffers as _host
from ._kernels.host import _native
from ._testing import _backends

__all__ = ["BACKENDS", "PEERS", "Row", "add_arguments", "format_table", "log2_sizes", "main", "mlp_epochs"]

BACKENDS = ("numpy", "torch", "torch-cuda", "cupy")  # the registry's backends this file has cases for
GPU_BACKENDS = ("torch-cuda", "cupy")
# log2 sizes: per-call cost (2^6) to bandwidth (2^26) on the CPU, 2^18..2^28 on a GPU.
CPU_SIZES, GPU_SIZES, QUICK_SIZES = "6,10,14,18,22,26", "18,20,22,24,26,28", "6,16"
MAX_LOG2 = 34
TORCH_CPU_THREADS = 1
# The bandwidth bound and the xdrop rows used for ratios (not ratioed themselves).
BOUNDS = ("multiply", "multiply-into", "copy")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", action="append", choices=BACKENDS, help="backend to measure (repeatable)")
    parser.add_argument(
        "--sizes",
        type=log2_sizes,
        help=f"comma-separated log2 sizes (default {CPU_SIZES} on the CPU, {GPU_SIZES} on a GPU; "
        f"--quick: {QUICK_SIZES})",
    )
    parser.add_argument("--dtype", action="append", help="dtype (repeatable; default float32)")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG plot (needs matplotlib)")
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats (a smoke run)")
    parser.add_argument(
        "--mlp-epochs",
        type=int,
        default=None,
        metavar="N",
        help="timed epochs of the MLP comparison, with torch (default 5; --quick 2; 0 skips it)",
    )
    parser.add_argument(
        "--model-steps",
        type=int,
        default=None,
        metavar="N",
        help="timed training steps of a converted nn.TransformerEncoder against the native one, with torch "
        "(default 20; --quick 3; 0 skips it)",
    )
    _bench_attention.add_arguments(parser)  # hook: the attention rows (xdrop/_cli/bench/_attention.py)
    _bench_first_call.add_arguments(parser)  # hook: the first-call row (xdrop/_cli/bench/_first_call.py)
    _bench_attention_jax.add_arguments(parser)  # hook: the JAX attention rows (xdrop/_cli/bench/_attention_jax.py)


def log2_sizes(text: str) -> list[int]:
    """``--sizes``: comma-separated integer log2 sizes in [0, MAX_LOG2]."""
    try:
        sizes = [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers (log2 sizes), got {text!r}") from None
    bad = [s for s in sizes if not 0 <= s <= MAX_LOG2]
    if bad:
        raise argparse.ArgumentTypeError(f"log2 sizes must lie in [0, {MAX_LOG2}], got {text!r}")
    return sizes


# -- the run --------------------------------------------------------------------------------------


def _load(backend: str) -> tuple[Any, Any, Callable[[], None]] | str:
    """(library, device, sync) for a backend, or why it is unavailable (the registry's loader decides)."""
    try:
        loaded = _backends.load(backend)
    except Exception as exc:  # an installed library that fails to load, e.g. CuPy without a driver
        return f"unavailable ({type(exc).__name__}: {exc})"
    if isinstance(loaded, str):
        return loaded
    return importlib.import_module(_backends.REGISTRY[backend].modules[0]), loaded.device, loaded.sync


def _measure(
    backend: str, lib: Any, device: Any, sync: Callable[[], None], n: int, dtype: str, quick: bool
) -> dict[str, Any]:
    x_np = np.random.default_rng(1).standard_normal(n, dtype=np.float32).astype(dtype)
    rows: list[Row] = []
    memory: dict[str, Any] = {}
    saved: dict[str, int] = {}
    if backend == "numpy":
        x: Any = x_np
        cases = _numpy_cases(x)
        try:
            import torch

            xt = torch.from_numpy(x_np.copy())
            cases["torch-cpu"] = (lambda: torch.nn.functional.dropout(xt, P, training=True), None)
        except ImportError:
            pass
        for name in ("xdrop", "xdrop[numpy]", "numpy-oneliner", "cs231n", "numpy-generator"):
            if name in cases:
                memory[name] = _peak_extra_numpy(cases[name][0])
    elif backend in ("torch", "torch-cuda"):
        x = lib.from_numpy(x_np).to(device)
        cases = _torch_cases(x, lib)
        from . import torch as xtorch

        layer, native_layer = xtorch.Dropout(P, seed=SEED).to(device), lib.nn.Dropout(P)
        cases["xdrop-layer"] = (lambda: layer(x), None)
        cases["torch-layer"] = (lambda: native_layer(x), None)
        for direction, fwd_bwd_cases in _torch_fwd_bwd_cases(x, lib).items():
            for name, fwd_bwd in fwd_bwd_cases.items():
                median, reps, calls = _timer(fwd_bwd, sync, quick)
                rows.append(Row(backend, n, dtype, direction, name, median, reps, calls))
        xg = x.detach().clone().requires_grad_(True)
        saved["xdrop"] = _saved_bytes(lambda: _dropout.dropout(xg, P, seed=SEED), lib)
        saved["torch"] = _saved_bytes(lambda: lib.nn.functional.dropout(xg, P, training=True), lib)
        if backend == "torch-cuda":
            for name in ("xdrop", "torch"):
                memory[name] = _peak_extra_cuda(cases[name][0], lib)
    else:
        x = lib.asarray(x_np)
        cases = _cupy_cases(x, lib)
    for name, (fwd, bwd) in cases.items():
        for direction, fn in (("forward", fwd), ("backward", bwd)):
            if fn is not None:
                median, reps, calls = _timer(fn, sync, quick)
                rows.append(Row(backend, n, dtype, direction, name, median, reps, calls))
    out_bytes = n * np.dtype(dtype).itemsize
    return {
        "rows": rows,
        "memory": {k: {"peak_extra_bytes": v, "ratio_to_output": v / out_bytes} for k, v in memory.items()},
        "saved_for_backward_bytes": saved,
    }


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else ``platform.processor()``), for the report."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _native_kernel() -> dict[str, Any]:
    """Which compiled-kernel variant ran (``XDROP_KERNEL_VARIANT`` chooses another).

    ``import_s`` is a second ``_load()`` in this process: the extension is imported
    already, so it is the lookup's cost, not a fresh import's (nothing is compiled).
    """
    _native.library()  # the import the timed calls made
    _, fresh = _native._load()
    return {"variant": fresh.variant, "variants": list(fresh.variants), "import_s": fresh.seconds, "error": fresh.error}


def main(args: argparse.Namespace) -> int:
    backends = args.backend or ["numpy", "torch"]
    dtypes = args.dtype or ["float32"]
    for d in dtypes:
        if d not in ("float16", "float32", "float64"):
            print(f"--dtype must be float16, float32 or float64, got {d!r}", file=sys.stderr)
            return 2
    report: dict[str, Any] = {"results": [], "ratios": [], "memory": [], "saved": [], "skipped": {}, "devices": {}}
    rows: list[Row] = []
    default_threads: int | None = None  # torch's own thread count, which the attention rows run with
    for backend in backends:
        loaded = _load(backend)
        if isinstance(loaded, str):
            report["skipped"][backend] = loaded
            print(f"skipping {backend}: {loaded}", file=sys.stderr)
            continue
        lib, device, sync = loaded
        if backend in ("numpy", "torch") and "torch" in sys.modules:
            if default_threads is None:
                default_threads = sys.modules["torch"].get_num_threads()
            sys.modules["torch"].set_num_threads(TORCH_CPU_THREADS)  # per-call rows: one thread (see meta)
        default = QUICK_SIZES if args.quick else GPU_SIZES if backend in GPU_BACKENDS else CPU_SIZES
        sizes = args.sizes or [int(s) for s in default.split(",")]
        if backend == "torch-cuda":
            report.setdefault("devices", {})[backend] = lib.cuda.get_device_name(device)
        elif backend == "cupy":
            report.setdefault("devices", {})[backend] = lib.cuda.runtime.getDeviceProperties(0)["name"].decode()
        for dtype in dtypes:
            for s in sizes:
                m = _measure(backend, lib, device, sync, 1 << s, dtype, args.quick)
                rows += m["rows"]
                if m["memory"]:
                    report["memory"].append({"backend": backend, "size": 1 << s, "dtype": dtype, "memory": m["memory"]})
                if m["saved_for_backward_bytes"]:
                    report["saved"].append(
                        {
                            "backend": backend,
                            "size": 1 << s,
                            "dtype": dtype,
                            "saved_for_backward_bytes": m["saved_for_backward_bytes"],
                        }
                    )
    report["results"] = [
        {**asdict(r), "ns_per_element": r.ns_per_element, "gb_per_s": r.gb_per_s(np.dtype(r.dtype).itemsize)}
        for r in rows
    ]
    report["ratios"] = _ratios(rows)
    epochs = args.mlp_epochs if args.mlp_epochs is not None else 2 if args.quick else 5
    if "torch" in backends and "torch" not in report["skipped"] and epochs > 0:
        sys.modules["torch"].set_num_threads(TORCH_CPU_THREADS)
        report["mlp"] = mlp_epochs(sys.modules["torch"], epochs)
    steps = args.model_steps if args.model_steps is not None else 3 if args.quick else 20
    if "torch" in backends and "torch" not in report["skipped"] and steps > 0:
        sys.modules["torch"].set_num_threads(TORCH_CPU_THREADS)
        report["converted_model"] = converted_model_steps(sys.modules["torch"], steps)
    attention_backend = "torch-cuda" if args.attention_device == "cuda" else "torch"
    if attention_backend in backends and attention_backend not in report["skipped"] and args.attention_lengths != []:
        if default_threads is not None:  # attention as it trains: on torch's default threads, both sides
            sys.modules["torch"].set_num_threads(default_threads)
        report["attention"] = _bench_attention.run(args, sys.modules["torch"])  # hook: the attention rows
    _bench_attention_jax.add_to(report, args)  # hook: the JAX attention rows (xdrop/_cli/bench/_attention_jax.py)
    runs = args.first_call_runs
    runs = runs if runs is not None else _bench_first_call.QUICK_RUNS if args.quick else _bench_first_call.DEFAULT_RUNS
    if "numpy" in backends and runs > 0:
        report["first_call"] = _bench_first_call.run(runs)
    report["meta"] = {
        "p": P,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host_engine": _host.default_engine(),
        "native": _native_kernel(),
        "timing": (
            f"median wall time per call of {MIN_REPEATS}..{MAX_REPEATS} samples after one warm-up call; "
            f"a sample runs enough back-to-back calls to last {SAMPLE_S * 1e3:g} ms (at most {MAX_CALLS}), "
            "then synchronizes a device"
        ),
        "torch_cpu_threads": TORCH_CPU_THREADS,
    }
    if "torch" in sys.modules:
        report["meta"]["torch"] = sys.modules["torch"].__version__
    print(format_table(report))
    if "first_call" in report:
        print(_bench_first_call.format_line(report["first_call"]))
    if "attention" in report:
        print(_bench_attention.format_table(report["attention"]))
    if "attention_jax" in report:
        print(_bench_attention_jax.format_table(report["attention_jax"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
        print(f"JSON written to {args.json}")
    if args.plot:
        print(_plot(report, args.plot))
    return 0
