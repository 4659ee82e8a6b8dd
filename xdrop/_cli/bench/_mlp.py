"""The end-to-end rows of ``python -m xdrop bench``: a small MLP's epoch, and a converted model's training step."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from ._cases import SEED


def mlp_epochs(torch: Any, epochs: int) -> dict[str, Any]:
    """Epoch time of a 64-256-256-10 MLP with two dropout layers: xdrop.torch.Dropout against nn.Dropout.

    Synthetic data shaped like scikit-learn's digits (1797 samples of 64
    features, 10 classes), batch 64, SGD; the median of ``epochs`` epochs after
    one warm-up epoch, the two models alternating epoch by epoch.
    """
    from ... import torch as xtorch

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

    xs, ts = _alternate(epoch, epochs)
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


def _alternate(run: Callable[[str], float], rounds: int) -> tuple[float, float]:
    """Median times of ``run("xdrop")`` and ``run("torch")``, alternating, after one warm-up round of each."""
    times: dict[str, list[float]] = {"xdrop": [], "torch": []}
    for r in range(rounds + 1):
        for name in times:
            t = run(name)
            if r:  # the first round warms up
                times[name].append(t)
    return statistics.median(times["xdrop"]), statistics.median(times["torch"])


def converted_model_steps(torch: Any, steps: int) -> dict[str, Any]:
    """Training-step time of an ``nn.TransformerEncoder`` converted by ``replace_dropout`` against the native one.

    Two ``batch_first`` encoder layers (d_model 64, 4 heads, feed-forward 128,
    dropout 0.1: attention, feed-forward and residual dropouts), batch 8 of 64
    tokens, SGD; the median of ``steps`` steps after one warm-up step, the two
    models alternating step by step. The converted model owns every dropout
    (``nn.MultiheadAttention``'s included), so its step includes xdrop's attention.
    """
    import copy

    from ... import torch as xtorch

    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(64, 4, 128, dropout=0.1, batch_first=True)
    native = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    models = {"torch": native, "xdrop": xtorch.replace_dropout(copy.deepcopy(native), seed=SEED)}
    optims = {k: torch.optim.SGD(m.parameters(), lr=0.01) for k, m in models.items()}
    x = torch.randn(8, 64, 64, generator=torch.Generator().manual_seed(1))

    def step(name: str) -> float:
        m, opt = models[name], optims[name]
        t0 = time.perf_counter()
        opt.zero_grad()
        m(x).square().mean().backward()
        opt.step()
        return time.perf_counter() - t0

    xs, ts = _alternate(step, steps)
    return {
        "model": "nn.TransformerEncoder, 2 layers, d_model 64, 4 heads, feed-forward 128, dropout 0.1",
        "batch": "8 x 64 tokens",
        "steps": steps,
        "torch_threads": torch.get_num_threads(),
        "xdrop_s": xs,
        "torch_s": ts,
        "ratio": xs / ts,
    }
