"""``python -m xdrop bench``: xdrop against native dropouts, in one process.

For each backend, size and dtype: the median time of a forward, a backward
and (torch) a forward+backward call of xdrop, functional and layer, and of its
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
import importlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from . import _backends, _bench_attention, _dropout
from ._kernels import _host, _native

BACKENDS = ("numpy", "torch", "torch-cuda", "cupy")  # the registry's backends this file has cases for
GPU_BACKENDS = ("torch-cuda", "cupy")
# log2 sizes: per-call cost (2^6) to bandwidth (2^26) on the CPU, 2^18..2^28 on a GPU.
CPU_SIZES, GPU_SIZES, QUICK_SIZES = "6,10,14,18,22,26", "18,20,22,24,26,28", "6,16"
MAX_LOG2 = 34
# Each xdrop row's natural peer, for the table's ratio column.
PEERS = {"xdrop": ("torch", "numpy-oneliner", "cupy-random"), "xdrop-layer": ("torch-layer",)}
TORCH_CPU_THREADS = 1
P = 0.5
SEED = 0x5EED
MIN_REPEATS, MAX_REPEATS, BUDGET_S = 3, 25, 0.6
# A sample runs a case enough times back to back to last SAMPLE_S (timeit's auto-range): one call of
# a 64-element dropout lasts microseconds, close to the timer's own cost and to a cold cache's.
SAMPLE_S, MAX_CALLS = 2e-3, 1 << 14
# The bandwidth bound and the xdrop rows used for ratios (not ratioed themselves).
BOUNDS = ("multiply", "multiply-into", "copy")


@dataclass
class Row:
    backend: str
    size: int
    dtype: str
    direction: str  # forward | backward
    name: str
    median_s: float  # per call
    repeats: int  # samples
    calls: int = 1  # calls per sample

    @property
    def ns_per_element(self) -> float:
        return self.median_s / self.size * 1e9

    def gb_per_s(self, itemsize: int) -> float:
        return 2 * self.size * itemsize / self.median_s / 1e9  # one read and one write per element


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
    _bench_attention.add_arguments(parser)  # hook: the attention rows (xdrop/_bench_attention.py)


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


def _sample(fn: Callable[[], Any], sync: Callable[[], None], calls: int) -> float:
    """Wall time of ``calls`` back-to-back calls of ``fn``, then ``sync`` (a device's queue drained)."""
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    sync()
    return time.perf_counter() - t0


def _timer(fn: Callable[[], Any], sync: Callable[[], None], quick: bool) -> tuple[float, int, int]:
    """(median time per call, samples, calls per sample) of ``fn`` after one warm-up call.

    The calls per sample double until a sample lasts :data:`SAMPLE_S`; ``sync``
    waits for a device at the end of each sample, so queued kernels are counted.
    """
    fn()
    sync()
    calls = 1
    while calls < MAX_CALLS and _sample(fn, sync, calls) < SAMPLE_S:
        calls *= 2
    times: list[float] = []
    budget = 0.1 if quick else BUDGET_S
    start = time.perf_counter()
    while len(times) < (2 if quick else MIN_REPEATS) or (
        len(times) < MAX_REPEATS and time.perf_counter() - start < budget
    ):
        times.append(_sample(fn, sync, calls) / calls)
    return statistics.median(times), len(times), calls


# -- cases per backend: name -> (forward, backward or None) ----------------------------------------


def _numpy_cases(x: np.ndarray) -> dict[str, tuple[Callable[[], Any], Callable[[], Any] | None]]:
    rng = np.random.default_rng(SEED)
    keep = 1 - P
    dout = np.ones_like(x)
    _, cache = _dropout.dropout_forward(x, P, seed=SEED)
    cs_mask = (rng.random(x.shape) < keep) / keep  # CS231n: float64 mask, saved for backward
    g_keep = rng.random(x.size, dtype=np.float32).reshape(x.shape) < keep
    scale = x.dtype.type(1 / keep)
    into = np.empty_like(x)

    def cs231n() -> Any:  # the seed's code, with a Generator instead of the global RNG
        mask = (rng.random(x.shape) < keep) / keep
        return x * mask

    def generator() -> Any:
        k = rng.random(x.size, dtype=np.float32).reshape(x.shape) < keep
        return np.where(k, x * scale, x.dtype.type(0))

    n = x.size
    one_mask = (rng.random(n) < keep).reshape(x.shape)

    def oneliner() -> Any:  # the native NumPy dropout
        return x * (rng.random(n) < keep).reshape(x.shape) / keep

    cases: dict[str, tuple[Callable[[], Any], Callable[[], Any] | None]] = {
        "xdrop": (lambda: _dropout.dropout(x, P, seed=SEED), lambda: _dropout.dropout_backward(dout, cache)),
        "numpy-oneliner": (oneliner, lambda: dout * one_mask / keep),
        "xdrop[numpy]": (
            lambda: _dropout.dropout(x, P, seed=SEED, impl="blocked"),
            lambda: _dropout.dropout_backward(dout, cache, impl="blocked"),
        ),
        "cs231n": (cs231n, lambda: dout * cs_mask),
        "numpy-generator": (generator, lambda: np.where(g_keep, dout * scale, x.dtype.type(0))),
        "multiply": (lambda: x * scale, None),
        "multiply-into": (lambda: np.multiply(x, scale, out=into), None),  # no allocation: the bound itself
        "copy": (lambda: x.copy(), None),
    }
    if _host.default_engine() != "c":
        del cases["xdrop[numpy]"]  # "xdrop" is the NumPy engine already
    return cases


def _torch_cases(x: Any, torch: Any) -> dict[str, tuple[Callable[[], Any], Callable[[], Any] | None]]:
    xg = x.detach().clone().requires_grad_(True)
    dout = torch.ones_like(x)
    y_x = _dropout.dropout(xg, P, seed=SEED)
    y_t = torch.nn.functional.dropout(xg, P, training=True)
    return {
        "xdrop": (
            lambda: _dropout.dropout(x, P, seed=SEED),
            lambda: torch.autograd.grad(y_x, xg, dout, retain_graph=True),
        ),
        "torch": (
            lambda: torch.nn.functional.dropout(x, P, training=True),
            lambda: torch.autograd.grad(y_t, xg, dout, retain_graph=True),
        ),
        "multiply": (lambda: x * 2.0, None),
        "copy": (lambda: x.clone(), None),
    }


def _torch_fwd_bwd_cases(x: Any, torch: Any) -> dict[str, Callable[[], Any]]:
    """Forward + backward through autograd, functional and layer, xdrop and torch."""
    from . import torch as xtorch

    xg = x.detach().clone().requires_grad_(True)
    dout = torch.ones_like(x)
    layers = {"xdrop-layer": xtorch.Dropout(P, seed=SEED).to(x.device), "torch-layer": torch.nn.Dropout(P)}

    def run(f: Callable[[Any], Any]) -> Callable[[], Any]:
        return lambda: torch.autograd.grad(f(xg), xg, dout)

    return {
        "xdrop": run(lambda t: _dropout.dropout(t, P, seed=SEED)),
        "torch": run(lambda t: torch.nn.functional.dropout(t, P, training=True)),
        **{name: run(layer) for name, layer in layers.items()},
    }


def _cupy_cases(x: Any, cupy: Any) -> dict[str, tuple[Callable[[], Any], Callable[[], Any] | None]]:
    dout = cupy.ones_like(x)
    _, cache = _dropout.dropout_forward(x, P, seed=SEED)
    keep = 1 - P
    scale = x.dtype.type(1 / keep)
    saved = cupy.random.random(x.shape, dtype=cupy.float32) < keep

    def native() -> Any:
        k = cupy.random.random(x.shape, dtype=cupy.float32) < keep
        return cupy.where(k, x * scale, x.dtype.type(0))

    return {
        "xdrop": (lambda: _dropout.dropout(x, P, seed=SEED), lambda: _dropout.dropout_backward(dout, cache)),
        "cupy-random": (native, lambda: cupy.where(saved, dout * scale, x.dtype.type(0))),
        "multiply": (lambda: x * scale, None),
        "copy": (lambda: x.copy(), None),
    }


# -- memory ---------------------------------------------------------------------------------------


def _peak_extra_numpy(fn: Callable[[], Any]) -> int:
    """Peak bytes allocated during ``fn()`` (NumPy reports its buffers to tracemalloc)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        out = fn()
        peak = tracemalloc.get_traced_memory()[1] - base
        del out
    finally:
        tracemalloc.stop()
    return peak


def _peak_extra_cuda(fn: Callable[[], Any], torch: Any) -> int:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = fn()
    torch.cuda.synchronize()
    peak = int(torch.cuda.max_memory_allocated() - base)
    del out
    return peak


def _saved_bytes(fn: Callable[[], Any], torch: Any) -> int:
    saved: list[Any] = []

    def pack(t: Any) -> Any:
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(t.numel() * t.element_size() for t in saved)


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
        for name, fwd_bwd in _torch_fwd_bwd_cases(x, lib).items():
            median, reps, calls = _timer(fwd_bwd, sync, quick)
            rows.append(Row(backend, n, dtype, "forward+backward", name, median, reps, calls))
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


def _ratios(rows: list[Row]) -> list[dict[str, Any]]:
    out = []
    keyed = {(r.backend, r.size, r.dtype, r.direction, r.name): r for r in rows}
    for r in rows:
        if not r.name.startswith("xdrop"):
            continue
        for (b, s, d, direction, name), peer in keyed.items():
            if (b, s, d, direction) == (r.backend, r.size, r.dtype, r.direction) and not name.startswith("xdrop"):
                out.append(
                    {
                        "backend": r.backend,
                        "size": r.size,
                        "dtype": r.dtype,
                        "direction": r.direction,
                        "xdrop": r.name,
                        "peer": name,
                        "ratio": r.median_s / peer.median_s,
                    }
                )
    return out


def _native_first_call() -> dict[str, Any]:
    """Cost of the compiled kernel's first use: a build into an empty cache, then a cached load."""
    with tempfile.TemporaryDirectory() as tmp:
        old = os.environ.get("XDROP_CACHE_DIR")
        os.environ["XDROP_CACHE_DIR"] = tmp
        try:
            _, fresh = _native._load()
            _, cached = _native._load()
        finally:
            if old is None:
                del os.environ["XDROP_CACHE_DIR"]
            else:
                os.environ["XDROP_CACHE_DIR"] = old
    return {"build_and_load_s": fresh.seconds, "cached_load_s": cached.seconds, "error": fresh.error}


def format_table(report: dict[str, Any]) -> str:
    lines = []
    head = f"{'backend':<11}{'size':>6} {'dtype':<8}{'dir':<5}{'impl':<16}{'ns/elem':>9}{'GB/s':>8}  ratio xdrop/impl"
    lines.append(head)
    lines.append("-" * len(head))
    # Shown on each peer's row: the ratio of the xdrop row it is the natural peer of.
    ratio = {
        (q["backend"], q["size"], q["dtype"], q["direction"], q["peer"]): (q["xdrop"], q["ratio"])
        for q in report["ratios"]
        if q["xdrop"] == "xdrop" or q["peer"] in PEERS.get(q["xdrop"], ())
    }
    short = {"forward": "fwd", "backward": "bwd", "forward+backward": "f+b"}
    for r in report["results"]:
        item = np.dtype(r["dtype"]).itemsize
        key = (r["backend"], r["size"], r["dtype"], r["direction"], r["name"])
        rt = (
            f"{ratio[key][1]:.2f}" + ("" if ratio[key][0] == "xdrop" else f" ({ratio[key][0]})") if key in ratio else ""
        )
        gb = 2 * r["size"] * item / r["median_s"] / 1e9
        size = f"2^{int(np.log2(r['size']))}"
        lines.append(
            f"{r['backend']:<11}{size:>6} {r['dtype']:<8}{short.get(r['direction'], r['direction']):<5}{r['name']:<16}"
            f"{r['ns_per_element']:>9.2f}{gb:>8.1f}  {rt}"
        )
    if report.get("mlp"):
        m = report["mlp"]
        lines.append(
            f"\nMLP {m['layers']} ({m['data']}), batch {m['batch']}, {m['torch_threads']} torch thread(s), "
            f"median of {m['epochs']} epochs: xdrop.torch.Dropout {m['xdrop_s'] * 1e3:.1f} ms, "
            f"nn.Dropout {m['torch_s'] * 1e3:.1f} ms, ratio {m['ratio']:.3f}"
        )
    if report["memory"]:
        lines.append("\npeak extra memory of a forward call (x output size):")
        for m in report["memory"]:
            cells = ", ".join(f"{k} {v['ratio_to_output']:.2f}" for k, v in m["memory"].items())
            lines.append(f"  {m['backend']} 2^{int(np.log2(m['size']))} {m['dtype']}: {cells}")
    if report["saved"]:
        lines.append("\nbytes torch autograd saves for backward:")
        for s in report["saved"]:
            cells = ", ".join(f"{k} {v}" for k, v in s["saved_for_backward_bytes"].items())
            lines.append(f"  {s['backend']} 2^{int(np.log2(s['size']))} {s['dtype']}: {cells}")
    nat = report["meta"]["native"]
    lines.append(
        f"\ncompiled kernel: first use {nat['build_and_load_s']:.2f} s (build + load), "
        f"cached {nat['cached_load_s']:.3f} s" + (f"; unavailable: {nat['error']}" if nat["error"] else "")
    )
    for b, name in report["devices"].items():
        lines.append(f"{b} device: {name}")
    for b, why in report["skipped"].items():
        lines.append(f"skipped {b}: {why}")
    return "\n".join(lines)


def _plot(report: dict[str, Any], path: str) -> str:
    try:
        matplotlib = importlib.import_module("matplotlib")
        matplotlib.use("Agg")
        plt = importlib.import_module("matplotlib.pyplot")
    except ImportError:
        return "matplotlib is not installed: no plot written"
    rows = [r for r in report["results"] if r["direction"] == "forward"]
    groups = sorted({(r["backend"], r["dtype"]) for r in rows})
    if not groups:
        return "no results (every backend was skipped): no plot written"
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 4), squeeze=False)
    for ax, (b, d) in zip(axes[0], groups, strict=True):
        names = sorted({r["name"] for r in rows if (r["backend"], r["dtype"]) == (b, d)})
        for name in names:
            pts = sorted(
                (r["size"], r["ns_per_element"]) for r in rows if (r["backend"], r["dtype"], r["name"]) == (b, d, name)
            )
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
        ax.set(xscale="log", yscale="log", xlabel="elements", ylabel="ns / element (median)", title=f"{b} {d} forward")
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return f"plot written to {path}"


