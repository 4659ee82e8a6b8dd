"""Attention rows of ``python -m xdrop bench``: xdrop's attention beside torch's SDPA with the same dropout.

For each length ``L = S``: forward and forward+backward wall time of
:func:`xdrop.scaled_dot_product_attention` (torch CPU: the blocked operator)
and of ``torch.nn.functional.scaled_dot_product_attention`` with the same
``dropout_p`` (the math backend on the CPU; on CUDA, ``--attention-device cuda``,
torch's fused kernels: flash or memory-efficient, whichever it picks), batch 1, ``HEADS`` heads of
``E = 64`` features, float32; and the bytes autograd saves for backward for
each (every tensor its saved-tensor hooks see), also less the inputs q, k, v
that both keep.

The A/B rows (``--attention-ab-lengths``, CPU) time forward+backward at
batch ``AB_BATCH``, the callables alternating round by round in one process:
xdrop with ``dropout_p`` against torch's math SDPA with the same ``dropout_p``
and against torch's default (fused, flash on the CPU) SDPA at ``dropout_p = 0``
(what dropout costs over none), and both with a ``(batch, 1, L, S)`` float mask.
``--attention-load N`` adds the xdrop / math row at L = ``LOADED_LENGTH`` with
N busy processes per core running beside it (started before, stopped after).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

HEADS = 8
FEATURES = 64
P = 0.1
SEED = 0x5EED
DEFAULT_LENGTHS = "128,256,512,1024,2048"
QUICK_LENGTHS = "128,256"
MAX_LENGTH = 1 << 15
AB_BATCH = 2
DEFAULT_AB_LENGTHS = "1024"
QUICK_AB_LENGTHS = "128"
LOADED_LENGTH = 1024


def lengths(text: str) -> list[int]:
    """``--attention-lengths``: comma-separated L = S values; "0" skips the attention rows."""
    try:
        values = [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers, got {text!r}") from None
    if values == [0]:
        return []
    if any(not 1 <= n <= MAX_LENGTH for n in values):
        raise argparse.ArgumentTypeError(f"lengths must lie in [1, {MAX_LENGTH}], got {text!r}")
    return values


def busy_count(text: str) -> int:
    """``--attention-load``: busy processes per core, a non-negative integer."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--attention-lengths",
        type=lengths,
        metavar="L,...",
        help=f"attention rows at these L = S (default {DEFAULT_LENGTHS}; --quick {QUICK_LENGTHS}; "
        "up to 4096 for the issue's range; 0 skips them; needs torch)",
    )
    parser.add_argument(
        "--attention-ab-lengths",
        type=lengths,
        metavar="L,...",
        help=f"A/B rows (CPU): fwd+bwd against torch math SDPA and fused SDPA at p = 0, alternating, at these "
        f"L = S (default {DEFAULT_AB_LENGTHS}; --quick {QUICK_AB_LENGTHS}; 0 skips them)",
    )
    parser.add_argument(
        "--attention-load",
        type=busy_count,
        default=0,
        metavar="N",
        help=f"also the L = {LOADED_LENGTH} xdrop / math row with N busy processes per core beside it "
        "(default 0: none)",
    )
    parser.add_argument(
        "--attention-device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="device of the attention rows (default cpu: the peer is torch's math SDPA; cuda: its fused SDPA)",
    )


def _median_time(fn: Callable[[], Any], repeats: int, sync: Callable[[], Any]) -> float:
    fn()  # warm-up: first-call costs (kernel selection, compilation, allocations) are not timed
    sync()
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()  # CUDA launches are asynchronous: time the work, not the launch
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def _saved(fn: Callable[[], Any], torch: Any) -> int:
    sizes: list[int] = []

    def pack(t: Any) -> Any:
        sizes.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(sizes)


def measure(torch: Any, length: int, repeats: int, device: str = "cpu") -> dict[str, Any]:
    """One length's row: times in seconds, saved bytes, for ``xdrop`` and the peer (``torch-math`` on the CPU,
    ``torch-fused`` on CUDA)."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from ..._functional._attention import scaled_dot_product_attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, HEADS, length, FEATURES, generator=g).to(device).requires_grad_() for _ in range(3))
    cuda = device == "cuda"
    peer = "torch-fused" if cuda else "torch-math"
    chosen = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION] if cuda else [SDPBackend.MATH]

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def ours() -> Any:
        return scaled_dot_product_attention(q, k, v, dropout_p=P, seed=SEED)

    def theirs() -> Any:
        with sdpa_kernel(chosen):
            return F.scaled_dot_product_attention(q, k, v, dropout_p=P)

    inputs = 3 * q.numel() * q.element_size()
    row: dict[str, Any] = {
        "L": length,
        "S": length,
        "heads": HEADS,
        "E": FEATURES,
        "dtype": "float32",
        "p": P,
        "device": device,
        "peer": peer,
    }
    for name, fn in (("xdrop", ours), (peer, theirs)):
        with torch.no_grad():
            forward = _median_time(fn, repeats, sync)

        def step(fn: Callable[[], Any] = fn) -> None:
            fn().sum().backward()
            for t in (q, k, v):
                t.grad = None

        saved = _saved(fn, torch)
        row[name] = {
            "forward_s": forward,
            "forward_backward_s": _median_time(step, repeats, sync),
            "saved_bytes": saved,
            "saved_beyond_inputs_bytes": saved - inputs,
        }
    ours_row, theirs_row = row["xdrop"], row[peer]
    row["ratios"] = {
        key: ours_row[key] / theirs_row[key]
        for key in ("forward_s", "forward_backward_s", "saved_bytes", "saved_beyond_inputs_bytes")
    }
    return row


def _alternating(fns: dict[str, Callable[[], Any]], rounds: int) -> dict[str, float]:
    """Median time of each callable, the callables alternating round by round after one warm-up round."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(rounds + 1):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            if r:
                times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def compare(
    torch: Any, length: int, rounds: int, peers: tuple[str, ...] = ("math", "fused-p0", "mask")
) -> dict[str, Any]:
    """One A/B row: forward+backward seconds of xdrop and of each peer, and their ratios (CPU, float32)."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from ..._functional._attention import scaled_dot_product_attention

    g = torch.Generator().manual_seed(0)
    shape = (AB_BATCH, HEADS, length, FEATURES)
    q, k, v = (torch.randn(shape, generator=g).requires_grad_() for _ in range(3))
    mask = torch.randn(AB_BATCH, 1, length, length, generator=g)

    def step(out: Any) -> None:
        out.sum().backward()
        for t in (q, k, v):
            t.grad = None

    def math(bias: Any = None) -> None:
        with sdpa_kernel([SDPBackend.MATH]):
            step(F.scaled_dot_product_attention(q, k, v, bias, dropout_p=P))

    fns: dict[str, Callable[[], Any]] = {
        "xdrop": lambda: step(scaled_dot_product_attention(q, k, v, dropout_p=P, seed=SEED)),
        "torch-math": math,
    }
    if "fused-p0" in peers:
        fns["torch-fused-p0"] = lambda: step(F.scaled_dot_product_attention(q, k, v))
    if "mask" in peers:
        fns["xdrop-mask"] = lambda: step(scaled_dot_product_attention(q, k, v, mask, dropout_p=P, seed=SEED))
        fns["torch-math-mask"] = lambda: math(mask)
    times = _alternating(fns, rounds)
    ratios = {"vs-torch-math": times["xdrop"] / times["torch-math"]}
    if "fused-p0" in peers:
        ratios["vs-torch-fused-p0"] = times["xdrop"] / times["torch-fused-p0"]
    if "mask" in peers:
        ratios["mask-vs-torch-math-mask"] = times["xdrop-mask"] / times["torch-math-mask"]
    shape_meta = {"batch": AB_BATCH, "heads": HEADS, "E": FEATURES, "dtype": "float32", "p": P}
    return {"L": length, "S": length, **shape_meta, "forward_backward_s": times, "ratios": ratios}


def loaded(torch: Any, per_core: int, rounds: int) -> dict[str, Any]:
    """The L = ``LOADED_LENGTH`` xdrop / math row with ``per_core`` busy processes per core beside it."""
    import os
    import subprocess
    import sys

    count = per_core * (os.cpu_count() or 1)
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        row = compare(torch, LOADED_LENGTH, rounds, peers=())
    finally:
        for proc in busy:
            proc.kill()
        for proc in busy:
            proc.wait()
    return {**row, "busy_processes": count}


def run(args: argparse.Namespace, torch: Any) -> dict[str, Any]:
    """The attention section of the report."""
    chosen = args.attention_lengths
    if chosen is None:
        chosen = lengths(QUICK_LENGTHS if args.quick else DEFAULT_LENGTHS)
    repeats = 2 if args.quick else 5
    device = getattr(args, "attention_device", "cpu")
    rows = [measure(torch, n, repeats, device) for n in chosen]
    kernels = "FLASH_ATTENTION or EFFICIENT_ATTENTION" if device == "cuda" else "MATH"
    ab_lengths = getattr(args, "attention_ab_lengths", None)
    if ab_lengths is None:
        ab_lengths = lengths(QUICK_AB_LENGTHS if args.quick else DEFAULT_AB_LENGTHS)
    cpu = device == "cpu"
    load = getattr(args, "attention_load", 0)
    return {
        "rows": rows,
        "ab": [compare(torch, n, repeats) for n in ab_lengths] if cpu else [],
        "loaded": [loaded(torch, load, repeats)] if cpu and load > 0 else [],
        "meta": {
            "peer": f"torch.nn.functional.scaled_dot_product_attention, SDPBackend.{kernels}, same dropout_p",
            "device": device,
            "timing": f"median of {repeats} calls after one warm-up call",
            "torch_threads": torch.get_num_threads(),
        },
    }


def format_table(section: dict[str, Any]) -> str:
    lines = [
        f"attention (batch 1, 8 heads, E = 64, float32, dropout_p = 0.1): xdrop / {section['meta']['peer']}",
        f"{'L=S':>6} {'fwd ms':>15} {'fwd+bwd ms':>17} {'saved MiB':>19} {'beyond q,k,v MiB':>19}",
    ]
    for r in section["rows"]:
        a, b, x = r["xdrop"], r[r.get("peer", "torch-math")], r["ratios"]
        lines.append(
            f"{r['L']:>6} {a['forward_s'] * 1e3:7.1f}/{b['forward_s'] * 1e3:<7.1f}"
            f" {a['forward_backward_s'] * 1e3:8.1f}/{b['forward_backward_s'] * 1e3:<8.1f}"
            f" {a['saved_bytes'] / 2**20:8.2f}/{b['saved_bytes'] / 2**20:<10.1f}"
            f" {a['saved_beyond_inputs_bytes'] / 2**20:8.3f}/{b['saved_beyond_inputs_bytes'] / 2**20:<10.1f}"
            f"  ratios fwd {x['forward_s']:.2f} fwd+bwd {x['forward_backward_s']:.2f}"
            f" saved {x['saved_bytes']:.4f} beyond {x['saved_beyond_inputs_bytes']:.5f}"
        )
    ab = section.get("ab", []) + section.get("loaded", [])
    if ab:
        threads = section["meta"].get("torch_threads")
        lines.append(
            f"attention A/B, fwd+bwd, alternating (batch {AB_BATCH}, 8 heads, E = 64, float32, dropout_p = 0.1, "
            f"{threads} torch thread(s)): ms, and xdrop's ratios"
        )
    for r in ab:
        times = ", ".join(f"{name} {s * 1e3:.1f}" for name, s in r["forward_backward_s"].items())
        ratios = ", ".join(f"{name} {x:.2f}" for name, x in r["ratios"].items())
        busy = f" beside {r['busy_processes']} busy processes" if "busy_processes" in r else ""
        lines.append(f"{r['L']:>6}{busy}: {times}; ratios {ratios}")
    return "\n".join(lines)
