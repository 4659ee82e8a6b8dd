"""A transformers GPT-2 training step with eager attention: the native model against replace_dropout's copy.

Run with the frameworks environment (torch, transformers), nothing else running:

    python benchmarks/gpt2_training_step.py 256
    python benchmarks/gpt2_training_step.py 512

Two layers, 8 heads, n_embd 256, vocabulary 1024, batch 4, sequence length L
(the argument), 2 torch threads, plain SGD. The two models take turns, one
training step each, for 13 rounds; the first 3 are warm-up and the median of
the other 10 is printed. The converted model runs xdrop's attention and
dropout (``xdrop.torch.replace_dropout``); the native one torch's eager
attention with ``nn.Dropout`` and torch's RNG.
"""

from __future__ import annotations

import copy
import statistics
import sys
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

import xdrop.torch as xt


def main(length: int) -> str:
    torch.set_num_threads(2)
    config = GPT2Config(
        vocab_size=1024, n_positions=max(length, 256), n_embd=256, n_layer=2, n_head=8, attn_implementation="eager"
    )
    torch.manual_seed(0)
    native = GPT2LMHeadModel(config).train()
    models = {"native": native, "converted": xt.replace_dropout(copy.deepcopy(native), seed=1234).train()}
    optimisers = {name: torch.optim.SGD(m.parameters(), lr=1e-3) for name, m in models.items()}
    ids = torch.randint(0, config.vocab_size, (4, length), generator=torch.Generator().manual_seed(0))
    times: dict[str, list[float]] = {name: [] for name in models}
    for round_ in range(13):
        for name, model in models.items():
            start = time.perf_counter()
            model(ids, labels=ids).loss.backward()
            optimisers[name].step()
            optimisers[name].zero_grad()
            if round_ >= 3:
                times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(t) for name, t in times.items()}
    return (
        f"GPT-2 (2 layers, 8 heads, n_embd 256, batch 4, L = {length}, eager attention, 2 torch threads): "
        f"converted {med['converted'] * 1e3:.1f} ms, native {med['native'] * 1e3:.1f} ms, "
        f"ratio {med['converted'] / med['native']:.2f}"
    )


if __name__ == "__main__":
    print(main(int(sys.argv[1]) if len(sys.argv) > 1 else 256))
