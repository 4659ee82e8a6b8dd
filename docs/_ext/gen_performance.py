"""The performance page, from the benchmark JSON files in ``benchmarks/results/``.

``python -m xdrop bench --json benchmarks/results/<name>.json`` writes them
(one file per machine or run; a PNG of the same stem beside a JSON is shown
too). Without any file the page says so. :func:`records` is the one place that
reads the JSON's layout; it accepts a list of flat records under ``results``,
``records`` or ``rows`` (or at the top level) and a ``machine`` mapping.
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

from _common import GENERATED, ROOT, md_table, write_if_changed

RESULTS = ROOT / "benchmarks" / "results"
PAGE = GENERATED / "performance.md"
SIZE_KEYS = ("size", "n", "elements", "numel")
TIME_KEYS = ("ns_per_element", "ns_per_elem", "median_ns_per_element", "ns/elem")
MAX_ROWS = 400


def records(data: Any) -> list[dict[str, Any]] | None:
    rows = data
    if isinstance(data, dict):
        rows = next((data[k] for k in ("results", "records", "rows", "measurements") if k in data), None)
    if isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows):
        return rows
    return None


def _key(row: dict[str, Any], names: tuple[str, ...]) -> str | None:
    return next((k for k in names if isinstance(row.get(k), (int, float))), None)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    return str(v)


def plot(rows: list[dict[str, Any]], out: Path, title: str) -> bool:
    """ns/element against size, one line per series; False if the records have neither."""
    size_key, time_key = _key(rows[0], SIZE_KEYS), _key(rows[0], TIME_KEYS)
    if size_key is None or time_key is None:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [k for k in rows[0] if isinstance(rows[0][k], str)]
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in rows:
        if isinstance(r.get(size_key), (int, float)) and isinstance(r.get(time_key), (int, float)):
            series[" ".join(str(r.get(k, "")) for k in labels)].append((r[size_key], r[time_key]))
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for name, pts in sorted(series.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=name)
    ax.set(xscale="log", yscale="log", xlabel=f"{size_key} (elements)", ylabel="median ns / element", title=title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(out, metadata={"Software": None})
    plt.close(fig)
    return True


# The native dropout each backend's xdrop rows are compared with in the summary (first found wins).
NATIVE = {
    "numpy": ("numpy-oneliner", "numpy-generator", "cs231n"),
    "torch": ("torch",),
    "torch-cuda": ("torch",),
    "cupy": ("cupy-random",),
}


def owner(row: dict[str, Any]) -> str:
    """The backend a row belongs to: the library that ran it (a torch row measured beside NumPy is torch's)."""
    backend, name = str(row.get("backend", "")), str(row.get("name", ""))
    if backend == "numpy" and name.startswith("torch"):
        return "torch"
    return backend


def machine_name(data: dict[str, Any]) -> str:
    """One line naming the machine: its devices, CPU count and architecture, as the file records them."""
    meta = data.get("machine") or data.get("meta") or {}
    devices = data.get("devices") or {}
    parts = sorted({str(v) for v in devices.values()}) if isinstance(devices, dict) else []
    if isinstance(meta, dict):
        if meta.get("cpu"):
            parts.append(str(meta["cpu"]))
        if meta.get("cpu_count"):
            parts.append(f"{meta['cpu_count']} CPU cores")
        if meta.get("machine"):
            parts.append(str(meta["machine"]))
        parts += [f"{lib} {meta[lib]}" for lib in ("torch", "numpy", "python") if meta.get(lib)]
    return ", ".join(parts) or "not recorded in the file"


def summary(rows: list[dict[str, Any]]) -> list[tuple[str, str, str, int, float, float]]:
    """(backend, direction, native name, size, xdrop ns/elem, native ns/elem) for each measured pair."""
    by: dict[tuple[str, str, str, str, int], float] = {}
    for r in rows:
        if isinstance(r.get("size"), int) and isinstance(r.get("ns_per_element"), (int, float)):
            key = (owner(r), str(r.get("direction", "")), str(r.get("dtype", "")), str(r.get("name", "")), r["size"])
            by[key] = float(r["ns_per_element"])
    out = []
    for (backend, direction, dtype, name, size), t in sorted(by.items()):
        if name != "xdrop":
            continue
        native = next((n for n in NATIVE.get(backend, ()) if (backend, direction, dtype, n, size) in by), None)
        if native is not None:
            out.append((backend, direction, native, size, t, by[(backend, direction, dtype, native, size)]))
    return out


def _size(n: int) -> str:
    return f"2^{n.bit_length() - 1}" if n > 0 and n & (n - 1) == 0 else str(n)


def _kv(mapping: dict[str, Any]) -> str:
    return md_table(["", ""], [[k, _fmt(v)] for k, v in mapping.items()])


def summary_plot(pairs: list[tuple[str, str, str, int, float, float]], out: Path, title: str) -> bool:
    """xdrop (solid) and the native dropout (dashed) per backend, forward, ns/element over sizes."""
    fwd = [p for p in pairs if p[1] == "forward"]
    if not fwd:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for i, backend in enumerate(sorted({p[0] for p in fwd})):
        pts = sorted(p for p in fwd if p[0] == backend)
        color = f"C{i}"
        sizes = [p[3] for p in pts]
        ax.plot(sizes, [p[4] for p in pts], marker="o", ms=3, color=color, label=f"{backend}: xdrop")
        ax.plot(sizes, [p[5] for p in pts], ls="--", marker="x", ms=3, color=color, label=f"{backend}: {pts[0][2]}")
    ax.set(xscale="log", yscale="log", xlabel="size (elements)", ylabel="median ns / element (forward)", title=title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, metadata={"Software": None})
    plt.close(fig)
    return True


def image(name: str, alt: str) -> str:
    # The fragment is included into docs/performance.md, so paths resolve from docs/.
    return f"```{{image}} _generated/{name}\n:alt: {alt}\n```\n"


def section(path: Path) -> tuple[str, str]:
    """(summary, raw tables) of one result file: the page shows every summary before any raw table."""
    data = json.loads(path.read_text())
    machine = machine_name(data) if isinstance(data, dict) else "not recorded in the file"
    parts = [f"### {machine}\n", f"From `benchmarks/results/{path.name}`.\n"]
    rows = records(data)
    pairs = summary(rows) if rows is not None else []
    if pairs:
        parts.append(
            f"**Summary** ({machine}): xdrop against the native dropout, median ns per element; "
            "ratio = xdrop time / native time (below 1: xdrop is faster).\n"
        )
        parts.append(
            md_table(
                ["backend", "direction", "size", "xdrop", "native", "native ns/elem", "ratio"],
                [
                    [
                        b,
                        d,
                        _size(s),
                        f"{x:.3g}",
                        n,
                        f"{t:.3g}",
                        f"{x / t:.2f}",
                    ]
                    for b, d, n, s, x, t in pairs
                ],
            )
        )
        if summary_plot(pairs, GENERATED / f"bench-{path.stem}-summary.png", machine):
            parts.append(
                image(f"bench-{path.stem}-summary.png", f"xdrop against native dropout per backend, {machine}")
            )
    mlp = data.get("mlp") if isinstance(data, dict) else None
    if isinstance(mlp, dict):
        parts.append(f"**Small-MLP epoch time** ({machine})\n\n" + _kv(mlp))
    head = "\n".join(parts)
    parts = [f"### {machine}\n", f"From `benchmarks/results/{path.name}`.\n"]
    if rows is None:
        parts.append("The layout of this file is not one this page reads; its content:\n")
        parts.append("% not run: benchmark data, not code\n```json\n" + json.dumps(data, indent=1)[:20000] + "\n```\n")
        return head, "\n".join(parts)
    own_png = path.with_suffix(".png")
    if own_png.exists():
        shutil.copyfile(own_png, GENERATED / f"bench-{path.stem}-own.png")
        parts.append(image(f"bench-{path.stem}-own.png", f"benchmark plot from {own_png.name}"))
    header = list(dict.fromkeys(k for r in rows for k in r))
    for backend in sorted({owner(r) for r in rows}):
        group = [r for r in rows if owner(r) == backend][:MAX_ROWS]
        parts.append(
            f"**{backend}** ({machine})\n\n" + md_table(header, [[_fmt(r.get(k, "")) for k in header] for r in group])
        )
    if isinstance(data, dict) and isinstance(data.get("meta"), dict):
        parts.append(f"**Run details** ({machine})\n\n" + _kv(data["meta"]))
    return head, "\n".join(parts)


def generate() -> list[str]:
    files = sorted(RESULTS.glob("*.json")) if RESULTS.is_dir() else []
    if not files:
        text = (
            "```{note}\nNo benchmark results were found when these docs were built: "
            "`benchmarks/results/` holds no `*.json` file. Run "
            "`python -m xdrop bench --json benchmarks/results/<machine>.json` and rebuild.\n```\n"
        )
    else:
        done = [section(f) for f in files]
        text = "## Summary: xdrop against the native dropout\n\n" + "\n".join(h for h, _ in done)
        text += "\n## Raw measurements\n\n" + "\n".join(r for _, r in done)
    write_if_changed(PAGE, text)
    return []
