"""Attention rows of ``python -m xdrop bench``: xdrop's attention beside torch's SDPA with the same dropout.

For each length ``L = S``: forward and forward+backward wall time of
:func:`xdrop.scaled_dot_product_attention` (torch CPU: the blocked operator)
and of ``torch.nn.functional.scaled_dot_product_attention`` with the same
``dropout_p`` (the math backend on the CPU; on CUDA, ``--attention-device cuda``,
torch's fused kernels: flash or memory-efficient, whichever it picks), batch 1, ``HEADS`` heads of
``E = 64`` features, float32; and the bytes autograd saves for backward for
each (every tensor its saved-tensor hooks see), also less the inputs q, k, v
that both keep.
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--attention-lengths",
        type=lengths,
        metavar="L,...",
        help=f"attention rows at these L = S (default {DEFAULT_LENGTHS}; --quick {QUICK_LENGTHS}; "
        "up to 4096 for the issue's range; 0 skips them; needs torch)",
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

    from ._attention import scaled_dot_product_attention

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


def run(args: argparse.Namespace, torch: Any) -> dict[str, Any]:
    """The attention section of the report."""
    chosen = args.attention_lengths
    if chosen is None:
        chosen = lengths(QUICK_LENGTHS if args.quick else DEFAULT_LENGTHS)
    repeats = 2 if args.quick else 5
    device = getattr(args, "attention_device", "cpu")
    rows = [measure(torch, n, repeats, device) for n in chosen]
    kernels = "FLASH_ATTENTION or EFFICIENT_ATTENTION" if device == "cuda" else "MATH"
    return {
        "rows": rows,
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
    return "\n".join(lines)
