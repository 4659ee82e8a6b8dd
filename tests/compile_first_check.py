"""Run by tests/test_torch_compile.py in a fresh interpreter: xdrop's first torch call is compiled.

``python compile_first_check.py CASE`` (with ``KERAS_BACKEND=torch``) exits 0 when the compiled call
gives the eager call's bits (the eager calls run after the compiled ones: nothing is imported or cached before).
"""

from __future__ import annotations

import copy
import sys

import torch

import xdrop

CASE = sys.argv[1]
x = torch.linspace(-1.0, 1.0, 64).reshape(8, 8)

if CASE in ("plain", "fullgraph"):
    f = torch.compile(lambda x, s: xdrop.dropout(x, 0.5, seed=1, step=s), fullgraph=CASE == "fullgraph")
    got = [f(x, s) for s in (3, 4)]
    assert all(g.equal(xdrop.dropout(x, 0.5, seed=1, step=s)) for g, s in zip(got, (3, 4), strict=True))
elif CASE == "module":
    import xdrop.torch as xt

    model = torch.nn.Sequential(torch.nn.Linear(8, 8), xt.Dropout(0.5, seed=3))
    twin = copy.deepcopy(model)
    compiled = torch.compile(model, fullgraph=True)
    got = [compiled(x) for _ in range(2)]
    assert all(g.equal(twin(x)) for g in got)
elif CASE == "keras":
    import keras

    import xdrop.keras

    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8), xdrop.keras.Dropout(0.5, seed=3)])
    model.compile(optimizer="sgd", loss="mse", jit_compile=True)
    model.fit(x.numpy(), x.numpy(), batch_size=8, epochs=1, verbose=0)
    step = [int(w) for w in keras.ops.convert_to_numpy(model.layers[-1].step.value)]
    assert step == [1, 0], step  # one training batch, one step (low and high words)
else:
    raise SystemExit(f"unknown case {CASE!r}")
print("ok")
