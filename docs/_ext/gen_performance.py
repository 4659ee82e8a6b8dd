"""The performance page's tables and plots, from the benchmark JSON files in ``benchmarks/results/``.

``python -m xdrop bench --json benchmarks/results/<name>.json`` writes them
(one file per machine or run; a PNG of the same stem beside a JSON is shown
too). For each file this writes ``_generated/perf-<stem>.md``: when and where
it was measured, xdrop against the native dropout per size and direction, and
a plot of the same; ``docs/performance.md`` includes each fragment under a
heading naming the machine (every file must be included there or by the
attention page: a file left out is reported). ``_generated/performance.md``
holds every file's raw rows. :func:`records` is the one place that reads the
JSON's layout; it accepts a list of flat records under ``results``,
``records`` or ``rows`` (or at the top level) and a ``machine`` mapping.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

from _common import GENERATED, ROOT, md_table, write_if_changed

RESULTS = ROOT / "benchmarks" / "results"
PAGE = GENERATED / "performance.md"
# The pages that include a result file's fragment (or, for attention-*.json, read the file itself).
INCLUDERS = (ROOT / "docs" / "performance.md", ROOT / "docs" / "attention.md")
DIRECTIONS = ("forward", "backward", "forward+backward")
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
    """One line naming the machine: its devices, CPU model and count and architecture, as the file records them."""
    meta = data.get("machine") or data.get("meta") or {}
    devices = data.get("devices") or {}
    parts = sorted({str(v) for v in devices.values()}) if isinstance(devices, dict) else []
    if isinstance(meta, dict):
        if meta.get("cpu"):
            parts.append(str(meta["cpu"]))
        if meta.get("cpu_model"):
            parts.append(str(meta["cpu_model"]))
        if meta.get("cpu_count"):
            parts.append(f"{meta['cpu_count']} CPU cores")
        if meta.get("machine"):
            parts.append(str(meta["machine"]))
        parts += [f"{lib} {meta[lib]}" for lib in ("torch", "numpy", "python") if meta.get(lib)]
    return ", ".join(parts) or "not recorded in the file"


def summary(rows: list[dict[str, Any]]) -> list[tuple[str, str, str, int, float, float]]:
    """(backend, direction, native name, size, xdrop ns/elem, native ns/elem) for each measured pair.

    The functional call (``xdrop``) is compared with the backend's native dropout (:data:`NATIVE`), the
    torch layer (``xdrop-layer``) with ``nn.Dropout`` (``torch-layer``) as backend "<backend> (layers)".
    """
    by: dict[tuple[str, str, str, str, int], float] = {}
    for r in rows:
        if isinstance(r.get("size"), int) and isinstance(r.get("ns_per_element"), (int, float)):
            key = (owner(r), str(r.get("direction", "")), str(r.get("dtype", "")), str(r.get("name", "")), r["size"])
            by[key] = float(r["ns_per_element"])
    out = []
    for (backend, direction, dtype, name, size), t in sorted(by.items()):
        if name == "xdrop":
            label, peers = backend, NATIVE.get(backend, ())
        elif name == "xdrop-layer":  # xdrop.torch.Dropout against nn.Dropout
            label, peers = f"{backend} (layers)", ("torch-layer",)
        else:
            continue
        native = next((n for n in peers if (backend, direction, dtype, n, size) in by), None)
        if native is not None:
            out.append((label, direction, native, size, t, by[(backend, direction, dtype, native, size)]))
    return sorted(out)


def _size(n: int) -> str:
    return f"2^{n.bit_length() - 1}" if n > 0 and n & (n - 1) == 0 else str(n)


def _kv(mapping: dict[str, Any]) -> str:
    return md_table(["", ""], [[k, _fmt(v)] for k, v in mapping.items()])


def image(name: str, alt: str) -> str:
    # The fragment is included into docs/performance.md, so paths resolve from docs/.
    return f"```{{image}} _generated/{name}\n:alt: {alt}\n```\n"


def raw_section(path: Path) -> str:
    """Every row of one result file, grouped by the library that ran it, and the run's details."""
    data = json.loads(path.read_text())
    machine = machine_name(data) if isinstance(data, dict) else "not recorded in the file"
    rows = records(data)
    parts = [f"### {path.name}\n", f"Measured {run_date(path, data)} ({machine}).\n"]
    if rows is None:
        parts.append("The layout of this file is not one this page reads; its content:\n")
        parts.append("% not run: benchmark data, not code\n```json\n" + json.dumps(data, indent=1)[:20000] + "\n```\n")
        return "\n".join(parts)
    own_png = path.with_suffix(".png")
    if own_png.exists():
        shutil.copyfile(own_png, GENERATED / f"bench-{path.stem}-own.png")
        parts.append(image(f"bench-{path.stem}-own.png", f"benchmark plot from {own_png.name}"))
    header = list(dict.fromkeys(k for r in rows for k in r))
    for backend in sorted({owner(r) for r in rows}):
        group = [r for r in rows if owner(r) == backend][:MAX_ROWS]
        parts.append(f"**{backend}**\n\n" + md_table(header, [[_fmt(r.get(k, "")) for k in header] for r in group]))
    if isinstance(data, dict) and isinstance(data.get("meta"), dict):
        parts.append("**Run details**\n\n" + _kv(data["meta"]))
    return "\n".join(parts)


