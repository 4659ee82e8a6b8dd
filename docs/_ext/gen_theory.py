"""The Theory page's figure: E[out] with and without the 1/keep scaling, from real xdrop draws."""

from __future__ import annotations

import numpy as np
from _common import GENERATED, md_table, write_if_changed

FIGURE = GENERATED / "theory_expectation.png"
TABLE = GENERATED / "theory_table.md"
N = 2**16  # elements per draw
DRAWS = 8  # steps per p
SEED = 20240607
PS = np.round(np.linspace(0.05, 0.95, 19), 2)


def measure() -> tuple[np.ndarray, np.ndarray]:
    """Per drop probability p: the mean of out / x with the 1/keep scaling and without it."""
    import xdrop

    x = np.random.default_rng(SEED).uniform(0.5, 1.5, N)  # any fixed positive x: out / x is the factor applied
    scaled, unscaled = [], []
    for j, p in enumerate(PS):
        s_sum = u_sum = 0.0
        for step in range(j * DRAWS, (j + 1) * DRAWS):
            out = xdrop.dropout(x, float(p), seed=SEED, step=step)
            mask = xdrop.keep_mask(x.shape, float(p), seed=SEED, step=step, xp=np)
            s_sum += float(np.sum(out / x))
            u_sum += float(np.sum(np.where(mask, x, 0.0) / x))  # the same draw, not divided by keep
        scaled.append(s_sum / (N * DRAWS))
        unscaled.append(u_sum / (N * DRAWS))
    return np.array(scaled), np.array(unscaled)


def generate() -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scaled, unscaled = measure()
    keep = 1 - PS
    # Standard errors from the derivation (Bernoulli(keep) per element, n = N * DRAWS), not estimated.
    se_s = np.sqrt((1 - keep) / keep / (N * DRAWS))
    se_u = np.sqrt(keep * (1 - keep) / (N * DRAWS))
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    ax.plot(PS, np.ones_like(PS), color="0.6", lw=1, ls="--", label="x (the test-time activation)")
    ax.plot(PS, keep, color="C1", lw=1, ls=":", label="theory without scaling: (1 - p) x")
    ax.errorbar(PS, scaled, yerr=3 * se_s, fmt="o", color="C0", ms=4, capsize=2, label="xdrop.dropout: mean out / x")
    ax.errorbar(
        PS, unscaled, yerr=3 * se_u, fmt="s", color="C1", ms=4, capsize=2, label="same masks, not divided by keep"
    )
    ax.set(xlabel="drop probability p", ylabel="mean of out / x", ylim=(0, 1.25))
    ax.set_title(f"{DRAWS} draws of {N} elements per p; bars: 3 standard errors", fontsize=9)
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURE, metadata={"Software": None})
    plt.close(fig)
    rows = [
        [f"{p:.2f}", f"{k:.2f}", f"{s:.4f} ± {e:.4f}", f"{u:.4f} ± {f:.4f}"]
        for p, k, s, u, e, f in zip(PS, keep, scaled, unscaled, se_s, se_u, strict=True)
        if p in (0.1, 0.25, 0.5, 0.75, 0.9)
    ]
    write_if_changed(TABLE, md_table(["p", "keep", "mean out/x, scaled (± SE)", "mean out/x, not scaled (± SE)"], rows))
    # The measured means must agree with the derivation, or the page would show a wrong figure.
    # |z| > 5 has a false-alarm rate of 5.7e-7 per point (2.2e-5 for all 38); the seeds are fixed.
    bad = [
        f"theory figure: p={p}: scaled mean {s:.4f} is {abs(s - 1) / e:.1f} SE from 1"
        for p, s, e in zip(PS, scaled, se_s, strict=True)
        if abs(s - 1) > 5 * e
    ]
    bad += [
        f"theory figure: p={p}: unscaled mean {u:.4f} is {abs(u - k) / e:.1f} SE from {k}"
        for p, k, u, e in zip(PS, keep, unscaled, se_u, strict=True)
        if abs(u - k) > 5 * e
    ]
    return bad
