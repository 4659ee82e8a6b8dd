"""JAX attention rows of ``python -m xdrop bench``: xdrop's Flax attention beside Flax's own, same dropout.

For each length ``L = S`` and each ``broadcast_dropout`` (True: one ``(L, S)``
mask for every batch index and head, Flax's default; False: one per weight):
the median wall time of a jitted ``jax.grad`` of the sum (forward and backward)
of :func:`xdrop.flax.dot_product_attention` and of
``flax.linen.dot_product_attention`` with the same ``dropout_rate``, batch
``BATCH``, ``HEADS`` heads of ``FEATURES`` features, float32. The two calls
alternate within each repeat, so a machine whose load changes slows both
alike. Also each compiled function's temporary bytes (XLA's memory analysis).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from ._attention import lengths

BATCH = 2
HEADS = 8
FEATURES = 64
P = 0.1
DEFAULT_LENGTHS = "256,1024,2048"
QUICK_LENGTHS = "128"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--jax-attention-lengths",
        type=lengths,
        metavar="L,...",
        help=f"JAX attention rows (xdrop against Flax) at these L = S (default {DEFAULT_LENGTHS}; "
        f"--quick {QUICK_LENGTHS}; 0 skips them; needs jax and flax)",
    )


def _temp_bytes(fn: Any, *args: Any) -> int | None:
    """XLA's temporary buffer bytes of the compiled ``fn`` (None where the backend does not say)."""
    analysis = fn.lower(*args).compile().memory_analysis()
    return None if analysis is None else int(analysis.temp_size_in_bytes)


def _wait(grads: Any) -> None:
    """Wait for the gradients (JAX dispatches asynchronously): time the work, not the dispatch."""
    for g in grads:
        g.block_until_ready()


def measure(length: int, repeats: int, broadcast: bool) -> dict[str, Any]:
    """One row: fwd+bwd seconds and temporary bytes of ``xdrop`` and ``flax``, and their ratios."""
    import jax
    import jax.numpy as jnp
    from flax import linen

    from ...flax import dot_product_attention

    key = jax.random.key(0)
    q, k, v = (jax.random.normal(s, (BATCH, length, HEADS, FEATURES), jnp.float32) for s in jax.random.split(key, 3))
    kw: dict[str, Any] = {"dropout_rng": key, "dropout_rate": P, "broadcast_dropout": broadcast}

    def ours(q: Any, k: Any, v: Any) -> Any:
        return dot_product_attention(q, k, v, **kw).sum()

    def theirs(q: Any, k: Any, v: Any) -> Any:
        return linen.dot_product_attention(q, k, v, deterministic=False, **kw).sum()

    steps: dict[str, Callable[..., Any]] = {
        name: jax.jit(jax.grad(fn, argnums=(0, 1, 2))) for name, fn in (("xdrop", ours), ("flax", theirs))
    }
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for fn in steps.values():
        _wait(fn(q, k, v))  # compiles: not timed
    for _ in range(repeats):
        for name, fn in steps.items():
            t = time.perf_counter()
            _wait(fn(q, k, v))
            samples[name].append(time.perf_counter() - t)
    row: dict[str, Any] = {"L": length, "S": length, "broadcast_dropout": broadcast}
    for name, fn in steps.items():
        row[name] = {"forward_backward_s": statistics.median(samples[name]), "temp_bytes": _temp_bytes(fn, q, k, v)}
    row["ratios"] = {"forward_backward_s": row["xdrop"]["forward_backward_s"] / row["flax"]["forward_backward_s"]}
    if row["xdrop"]["temp_bytes"] is not None and row["flax"]["temp_bytes"]:
        row["ratios"]["temp_bytes"] = row["xdrop"]["temp_bytes"] / row["flax"]["temp_bytes"]
    return row


def add_to(report: dict[str, Any], args: argparse.Namespace) -> None:
    """Put the section in ``report["attention_jax"]``, or why it was skipped in ``report["skipped"]``."""
    section = run(args)
    if isinstance(section, str):
        report["skipped"]["jax-attention"] = section
    else:
        report["attention_jax"] = section


def run(args: argparse.Namespace) -> dict[str, Any] | str:
    """The JAX attention section of the report, or why it was skipped."""
    chosen = args.jax_attention_lengths
    if chosen is None:
        chosen = lengths(QUICK_LENGTHS if args.quick else DEFAULT_LENGTHS)
    if not chosen:
        return "--jax-attention-lengths 0"
    try:
        import flax  # noqa: F401
        import jax
    except ImportError as exc:
        return f"not installed ({exc.name})"
    repeats = 2 if args.quick else 7
    rows = [measure(n, repeats, broadcast) for n in chosen for broadcast in (True, False)]
    return {
        "rows": rows,
        "meta": {
            "peer": "flax.linen.dot_product_attention, same dropout_rate and broadcast_dropout",
            "shape": f"(B, L, H, E) = ({BATCH}, L, {HEADS}, {FEATURES}), float32, dropout_rate {P}",
            "timing": f"median of {repeats} alternating calls of jit(grad(sum)) after one compiling call each",
            "device": str(jax.devices()[0]),
        },
    }


def format_table(section: dict[str, Any]) -> str:
    lines = [
        f"JAX attention fwd+bwd ({section['meta']['shape']}): xdrop / {section['meta']['peer']}",
        f"{'L=S':>6} {'broadcast':>9} {'fwd+bwd ms':>19} {'temp MiB':>17}  ratios",
    ]
    for r in section["rows"]:
        a, b, x = r["xdrop"], r["flax"], r["ratios"]
        temp = "n/a" if "temp_bytes" not in x else f"{a['temp_bytes'] / 2**20:.1f}/{b['temp_bytes'] / 2**20:.1f}"
        mem = "" if "temp_bytes" not in x else f" temp {x['temp_bytes']:.2f}"
        lines.append(
            f"{r['L']:>6} {r['broadcast_dropout']!s:>9}"
            f" {a['forward_backward_s'] * 1e3:9.1f}/{b['forward_backward_s'] * 1e3:<9.1f} {temp:>17}"
            f"  fwd+bwd {x['forward_backward_s']:.2f}{mem}"
        )
    return "\n".join(lines)
