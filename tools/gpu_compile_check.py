"""torch.compile, CUDA graphs and the torch-CUDA path without CuPy: what a CPU cannot prove.

Run by ``tools/gpu_check.sh`` on a CUDA machine; by hand::

    python tools/gpu_compile_check.py [--json PATH] [--no-cupy] [--device cpu]

Checks, each reported as PASS, FAIL (with the reason) or SKIP (with why):

- ``ops``: which ``torch.ops.xdrop`` operators are registered (a report, no verdict).
- ``no-cupy``: with ``--no-cupy`` (CuPy masked: ``sys.modules["cupy"] = None``
  before xdrop loads), the kernel chosen for a torch CUDA tensor, and
  ``xdrop.dropout`` / ``keep_mask`` on the device bit-identical to the same
  calls on the CPU, for several dtypes, sizes, seeds and steps.
- ``compile-*``: ``torch.compile(fullgraph=True)`` of functional calls, every
  variant and a training step with every layer: graph breaks counted with
  ``torch._dynamo.explain``, and the compiled bits (outputs, gradients) equal to eager.
- ``triton-op``: a training step of xdrop.torch.Dropout layers on CUDA runs
  ``torch.ops.xdrop.dropout``'s registered Triton kernel (counted), with the
  layers' seed/step buffers read on the device (no ``.item()``), bits equal to
  the same layers on the CPU.
- ``cuda-graph``: a training step (forward, backward) with xdrop layers captured
  in a CUDA graph and replayed twice, against the same two steps run eagerly
  from the same state: equal bits, and whether the masks advance between replays.

Without a CUDA device (and without ``--device cpu``) it says so and exits 0.
Exit status 1 if any check fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Callable
from typing import Any

RESULTS: list[dict[str, Any]] = []


def record(name: str, status: str, detail: str = "", **extra: Any) -> None:
    RESULTS.append({"check": name, "status": status, "detail": detail, **extra})
    print(f"{status:5} {name}: {detail}", flush=True)


def guarded(name: str, fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception as exc:  # a check that raises is a failure, with its reason
        record(name, "FAIL", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        traceback.print_exc()


def same_bits(a: Any, b: Any) -> bool:
    """Bitwise equality of two tensors (NaN payloads included), on the CPU."""
    import torch

    a, b = a.detach().cpu().contiguous(), b.detach().cpu().contiguous()
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype == torch.bool:
        return bool(torch.equal(a, b))
    width = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
    return bool(torch.equal(a.view(width), b.view(width)))


def check_ops() -> None:
    import torch

    import xdrop.torch  # noqa: F401  (registers the operators, where they exist)

    ns = getattr(torch.ops, "xdrop", None)
    names = sorted(n for n in dir(ns) if not n.startswith("_")) if ns is not None else []
    names = [n for n in names if n not in ("name", "nspace")]
    record("ops", "INFO", f"torch.ops.xdrop: {', '.join(names) or 'none registered'}", ops=names)


def check_no_cupy(device: str) -> None:
    import torch

    import xdrop
    from xdrop._kernels import select

    x0 = torch.randn(5, device=device)
    kernel = select(torch, x0, "auto")
    where = f"{getattr(kernel, '__module__', '?')}.{getattr(kernel, '__qualname__', '?')}"
    bad = []
    cells = 0
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        for n, seed, step, p in [(1, 0, 0, 0.5), (1027, 2**40 + 3, 2**33, 0.3), (1 << 20, 2**64 - 1, 7, 0.9)]:
            x = torch.randn(n, generator=torch.Generator().manual_seed(n)).to(dtype)
            cpu = xdrop.dropout(x, p, seed=seed, step=step)
            dev = xdrop.dropout(x.to(device), p, seed=seed, step=step)
            cells += 1
            if not same_bits(cpu, dev):
                bad.append(f"dropout {dtype} n={n}")
    for shape in [(3,), (33, 65), (1 << 19,)]:
        mask = xdrop.keep_mask(shape, 0.25, seed=99, step=2**63 + 1, xp=torch, device=device)
        cells += 1
        if not same_bits(mask, xdrop.keep_mask(shape, 0.25, seed=99, step=2**63 + 1, xp=torch)):
            bad.append(f"keep_mask {shape}")
    detail = f"kernel {where}; {cells} cells, {len(bad)} differ" + (f": {bad}" if bad else "")
    triton_path = "_triton" in where or device == "cpu"  # on a CUDA tensor the Triton kernel must be chosen
    record("no-cupy", "PASS" if not bad and triton_path else "FAIL", detail, kernel=where)


def _explain(fn: Callable[..., Any], *args: Any) -> tuple[int, list[str]]:
    import torch._dynamo

    torch._dynamo.reset()
    out = torch._dynamo.explain(fn)(*args)
    return int(out.graph_break_count), [str(r.reason)[:160] for r in out.break_reasons]


def check_compile_functional(device: str, backend: str) -> None:
    import torch

    import xdrop

    x = torch.randn(4, 6, 8, 10, device=device)
    cases: dict[str, Callable[[Any], Any]] = {
        "dropout": lambda t: xdrop.dropout(t, 0.3, seed=5, step=2),
        "dropout1d": lambda t: xdrop.dropout1d(t[0], 0.3, seed=5, step=2),
        "dropout2d": lambda t: xdrop.dropout2d(t, 0.3, seed=5, step=2),
        "dropout3d": lambda t: xdrop.dropout3d(t[None], 0.3, seed=5, step=2),
        "alpha_dropout": lambda t: xdrop.alpha_dropout(t, 0.3, seed=5, step=2),
        "feature_alpha_dropout": lambda t: xdrop.feature_alpha_dropout(t, 0.3, seed=5, step=2),
        "drop_path": lambda t: xdrop.drop_path(t, 0.3, seed=5, step=2),
        "attention": lambda t: xdrop.scaled_dot_product_attention(t, t, t, dropout_p=0.3, seed=5, step=2),
    }
    for name, fn in cases.items():

        def one(name: str = name, fn: Callable[[Any], Any] = fn) -> None:
            def f(t: Any) -> Any:
                return fn(t) * 2 + 1

            breaks, reasons = _explain(f, x)
            eager = f(x)
            compiled = torch.compile(f, fullgraph=True, backend=backend)(x)
            ok = breaks == 0 and same_bits(eager, compiled)
            record(
                f"compile-{name}",
                "PASS" if ok else "FAIL",
                f"{breaks} graph breaks {reasons}; bits equal: {same_bits(eager, compiled)}",
            )

        guarded(f"compile-{name}", one)


def check_attention(device: str) -> None:
    """Attention dropout on the device: the mask bits are keep_mask's, values and gradients the CPU's.

    With q = k = 0 every weight is 1/S, and with v the identity, out[..., i, j] is keep[..., i, j] * a / S: its
    zeros are the dropped weights, so the device's mask is read off the output exactly.
    """
    import torch

    import xdrop

    n, length, keys, p = (2, 3), 96, 80, 0.3
    zeros = torch.zeros(*n, length, 16, device=device)
    eye = torch.eye(keys, device=device).expand(*n, keys, keys)
    out = xdrop.scaled_dot_product_attention(zeros, zeros[..., :keys, :], eye, dropout_p=p, seed=11, step=4)
    want = xdrop.keep_mask((*n, length, keys), p, seed=11, step=4, xp=torch)
    differing = int(((out.cpu() != 0) != want).sum())
    record("attention-mask-bits", "PASS" if differing == 0 else "FAIL", f"{differing} of {want.numel()} bits differ")

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 128, 64, generator=g, dtype=torch.float64) for _ in range(3))
    results: dict[str, list[Any]] = {}
    for dev in ("cpu", device):
        leaves = [t.to(dev).requires_grad_() for t in (q, k, v)]
        o = xdrop.scaled_dot_product_attention(*leaves, dropout_p=p, seed=3, step=1, is_causal=True)
        o.sum().backward()
        results[dev] = [o.detach().cpu(), *(t.grad.cpu() for t in leaves)]
    worst = max(
        float(((a - b).abs() / b.abs().clamp_min(1e-6)).max())
        for a, b in zip(results[device], results["cpu"], strict=True)
    )
    record("attention-values-grads", "PASS" if worst < 1e-10 else "FAIL", f"max relative difference vs CPU {worst:.2e}")

    # An additive float mask broadcast over heads (T5's learned position bias), with its gradient.
    bias = torch.randn(2, 1, 128, 128, generator=g, dtype=torch.float64)
    for dev in ("cpu", device):
        leaves = [t.to(dev).requires_grad_() for t in (q, k, v, bias)]
        o = xdrop.scaled_dot_product_attention(*leaves[:3], attn_mask=leaves[3], dropout_p=p, seed=3, step=1)
        o.sum().backward()
        results[dev] = [o.detach().cpu(), *(t.grad.cpu() for t in leaves)]
    worst = max(
        float(((a - b).abs() / b.abs().clamp_min(1e-6)).max())
        for a, b in zip(results[device], results["cpu"], strict=True)
    )
    detail = f"max relative difference vs CPU {worst:.2e} (values, dq, dk, dv, dmask)"
    record("attention-float-mask-grads", "PASS" if worst < 1e-10 else "FAIL", detail)


def _model(device: str, seed: int) -> Any:
    import torch

    import xdrop.torch as xt

    torch.manual_seed(0)
    layers = [
        torch.nn.Linear(64, 256),
        torch.nn.ReLU(),
        xt.Dropout(0.5, seed=seed),
        torch.nn.Linear(256, 256),
        torch.nn.ReLU(),
        xt.Dropout(0.2, seed=seed + 1),
        torch.nn.Linear(256, 10),
    ]
    return torch.nn.Sequential(*layers).to(device)


def _layers_model(device: str) -> Any:
    """Every xdrop layer once, in a small conv net (layers that need a rank get one)."""
    import torch

    import xdrop.torch as xt

    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.d2 = xt.Dropout2d(0.2, seed=1)
            self.d3 = xt.Dropout3d(0.2, seed=2)
            self.d1 = xt.Dropout1d(0.2, seed=3)
            self.fa = xt.FeatureAlphaDropout(0.2, seed=4)
            self.a = xt.AlphaDropout(0.2, seed=5)
            self.dp = xt.DropPath(0.2, seed=6)
            self.d = xt.Dropout(0.2, seed=7)
            self.fc = torch.nn.Linear(8 * 8 * 8, 10)

        def forward(self, x: Any) -> Any:
            h = self.d2(torch.relu(self.conv(x)))
            h = self.d3(h[:, :, None]).squeeze(2)
            h = self.d1(h.flatten(2)).view_as(h)
            h = self.dp(self.a(self.fa(h)))
            return self.fc(self.d(h.flatten(1)))

    return Net().to(device)


def _step(model: Any, x: Any, y: Any) -> tuple[Any, list[Any]]:
    import torch

    for p in model.parameters():
        p.grad = None
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    return loss.detach(), [p.grad.detach().clone() for p in model.parameters()]


def check_compile_step(device: str, backend: str, name: str, make: Callable[[], Any], shape: tuple[int, ...]) -> None:
    import torch

    eager_model, compiled_model = make(), make()
    compiled_model.load_state_dict(eager_model.state_dict())
    g = torch.Generator().manual_seed(1)
    x = torch.randn(*shape, generator=g).to(device)
    y = torch.randint(0, 10, (shape[0],), generator=g).to(device)
    breaks, reasons = _explain(make(), x)  # a model built outside the explained call: building is not traced
    compiled = torch.compile(compiled_model, fullgraph=True, backend=backend)
    same = True
    for _ in range(3):  # three steps: the layers' step counters must advance alike
        le, ge = _step(eager_model, x, y)
        lc, gc = _step(compiled, x, y)
        same = same and same_bits(le, lc) and all(same_bits(a, b) for a, b in zip(ge, gc, strict=True))
    ok = breaks == 0 and same
    record(
        f"compile-step-{name}",
        "PASS" if ok else "FAIL",
        f"{breaks} graph breaks {reasons}; 3 steps, loss and grads bit-equal to eager: {same}",
    )


def check_triton_op(device: str) -> None:
    import torch

    import xdrop.torch as xt
    from xdrop._kernels.torch import _ops as _torch_ops

    # The layers alone: a Linear's matmul rounds differently on the GPU than on the CPU.
    model = torch.nn.Sequential(xt.Dropout(0.5, seed=21), xt.Dropout(0.2, seed=22)).to(device)
    cpu = torch.nn.Sequential(xt.Dropout(0.5, seed=21), xt.Dropout(0.2, seed=22))
    x = torch.randn(64, 64, generator=torch.Generator().manual_seed(4))
    model(x.to(device))  # the first CUDA tensor registers the kernel
    if not _torch_ops._cuda_kernels:
        record("triton-op", "FAIL", "no CUDA kernel registered for torch.ops.xdrop.dropout")
        return
    (kernel,) = _torch_ops._cuda_kernels
    calls: list[Any] = []

    def counted(*args: Any) -> Any:
        out = kernel(*args)
        calls.append(out is not None)
        return out

    _torch_ops.register_cuda_kernel(counted)
    try:
        torch.cuda.synchronize()
        outs = [model(x.to(device)) for _ in range(2)]
    finally:
        _torch_ops.register_cuda_kernel(kernel)
    expected = [cpu(x) for _ in range(3)][1:]
    same = all(same_bits(a, b) for a, b in zip(outs, expected, strict=True))
    on_device = all(m.step.device.type == "cuda" for m in model if hasattr(m, "step"))
    ok = calls == [True] * 4 and same and on_device
    record("triton-op", "PASS" if ok else "FAIL", f"Triton kernel handled {calls}; bits equal to CPU: {same}")


def check_cuda_graph(device: str) -> None:
    import torch

    model, eager = _model(device, 11), _model(device, 11)
    g = torch.Generator().manual_seed(2)
    static_x = torch.randn(64, 64, generator=g).to(device)
    static_y = torch.randint(0, 10, (64,), generator=g).to(device)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):  # warm-up outside the graph, as torch's recipe asks
            _step(model, static_x, static_y)
    torch.cuda.current_stream().wait_stream(side)
    eager.load_state_dict(model.state_dict())
    for p in model.parameters():
        p.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_loss = torch.nn.functional.cross_entropy(model(static_x), static_y)
        static_loss.backward()
    replays = []
    for _ in range(2):
        graph.replay()
        torch.cuda.synchronize()
        replays.append((static_loss.clone(), [p.grad.clone() for p in model.parameters()]))
    eagers = [_step(eager, static_x, static_y) for _ in range(2)]

    def equal(a: Any, b: Any) -> bool:
        return same_bits(a[0], b[0]) and all(same_bits(u, v) for u, v in zip(a[1], b[1], strict=True))

    first, second, frozen = equal(replays[0], eagers[0]), equal(replays[1], eagers[1]), equal(replays[0], replays[1])
    detail = (
        f"replay 1 == eager step: {first}; replay 2 == eager next step: {second}; "
        f"replays identical (masks do not advance): {frozen}"
    )
    record("cuda-graph", "PASS" if first and second and not frozen else "FAIL", detail)


class _NoCupy:
    """A meta-path finder under which CuPy is not installed."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "cupy" or name.startswith("cupy."):
            raise ModuleNotFoundError(f"No module named {name!r} (masked by gpu_compile_check --no-cupy)", name=name)
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument("--no-cupy", action="store_true", help="mask CuPy before xdrop loads")
    parser.add_argument("--device", default="cuda", help="cuda (default), or cpu to try the compile checks here")
    parser.add_argument("--backend", default="inductor", help="torch.compile backend (default inductor)")
    args = parser.parse_args(argv)
    if args.no_cupy:
        # A finder that refuses cupy: ``import cupy`` raises ImportError and "cupy" stays out of
        # sys.modules (array-api-compat reads sys.modules, so a None entry there would break it).
        sys.meta_path.insert(0, _NoCupy())
    try:
        import torch
    except ImportError:
        print("SKIP: torch is not installed")
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print("SKIP: no CUDA device (torch.cuda.is_available() is False); nothing to check here")
        return 0
    print(f"torch {torch.__version__}, device {args.device}", end="")
    print(f" ({torch.cuda.get_device_name(0)})" if args.device == "cuda" else "", f"no-cupy={args.no_cupy}")
    guarded("ops", check_ops)
    if args.no_cupy:
        guarded("no-cupy", lambda: check_no_cupy(args.device))
    check_compile_functional(args.device, args.backend)
    guarded(
        "compile-step-mlp",
        lambda: check_compile_step(args.device, args.backend, "mlp", lambda: _model(args.device, 3), (64, 64)),
    )
    guarded(
        "compile-step-every-layer",
        lambda: check_compile_step(
            args.device, args.backend, "every-layer", lambda: _layers_model(args.device), (4, 3, 8, 8)
        ),
    )
    if args.device == "cuda":
        guarded("attention", lambda: check_attention(args.device))
        guarded("triton-op", lambda: check_triton_op(args.device))
        guarded("cuda-graph", lambda: check_cuda_graph(args.device))
    else:
        record("triton-op", "SKIP", "needs a CUDA device")
        record("cuda-graph", "SKIP", "needs a CUDA device")
    failed = [r["check"] for r in RESULTS if r["status"] == "FAIL"]
    print(f"\n{len(RESULTS)} checks, {len(failed)} failed" + (f": {', '.join(failed)}" if failed else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": args.device, "no_cupy": args.no_cupy, "results": RESULTS}, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