def run_date(path: Path, data: Any) -> str:
    """The day the file was measured: its ``meta.date``, else the date in its name, else "date not recorded"."""
    meta = data.get("meta") if isinstance(data, dict) else None
    if isinstance(meta, dict) and isinstance(meta.get("date"), str):
        return str(meta["date"])[:10]
    found = re.search(r"\d{4}-\d{2}-\d{2}", path.stem)
    return found.group(0) if found else "date not recorded"


def _ratio_cell(x: float, t: float) -> str:
    return f"{x:.3g} vs {t:.3g}: {x / t:.2f}x"


def comparison_table(pairs: list[tuple[str, str, str, int, float, float]]) -> str:
    """One row per backend and size; per direction, "xdrop vs native ns/element: xdrop/nativex"."""
    directions = [d for d in DIRECTIONS if any(p[1] == d for p in pairs)]
    cells: dict[tuple[str, str, int], dict[str, str]] = defaultdict(dict)
    for backend, direction, native, size, x, t in pairs:
        if direction in directions:
            cells[(backend, native, size)][direction] = _ratio_cell(x, t)
    rows = [
        [backend, f"`{native}`", _size(size), *(found.get(d, "") for d in directions)]
        for (backend, native, size), found in sorted(cells.items())
    ]
    return md_table(["backend", "native", "size", *directions], rows)


