"""The end-to-end row of ``python -m xdrop bench``: a small MLP's epoch with xdrop.torch.Dropout and nn.Dropout."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from ._bench_cases import SEED


def mlp_epochs(torch: Any, epochs: int) -> dict[str, Any]:
    """Epoch time of a 64-256-256-10 MLP with two dropout layers: xdrop.torch.Dropout against nn.Dropout.

    Synthetic data shaped like scikit-learn's digits (1797 samples of 64
    features, 10 classes), batch 64, SGD; the median of ``epochs`` epochs after
    one warm-up epoch, the two models alternating epoch by epoch.
    """
    from . import torch as xtorch

    g = torch.Generator().manual_seed(0)
    data = torch.rand(1797, 64, generator=g) * 16
    target = torch.randint(0, 10, (1797,), generator=g)

    def model(dropout: Callable[[float], Any]) -> Any:
        torch.manual_seed(0)
        layers = [torch.nn.Linear(64, 256), torch.nn.ReLU(), dropout(0.5)]
        layers += [torch.nn.Linear(256, 256), torch.nn.ReLU(), dropout(0.5), torch.nn.Linear(256, 10)]
        return torch.nn.Sequential(*layers)

    models = {"xdrop": model(lambda p: xtorch.Dropout(p, seed=SEED)), "torch": model(torch.nn.Dropout)}
    optims = {k: torch.optim.SGD(m.parameters(), lr=0.01) for k, m in models.items()}

    def epoch(name: str) -> float:
        m, opt = models[name], optims[name]
        t0 = time.perf_counter()
        for i in range(0, len(data), 64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(m(data[i : i + 64]), target[i : i + 64]).backward()
            opt.step()
        return time.perf_counter() - t0

    times: dict[str, list[float]] = {"xdrop": [], "torch": []}
    for e in range(epochs + 1):
        for name in times:
            t = epoch(name)
            if e:  # the first epoch warms up
                times[name].append(t)
    xs, ts = statistics.median(times["xdrop"]), statistics.median(times["torch"])
    return {
        "layers": "64-256-256-10, two dropout layers, p = 0.5",
        "data": "synthetic, shaped like sklearn digits (1797 x 64, 10 classes)",
        "batch": 64,
        "epochs": epochs,
        "torch_threads": torch.get_num_threads(),
        "xdrop_s": xs,
        "torch_s": ts,
        "ratio": xs / ts,
    }
