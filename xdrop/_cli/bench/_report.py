"""The results of ``python -m xdrop bench`` as ratios, a table and a plot."""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from ._timing import Row

# Each xdrop row's natural peer, for the table's ratio column.
PEERS = {
    "xdrop": ("torch", "numpy-oneliner", "cupy-random"),
    "xdrop-layer": ("torch-layer",),
    "xdrop-into": ("multiply-into",),
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
    short = {"forward": "fwd", "backward": "bwd", "forward+backward": "f+b", "sum+backward": "s+b"}
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
    if report.get("converted_model"):
        c = report["converted_model"]
        lines.append(
            f"\nconverted model: {c['model']}, batch {c['batch']}, {c['torch_threads']} torch thread(s), "
            f"median of {c['steps']} training steps: replace_dropout {c['xdrop_s'] * 1e3:.2f} ms, "
            f"native {c['torch_s'] * 1e3:.2f} ms, ratio {c['ratio']:.3f}"
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
        f"\ncompiled kernel: unavailable: {nat['error']}"
        if nat["error"]
        else f"\ncompiled kernel: variant {nat['variant']} (this CPU runs {', '.join(nat['variants'])})"
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
