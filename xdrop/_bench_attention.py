"""Attention rows of ``python -m xdrop bench``: xdrop's attention beside torch's SDPA with the same dropout.

For each length ``L = S``: forward and forward+backward wall time of
:func:`xdrop.scaled_dot_product_attention` (torch CPU: the blocked operator)
and of ``torch.nn.functional.scaled_dot_product_attention`` with the same
``dropout_p`` (the math backend on the CPU), batch 1, ``HEADS`` heads of
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


def _median_time(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up: first-call costs (kernel selection, allocations) are not timed
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
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


def measure(torch: Any, length: int, repeats: int) -> dict[str, Any]:
    """One length's row: times in seconds, saved bytes, for ``xdrop`` and ``torch-math``."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from ._attention import scaled_dot_product_attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, HEADS, length, FEATURES, generator=g).requires_grad_() for _ in range(3))

    def ours() -> Any:
        return scaled_dot_product_attention(q, k, v, dropout_p=P, seed=SEED)

    def theirs() -> Any:
        with sdpa_kernel(SDPBackend.MATH):
            return F.scaled_dot_product_attention(q, k, v, dropout_p=P)

    inputs = 3 * q.numel() * q.element_size()
    row: dict[str, Any] = {"L": length, "S": length, "heads": HEADS, "E": FEATURES, "dtype": "float32", "p": P}
    for name, fn in (("xdrop", ours), ("torch-math", theirs)):
        with torch.no_grad():
            forward = _median_time(fn, repeats)

        def step(fn: Callable[[], Any] = fn) -> None:
            fn().sum().backward()
            for t in (q, k, v):
                t.grad = None

        saved = _saved(fn, torch)
        row[name] = {
            "forward_s": forward,
            "forward_backward_s": _median_time(step, repeats),
            "saved_bytes": saved,
            "saved_beyond_inputs_bytes": saved - inputs,
        }
    ours_row, theirs_row = row["xdrop"], row["torch-math"]
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
    rows = [measure(torch, n, repeats) for n in chosen]
    return {
        "rows": rows,
        "meta": {
            "peer": "torch.nn.functional.scaled_dot_product_attention, SDPBackend.MATH, same dropout_p",
            "timing": f"median of {repeats} calls after one warm-up call",
            "torch_threads": torch.get_num_threads(),
        },
    }


def format_table(section: dict[str, Any]) -> str:
    lines = [
        "attention (batch 1, 8 heads, E = 64, float32, dropout_p = 0.1): xdrop / torch math SDPA",
        f"{'L=S':>6} {'fwd ms':>15} {'fwd+bwd ms':>17} {'saved MiB':>19} {'beyond q,k,v MiB':>19}",
    ]
    for r in section["rows"]:
        a, b, x = r["xdrop"], r["torch-math"], r["ratios"]
        lines.append(
            f"{r['L']:>6} {a['forward_s'] * 1e3:7.1f}/{b['forward_s'] * 1e3:<7.1f}"
            f" {a['forward_backward_s'] * 1e3:8.1f}/{b['forward_backward_s'] * 1e3:<8.1f}"
            f" {a['saved_bytes'] / 2**20:8.2f}/{b['saved_bytes'] / 2**20:<10.1f}"
            f" {a['saved_beyond_inputs_bytes'] / 2**20:8.3f}/{b['saved_beyond_inputs_bytes'] / 2**20:<10.1f}"
            f"  ratios fwd {x['forward_s']:.2f} fwd+bwd {x['forward_backward_s']:.2f}"
            f" saved {x['saved_bytes']:.4f} beyond {x['saved_beyond_inputs_bytes']:.5f}"
        )
    return "\n".join(lines)
