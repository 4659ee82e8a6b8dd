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


def image(name: str, alt: str) -> str:
    # The fragment is included into docs/performance.md, so paths resolve from docs/.
    return f"```{{image}} _generated/{name}\n:alt: {alt}\n```\n"


def section(path: Path) -> str:
    data = json.loads(path.read_text())
    parts = [f"## `{path.name}`\n"]
    machine = data.get("machine") if isinstance(data, dict) else None
    if isinstance(machine, dict):
        parts.append("**The machine it ran on**\n\n" + md_table(["", ""], [[k, _fmt(v)] for k, v in machine.items()]))
    else:
        parts.append("The file names no machine.\n")
    own_png = path.with_suffix(".png")
    if own_png.exists():
        shutil.copyfile(own_png, GENERATED / f"bench-{path.stem}-own.png")
        parts.append(image(f"bench-{path.stem}-own.png", f"benchmark plot from {own_png.name}"))
    mlp = data.get("mlp") if isinstance(data, dict) else None
    if isinstance(mlp, dict):
        parts.append("**Small-MLP epoch time**\n\n" + md_table(["", ""], [[k, _fmt(v)] for k, v in mlp.items()]))
    rows = records(data)
    if rows is None:
        parts.append("The layout of this file is not one this page reads; its content:\n")
        parts.append("```json\n" + json.dumps(data, indent=1)[:20000] + "\n```\n")
        return "\n".join(parts)
    if plot(rows, GENERATED / f"bench-{path.stem}.png", path.stem):
        parts.append(image(f"bench-{path.stem}.png", f"ns per element against size, {path.stem}"))
    header = list(dict.fromkeys(k for r in rows for k in r))
    shown = rows[:MAX_ROWS]
    parts.append(md_table(header, [[_fmt(r.get(k, "")) for k in header] for r in shown]))
    if len(rows) > MAX_ROWS:
        parts.append(f"\n({len(rows) - MAX_ROWS} more rows in the file.)\n")
    return "\n".join(parts)


def generate() -> list[str]:
    files = sorted(RESULTS.glob("*.json")) if RESULTS.is_dir() else []
    if not files:
        text = (
            "```{note}\nNo benchmark results were found when these docs were built: "
            "`benchmarks/results/` holds no `*.json` file. Run "
            "`python -m xdrop bench --json benchmarks/results/<machine>.json` and rebuild.\n```\n"
        )
    else:
        text = "\n".join(section(f) for f in files)
    write_if_changed(PAGE, text)
    return []
