"""``torch.compile(fullgraph=True)`` of models with xdrop.torch layers, and their CUDA path.

A compiled layer calls ``torch.ops.xdrop.dropout`` with its ``(seed, step)``
buffers stacked into the operator's ``seed_step`` tensor and advances ``step``
inside the graph: no graph break, one compilation for every step, and the bits
of the eager layer (which is itself tested against the NumPy backend in
``test_torch_layers.py``) at each step.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="xdrop.torch needs torch")
from torch._dynamo.testing import CompileCounterWithBackend  # noqa: E402

import xdrop.torch as xt  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore:Dynamo detected a call to a `functools.lru_cache`:UserWarning"),
    pytest.mark.filterwarnings(r"ignore:`torch\.jit\.script(_method)?` is deprecated:DeprecationWarning"),
]

# Each layer with an input shape whose rank it takes without a warning.
LAYERS = {
    "Dropout": (lambda: xt.Dropout(0.4, seed=11), (4, 6, 5)),
    "Dropout1d": (lambda: xt.Dropout1d(0.4, seed=12), (4, 6, 5)),
    "Dropout2d": (lambda: xt.Dropout2d(0.4, seed=13), (4, 6, 3, 5)),
    "Dropout3d": (lambda: xt.Dropout3d(0.4, seed=14), (4, 6, 2, 3, 5)),
    "AlphaDropout": (lambda: xt.AlphaDropout(0.4, seed=15), (4, 6, 5)),
    "FeatureAlphaDropout": (lambda: xt.FeatureAlphaDropout(0.4, seed=16), (4, 6, 3, 5)),
    "DropPath": (lambda: xt.DropPath(0.4, seed=17), (8, 6, 5)),
    "DropPath-unscaled": (lambda: xt.DropPath(0.4, scale_by_keep=False, seed=18), (8, 6, 5)),
}
STEPS = 3


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Each test compiles fresh layer instances: without a reset, one worker's tests together pass
    dynamo's recompilation limit for the shared ``forward`` code object."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _bits(t):
    t = t.detach().cpu().contiguous()
    return t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


def _same(a, b):
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(_bits(a), _bits(b))


def _run_steps(model, x, dout):
    """Outputs and input gradients of STEPS training steps."""
    results = []
    for _ in range(STEPS):
        xi = x.clone().requires_grad_()
        out = model(xi)
        out.backward(dout)
        results.append((out.detach(), xi.grad))
    return results


def _check_against_eager(make, shape, backend, device="cpu"):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(*shape, generator=gen).to(device)
    dout = torch.randn(*shape, generator=gen).to(device)
    eager_layer, layer = make().to(device), make().to(device)
    counter = CompileCounterWithBackend(backend)
    compiled = torch.compile(layer, backend=counter, fullgraph=True)
    eager, got = _run_steps(eager_layer, x, dout), _run_steps(compiled, x, dout)
    assert counter.frame_count == 1  # one graph for every step: the step is a tensor, not a constant
    assert not _same(eager[0][0], eager[1][0])  # the steps drew different masks
    for (out_e, grad_e), (out_c, grad_c) in zip(eager, got, strict=True):
        assert _same(out_c, out_e)
        assert _same(grad_c, grad_e)
    assert int(layer.step) == int(eager_layer.step) == STEPS  # advanced inside the graph
    assert sorted(layer.state_dict()) == ["seed", "step"]


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_every_layer_compiles_fullgraph_with_eager_bits(name):
    make, shape = LAYERS[name]
    _check_against_eager(make, shape, "aot_eager")


def test_explain_counts_no_graph_break_in_a_model_with_every_layer():
    rank3 = [name for name, (_, shape) in LAYERS.items() if len(shape) == 3]  # chainable on one (N, C, L) input
    model = torch.nn.Sequential(*(LAYERS[name][0]() for name in rank3))
    x = torch.randn(4, 6, 5)
    explained = torch._dynamo.explain(model)(x)
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


def test_inplace_layer_compiles_with_eager_bits():
    def run(model):
        x = torch.randn(5, 7, generator=torch.Generator().manual_seed(1))
        return [model(x.clone()) for _ in range(STEPS)]

    eager = run(xt.Dropout(0.5, inplace=True, seed=4))
    got = run(torch.compile(xt.Dropout(0.5, inplace=True, seed=4), backend="aot_eager", fullgraph=True))
    assert all(_same(a, b) for a, b in zip(eager, got, strict=True))


def test_u64_step_wraps_around_in_the_graph():
    make = lambda: xt.Dropout(0.5, seed=2**64 - 1)  # noqa: E731
    eager_layer, layer = make(), make()
    for one in (eager_layer, layer):
        one.step.fill_(-1)  # u64 2**64 - 1: the next step is 0
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    x = torch.ones(64)
    for _ in range(2):
        assert _same(compiled(x), eager_layer(x))
    assert int(layer.step) == int(eager_layer.step) == 1


@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf:UserWarning")
@pytest.mark.parametrize("name", ["AlphaDropout", "Dropout2d", "DropPath"])
def test_inductor_on_cpu_gives_eager_bits(name):
    if not any(shutil.which(cc) for cc in ("c++", "g++", "clang++")):
        pytest.skip("inductor on CPU needs a C++ compiler and none is on PATH")
    make, shape = LAYERS[name]
    _check_against_eager(make, shape, "inductor")


def _cuda_or_skip():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (torch.cuda.is_available() is False); run tools/gpu_compile_check.py there")


def test_cuda_layer_reads_its_buffers_on_the_device_and_uses_triton():
    _cuda_or_skip()
    from xdrop._kernels.torch import _ops as _torch_ops

    layer = xt.Dropout(0.5, seed=9).cuda()
    x = torch.randn(1000, device="cuda")
    calls = []
    layer(x)  # registers the Triton kernel on the first CUDA tensor
    (kernel,) = _torch_ops._cuda_kernels
    _torch_ops.register_cuda_kernel(lambda *a: calls.append(1) or kernel(*a))
    try:
        outs = [layer(x) for _ in range(2)]
    finally:
        _torch_ops.register_cuda_kernel(kernel)
    assert len(calls) == 2
    cpu = xt.Dropout(0.5, seed=9)
    expected = [cpu(x.cpu()) for _ in range(3)][1:]
    assert all(_same(a, b) for a, b in zip(outs, expected, strict=True))
    assert layer.step.device.type == "cuda" and int(layer.step) == 3


def test_cuda_compiled_layer_equals_eager():
    _cuda_or_skip()
    make, shape = LAYERS["Dropout"]
    _check_against_eager(make, shape, "inductor", device="cuda")


@pytest.mark.parametrize("case", ["plain", "fullgraph", "module", "keras"])
def test_the_first_call_may_be_compiled(case):
    """In a fresh interpreter, xdrop's first call on a torch tensor happens while torch.compile traces:
    a function (with and without fullgraph), a module with an xdrop.torch layer, and a Keras model
    on the torch backend with ``jit_compile=True``. Each gives the eager bits."""
    if case == "keras" and importlib.util.find_spec("keras") is None:  # imported with torch in the child only
        pytest.skip("keras is not installed")
    script = Path(__file__).with_name("compile_first_check.py")
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "KERAS_BACKEND": "torch"}
    done = subprocess.run([sys.executable, str(script), case], capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