def mlp_epochs(torch: Any, epochs: int) -> dict[str, Any]:
    """Epoch time of a 64-256-256-10 MLP with two dropout layers: xdrop.torch.Dropout against nn.Dropout.

    Synthetic data shaped like scikit-learn's digits (1797 samples of 64
    features, 10 classes), batch 64, SGD; the median of ``epochs`` epochs after
    one warm-up epoch, the two models alternating epoch by epoch.
    """
    from . import torch as xtorch

    g = torch.Generator().manual_seed(0)
    data = torch.rand(1797, 64, generator=g) * 16
    target = torch.randint(0, 10, (1797,), generator=g)

    def model(dropout: Callable[[float], Any]) -> Any:
        torch.manual_seed(0)
        layers = [torch.nn.Linear(64, 256), torch.nn.ReLU(), dropout(0.5)]
        layers += [torch.nn.Linear(256, 256), torch.nn.ReLU(), dropout(0.5), torch.nn.Linear(256, 10)]
        return torch.nn.Sequential(*layers)

    models = {"xdrop": model(lambda p: xtorch.Dropout(p, seed=SEED)), "torch": model(torch.nn.Dropout)}
    optims = {k: torch.optim.SGD(m.parameters(), lr=0.01) for k, m in models.items()}

    def epoch(name: str) -> float:
        m, opt = models[name], optims[name]
        t0 = time.perf_counter()
        for i in range(0, len(data), 64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(m(data[i : i + 64]), target[i : i + 64]).backward()
            opt.step()
        return time.perf_counter() - t0

    times: dict[str, list[float]] = {"xdrop": [], "torch": []}
    for e in range(epochs + 1):
        for name in times:
            t = epoch(name)
            if e:  # the first epoch warms up
                times[name].append(t)
    xs, ts = statistics.median(times["xdrop"]), statistics.median(times["torch"])
    return {
        "layers": "64-256-256-10, two dropout layers, p = 0.5",
        "data": "synthetic, shaped like sklearn digits (1797 x 64, 10 classes)",
        "batch": 64,
        "epochs": epochs,
        "torch_threads": torch.get_num_threads(),
        "xdrop_s": xs,
        "torch_s": ts,
        "ratio": xs / ts,
    }


def main(args: argparse.Namespace) -> int:
    backends = args.backend or ["numpy", "torch"]
    dtypes = args.dtype or ["float32"]
    for d in dtypes:
        if d not in ("float16", "float32", "float64"):
            print(f"--dtype must be float16, float32 or float64, got {d!r}", file=sys.stderr)
            return 2
    report: dict[str, Any] = {"results": [], "ratios": [], "memory": [], "saved": [], "skipped": {}, "devices": {}}
    rows: list[Row] = []
    for backend in backends:
        loaded = _load(backend)
        if isinstance(loaded, str):
            report["skipped"][backend] = loaded
            print(f"skipping {backend}: {loaded}", file=sys.stderr)
            continue
        lib, device, sync = loaded
        if backend in ("numpy", "torch") and "torch" in sys.modules:
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
    if "torch" in backends and "torch" not in report["skipped"] and args.attention_lengths != []:
        report["attention"] = _bench_attention.run(args, sys.modules["torch"])  # hook: the attention rows
    report["meta"] = {
        "p": P,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "host_engine": _host.default_engine(),
        "native": _native_first_call(),
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
    if "attention" in report:
        print(_bench_attention.format_table(report["attention"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
        print(f"JSON written to {args.json}")
    if args.plot:
        print(_plot(report, args.plot))
    return 0
