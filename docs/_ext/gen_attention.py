"""The Attention page's figure and table: bytes saved for backward against L, from the committed benchmark."""

from __future__ import annotations

import json

from _common import GENERATED, ROOT, md_table, write_if_changed

RESULTS = ROOT / "benchmarks" / "results" / "attention-cpu-2026-12-03.json"
FIGURE = GENERATED / "attention_saved.png"
TABLE = GENERATED / "attention_table.md"


def generate() -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    rows = json.loads(RESULTS.read_text())["attention"]["rows"]
    lengths = [r["L"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for name, colour in (("torch-math", "C1"), ("xdrop", "C0")):
        ax.plot(lengths, [r[name]["saved_bytes"] for r in rows], "o-", color=colour, label=f"{name}: all saved")
        ax.plot(
            lengths,
            [r[name]["saved_beyond_inputs_bytes"] for r in rows],
            "s--",
            color=colour,
            label=f"{name}: beyond q, k, v",
        )
    ax.set(xscale="log", yscale="log", xlabel="L = S", ylabel="bytes saved for backward")
    ax.set_xticks(lengths, [str(n) for n in lengths])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())  # the lengths are the only ticks
    ax.set_title("batch 1, 8 heads, E = 64, float32, dropout_p = 0.1 (saved-tensor hooks)", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURE, metadata={"Software": None})
    plt.close(fig)
    mib = 2**20
    table = [
        [
            str(r["L"]),
            f"{r['xdrop']['saved_bytes'] / mib:.2f}",
            f"{r['torch-math']['saved_bytes'] / mib:.1f}",
            f"{r['ratios']['saved_bytes']:.2%}",
            f"{r['ratios']['saved_beyond_inputs_bytes']:.3%}",
            f"{r['xdrop']['forward_backward_s'] * 1e3:.0f} / {r['torch-math']['forward_backward_s'] * 1e3:.0f}",
            f"{r['ratios']['forward_backward_s']:.2f}",
        ]
        for r in rows
    ]
    header = [
        "L = S",
        "xdrop saved (MiB)",
        "torch math saved (MiB)",
        "ratio",
        "ratio beyond q, k, v",
        "fwd+bwd ms (xdrop / torch)",
        "time ratio",
    ]
    write_if_changed(TABLE, md_table(header, table))
    # The page states that nothing of L * S elements is saved: a row that contradicts it is a problem.
    return [
        f"attention figure: L={r['L']}: xdrop saves {r['xdrop']['saved_beyond_inputs_bytes']} bytes beyond q, k, v"
        for r in rows
        if r["xdrop"]["saved_beyond_inputs_bytes"] >= r["L"] * r["S"]
    ]