def comparison_plot(pairs: list[tuple[str, str, str, int, float, float]], out: Path, title: str) -> bool:
    """One panel per direction: ns/element over sizes, xdrop solid and the native dropout dashed, per backend."""
    directions = [d for d in DIRECTIONS if any(p[1] == d for p in pairs)]
    if not directions:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(directions), figsize=(4.2 * len(directions), 4), dpi=110, squeeze=False)
    backends = sorted({p[0] for p in pairs})
    for ax, direction in zip(axes[0], directions, strict=True):
        for i, backend in enumerate(backends):
            pts = sorted(p for p in pairs if p[0] == backend and p[1] == direction)
            if not pts:
                continue
            sizes = [p[3] for p in pts]
            ax.plot(sizes, [p[4] for p in pts], marker="o", ms=4, color=f"C{i}", label=f"{backend}: xdrop")
            ax.plot(
                sizes, [p[5] for p in pts], ls="--", marker="x", ms=4, color=f"C{i}", label=f"{backend}: {pts[0][2]}"
            )
        ax.set(xscale="log", yscale="log", xlabel="elements", title=direction)
        ax.set_xscale("log", base=2)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("median ns per element (lower is faster)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, metadata={"Software": None})
    plt.close(fig)
    return True


def fragment(path: Path) -> str:
    """The part of the page for one result file: when and where, the comparison table and its plot."""
    data = json.loads(path.read_text())
    machine = machine_name(data) if isinstance(data, dict) else "not recorded in the file"
    date = run_date(path, data)
    rows = records(data)
    pairs = summary(rows) if rows is not None else []
    parts = [f"Measured {date} ({machine}); raw file `benchmarks/results/{path.name}`.\n"]
    if not pairs:
        parts.append("This file holds no xdrop and native rows of the same size to compare; see its raw rows below.\n")
        return "\n".join(parts)
    parts.append(
        "Median time per element, xdrop against the native dropout of each library, and their ratio "
        "(below 1x: xdrop is faster).\n"
    )
    parts.append(comparison_table(pairs))
    name = f"perf-{path.stem}.png"
    if comparison_plot(pairs, GENERATED / name, f"{machine}, {date}"):
        parts.append(image(name, f"ns per element over sizes, xdrop and the native dropout, {machine}, {date}"))
    mlp = data.get("mlp") if isinstance(data, dict) else None
    if isinstance(mlp, dict):
        parts.append("**Small-MLP epoch time**\n\n" + _kv(mlp))
    parts.extend(attention_tables(data) if isinstance(data, dict) else [])
    return "\n".join(parts)


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


def attention_tables(data: dict[str, Any]) -> list[str]:
    """The attention A/B rows (torch, CPU) and the JAX rows of a result file, as tables, where it has them."""
    out = []
    section = data.get("attention") or {}
    ab = [*section.get("ab", []), *section.get("loaded", [])]
    if ab:
        rows = []
        for r in ab:
            t, x = r["forward_backward_s"], r["ratios"]
            fused = f"{_ms(t['torch-fused-p0'])} ({x['vs-torch-fused-p0']:.2f}x)" if "torch-fused-p0" in t else ""
            mask = (
                f"{_ms(t['xdrop-mask'])} / {_ms(t['torch-math-mask'])} ({x['mask-vs-torch-math-mask']:.2f}x)"
                if "xdrop-mask" in t
                else ""
            )
            busy = str(r.get("busy_processes", 0))
            math = f"{_ms(t['torch-math'])} ({x['vs-torch-math']:.2f}x)"
            rows.append([str(r["L"]), busy, _ms(t["xdrop"]), math, fused, mask])
        header = ["L = S", "busy processes", "xdrop ms", "torch math ms (ratio)", "torch fused, p = 0, ms (ratio)"]
        threads = section.get("meta", {}).get("torch_threads")
        on = f"{threads} torch thread{'s' if threads != 1 else ''}; " if threads else ""
        out.append(
            f"**Attention, forward + backward** (batch {ab[0]['batch']}, {ab[0]['heads']} heads, E = {ab[0]['E']}, "
            f"{ab[0]['dtype']}, dropout_p = {ab[0]['p']}; {on}medians, the calls alternating in one process; "
            "ratio: xdrop over the peer, "
            "below 1x: xdrop is faster)\n"
        )
        out.append(md_table([*header, "(B, 1, L, S) float mask: xdrop / torch math ms (ratio)"], rows))
    jax_section = data.get("attention_jax") or {}
    if jax_section.get("rows"):
        rows = []
        for r in jax_section["rows"]:
            a, b, x = r["xdrop"], r["flax"], r["ratios"]
            temp = f"{x['temp_bytes']:.2f}" if "temp_bytes" in x else ""
            rows.append(
                [
                    str(r["L"]),
                    str(r["broadcast_dropout"]),
                    _ms(a["forward_backward_s"]),
                    _ms(b["forward_backward_s"]),
                    f"{x['forward_backward_s']:.2f}",
                    temp,
                ]
            )
        out.append(f"**JAX attention, forward + backward** ({jax_section['meta']['shape']}; against Flax)\n")
        out.append(md_table(["L = S", "broadcast_dropout", "xdrop ms", "Flax ms", "ratio", "temporaries ratio"], rows))
    return out


def not_included(files: list[Path]) -> list[str]:
    """Result files whose fragment no page includes (attention-*.json: the attention page reads them)."""
    text = "".join(p.read_text() for p in INCLUDERS if p.exists())
    return [
        f"performance: benchmarks/results/{f.name} is not shown: include _generated/perf-{f.stem}.md in "
        "docs/performance.md"
        for f in files
        if f"perf-{f.stem}.md" not in text and f.name not in text
    ]


def generate() -> list[str]:
    files = sorted(RESULTS.glob("*.json")) if RESULTS.is_dir() else []
    if not files:
        text = (
            "```{note}\nNo benchmark results were found when these docs were built: "
            "`benchmarks/results/` holds no `*.json` file. Run "
            "`python -m xdrop bench --json benchmarks/results/<machine>.json` and rebuild.\n```\n"
        )
    else:
        GENERATED.mkdir(parents=True, exist_ok=True)
        for f in files:
            write_if_changed(GENERATED / f"perf-{f.stem}.md", fragment(f))
        text = "\n".join(raw_section(f) for f in files)
    write_if_changed(PAGE, text)
    return not_included(files)
