"""Every bad input to every public function: one table, one test per row.

``CASES`` is the single source of the table in ``docs/bad-inputs.md``; a test
checks the page matches it, and ``python tests/test_bad_inputs.py --write``
regenerates the page's table. Each row's test checks the exception type and
the exact message, that no argument was mutated and that no Generator advanced
(nothing half-written).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import xdrop
from xdrop import cs231n
from xdrop._functional._variants import RankError
from xdrop.random import philox4x32

DOC = Path(__file__).resolve().parent.parent / "docs" / "bad-inputs.md"
REGENERATE = "PYTHONPATH=. python tests/test_bad_inputs.py --write"
BEGIN = f"<!-- BEGIN TABLE: generated from tests/test_bad_inputs.py ({REGENERATE}) -->"
END = "<!-- END TABLE -->"

Call = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]


@dataclass(frozen=True)
class Case:
    function: str  # as a user writes it
    bad: str  # the bad input, in words
    build: Callable[[], Call]  # fresh arguments for each run
    error: type[Exception]
    message: str  # the exact str() of the exception
    needs_torch: bool = False
    skip_if: Callable[[], str | None] = lambda: None  # a reason to skip on this host, or None


def torch():
    return pytest.importorskip("torch", reason="needs a second array library (torch)")


def x34() -> np.ndarray:
    return np.arange(12.0).reshape(3, 4)


def gen() -> xdrop.Generator:
    return xdrop.Generator(5, step=7)


def exhausted() -> xdrop.Generator:
    g = xdrop.Generator(1, step=2**64 - 1)
    g.take_step()  # the last step is usable; after it the Generator is exhausted
    return g


def forward_cache(x: Any) -> xdrop.DropoutCache:
    return xdrop.dropout_forward(x, 0.5, seed=1)[1]


def cuda_present() -> str | None:
    t = pytest.importorskip("torch", reason="needs torch")
    return "this host has a CUDA device" if t.cuda.is_available() else None


def dropout_case(bad, kwargs, error, message, x=x34, **extra) -> Case:
    """A dropout row: x34() (or ``x()``) with p=0.5 and a fresh Generator, updated by ``kwargs``."""
    return Case(
        "dropout", bad, lambda: (xdrop.dropout, (x(),), {"p": 0.5, "seed": gen(), **kwargs}), error, message, **extra
    )


def forward_case(bad, kwargs, error, message, x=x34, **extra) -> Case:
    return Case(
        "dropout_forward",
        bad,
        lambda: (xdrop.dropout_forward, (x(),), {"p": 0.5, "seed": gen(), **kwargs}),
        error,
        message,
        **extra,
    )


def backward_case(bad, dout, cache, error, message, **extra) -> Case:
    return Case(
        "dropout_backward", bad, lambda: (xdrop.dropout_backward, (dout(), cache()), {}), error, message, **extra
    )


def mask_case(bad, kwargs, error, message, **extra) -> Case:
    """A keep_mask row; ``kwargs`` may be a function, called when the row runs."""

    def build() -> Call:
        more = kwargs() if callable(kwargs) else kwargs
        return xdrop.keep_mask, (), {"shape": (3, 4), "p": 0.5, "seed": gen(), "xp": np, **more}

    return Case("keep_mask", bad, build, error, message, **extra)


def variant_case(name, bad, kwargs, error, message, x=x34, **extra) -> Case:
    """A row for ``xdrop.<name>``: x34() (or ``x()``) with p=0.5 and a fresh Generator, updated by ``kwargs``."""

    def build() -> Call:
        more = kwargs() if callable(kwargs) else kwargs
        return getattr(xdrop, name), (x(),), {"p": 0.5, "seed": gen(), **more}

    return Case(name, bad, build, error, message, **extra)


def matrix(rows: Any) -> Any:
    with warnings.catch_warnings():  # NumPy discourages the class this row is about
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        return np.matrix(rows)


def dask_unknown_chunks() -> Any:
    da = pytest.importorskip("dask.array", reason="needs dask")
    x = da.ones(6, chunks=3)
    return x[x > 0]  # boolean indexing: chunk sizes unknown until computed


def dask_ones() -> Any:
    return pytest.importorskip("dask.array", reason="needs dask").ones((3, 4), chunks=2)


def jitted(fn: Callable[..., Any], **kwargs: Any) -> Call:
    """``jax.jit`` of ``fn(x, **kwargs)`` applied to a JAX array: x is a tracer inside."""
    jax = pytest.importorskip("jax", reason="needs jax")
    return jax.jit(lambda a: fn(a, **kwargs)), (jax.numpy.ones(4),), {}


def xt() -> Any:
    """``xdrop.torch`` (imports torch)."""
    torch()
    import xdrop.torch

    return xdrop.torch


def layer_case(function: str, bad: str, build: Callable[[], Call], error: type[Exception], message: str) -> Case:
    return Case(function, bad, build, error, message, needs_torch=True)


# Layers: the constructors' arguments and the forward's input.
LAYER_CASES: list[Case] = [
    layer_case(
        "torch.Dropout",
        "p above one",
        lambda: (xt().Dropout, (1.5,), {}),
        ValueError,
        "p must be a probability in [0, 1], got p=1.5",
    ),
    layer_case(
        "torch.Dropout",
        "inplace an int",
        lambda: (xt().Dropout, (0.5,), {"inplace": 1}),
        TypeError,
        "inplace must be a bool, got inplace=1",
    ),
    layer_case(
        "torch.Dropout",
        "seed negative",
        lambda: (xt().Dropout, (0.5,), {"seed": -1}),
        ValueError,
        "seed must be an integer in [0, 2**64), got seed=-1",
    ),
    layer_case(
        "torch.Dropout",
        "seed a float",
        lambda: (xt().Dropout, (0.5,), {"seed": 1.5}),
        TypeError,
        "seed must be an integer in [0, 2**64), got seed=1.5 of type float",
    ),
    layer_case(
        "torch.Dropout (forward)",
        "x an int64 tensor",
        lambda: (xt().Dropout(0.5, seed=1), (torch().ones(4, dtype=torch().int64),), {}),
        TypeError,
        "x must have a real floating dtype, got x.dtype=torch.int64",
    ),
    layer_case(
        "torch.DropPath",
        "scale_by_keep None",
        lambda: (xt().DropPath, (0.5,), {"scale_by_keep": None}),
        TypeError,
        "scale_by_keep must be a bool, got scale_by_keep=None",
    ),
    layer_case(
        "torch.replace_dropout",
        "module an int",
        lambda: (xt().replace_dropout, (3,), {}),
        TypeError,
        "module must be a torch.nn.Module, got module of type int",
    ),
    layer_case(
        "torch.replace_dropout",
        "a transformers model whose config.xdrop is not xdrop's",
        lambda: (xt().replace_dropout, (tiny_gpt2([1, 2]),), {"seed": 1}),
        ValueError,
        'GPT2Model.config.xdrop must be the streams\' state xdrop 1 writes ({"format": 1, "seed": ..., '
        '"streams": {...}}), got [1, 2]',
    ),
    layer_case(
        "torch.replace_dropout",
        "seed other than the one config.xdrop was saved with",
        lambda: (xt().replace_dropout, (tiny_gpt2({"format": 1, "seed": 7, "streams": {}}),), {"seed": 5}),
        ValueError,
        "GPT2Model.config.xdrop holds the streams of a run with seed=7, not seed=5: pass seed=7 (or None) "
        "to resume it, or delete config.xdrop to start new streams",
    ),
    layer_case(
        "torch.onnx_export",
        "f given (it returns the program)",
        lambda: (xt().onnx_export, (torch().nn.Identity(), (torch().ones(2),)), {"f": "model.onnx"}),
        TypeError,
        "xdrop.torch.onnx_export takes no f= argument: it exports with dynamo=True and returns the ONNXProgram "
        "(save it with program.save(path)), got f='model.onnx'",
    ),
    layer_case(
        "torch.replace_dropout",
        "verbose an int",
        lambda: (xt().replace_dropout, (torch().nn.Linear(2, 2),), {"seed": 1, "verbose": 1}),
        TypeError,
        "verbose must be a bool, got verbose=1",
    ),
    layer_case(
        "torch.dropout_report",
        "module an int",
        lambda: (xt().dropout_report, (3,), {}),
        TypeError,
        "module must be a torch.nn.Module, got module of type int",
    ),
    layer_case(
        "torch.MultiheadAttention",
        "seed negative",
        lambda: (xt().MultiheadAttention, (8, 2), {"seed": -1}),
        ValueError,
        "seed must be an integer in [0, 2**64), got seed=-1",
    ),
    layer_case(
        "torch.ScaledDotProductAttention",
        "dropout_p above one",
        lambda: (xt().ScaledDotProductAttention, (1.5,), {}),
        ValueError,
        "dropout_p must be a probability in [0, 1], got dropout_p=1.5",
    ),
]


def tiny_gpt2(entry: Any) -> Any:
    """A transformers GPT-2 from a tiny config whose ``xdrop`` entry (what config.json held) is ``entry``."""
    transformers = pytest.importorskip("transformers", reason="needs transformers")
    config = transformers.GPT2Config(n_embd=8, n_layer=1, n_head=2, vocab_size=16, n_positions=8)
    config.xdrop = entry
    return transformers.GPT2Model(config)


def generator_case(bad, args, kwargs, error, message) -> Case:
    return Case("Generator", bad, lambda: (xdrop.Generator, args, kwargs), error, message)


def philox_case(bad, counter, key, error, message, rounds=10, **extra) -> Case:
    return Case(
        "random.philox4x32",
        bad,
        lambda: (philox4x32, (counter(), key()), {"rounds": rounds}),
        error,
        message,
        **extra,
    )


def cs_forward_case(bad, x, param, error, message) -> Case:
    return Case("cs231n.dropout_forward", bad, lambda: (cs231n.dropout_forward, (x(), param()), {}), error, message)


def cs_backward_case(bad, dout, cache, error, message) -> Case:
    return Case(
        "cs231n.dropout_backward", bad, lambda: (cs231n.dropout_backward, (dout(), cache()), {}), error, message
    )


def xf() -> Any:
    """``xdrop.flax`` (imports jax and flax)."""
    pytest.importorskip("flax", reason="needs flax")
    import xdrop.flax

    return xdrop.flax


def linen_training_apply() -> Call:
    """A training ``apply`` of a seeded LinenDropout that cannot write its step back (no ``mutable``)."""
    layer = xf().LinenDropout(0.5, seed=1, deterministic=False)
    ones = pytest.importorskip("jax.numpy").ones(4)
    variables = layer.init({}, ones)
    return layer.apply, (variables, ones), {}


FLAX_CASES: list[Case] = [
    Case(
        "flax.Dropout",
        "deterministic a string",
        lambda: (xf().Dropout, (0.5,), {"seed": 1, "deterministic": "no"}),
        TypeError,
        "deterministic must be True, False or None, got deterministic='no' of type str",
    ),
    Case(
        "flax.Dropout",
        "rngs an int",
        lambda: (xf().Dropout, (0.5,), {"rngs": 0}),
        TypeError,
        "rngs must be an nnx.Rngs, an nnx.RngStream or a JAX key, got rngs of type int",
    ),
    Case(
        "flax.Dropout (call)",
        "deterministic None in the constructor and the call",
        lambda: (xf().Dropout(0.5, seed=1, deterministic=None), (np.ones(4, np.float32),), {}),
        ValueError,
        "Dropout has deterministic=None and the call gave none: pass deterministic=True or False to the "
        "constructor or the call, or set it with model.eval() / model.train()",
    ),
    Case(
        "flax.LinenDropout (apply)",
        "training without mutable=['xdrop']",
        linen_training_apply,
        ValueError,
        "LinenDropout with seed=1 advances its step in the 'xdrop' collection at each training call: "
        "apply with mutable=['xdrop'] and pass the returned 'xdrop' variables to the next call (or "
        "deterministic=True); without it every call would draw the same mask",
    ),
]


U64_RANGE = "must be an integer in [0, 2**64), got"
CS_SEED = 'dropout_param["seed"]'
P_REAL = "p must be a real number in [0, 1], got"
P_RANGE = "p must be a probability in [0, 1], got"
NOT_ARRAY = "must be an array (NumPy, PyTorch, CuPy, JAX, Dask, ...), got"
WORDS = (0, 0, 0, 0), (0, 0)
TRAIN = {"mode": "train", "p": 0.5, "seed": 1}
NOT_AN_ARRAY_LIBRARY = types.ModuleType("string_tools")  # a module without array functions (repr has no path)

CASES: list[Case] = [
    # -- dropout (dropout_forward shares every check; a few are repeated for it below) --
    dropout_case("x a list", {}, TypeError, f"x {NOT_ARRAY} x of type list", x=lambda: [1.0, 2.0]),
    dropout_case("x None", {}, TypeError, f"x {NOT_ARRAY} x of type NoneType", x=lambda: None),
    dropout_case("x a Python float", {}, TypeError, f"x {NOT_ARRAY} x of type float", x=lambda: 1.0),
    dropout_case(
        "x an int64 array",
        {},
        TypeError,
        "x must have a real floating dtype, got x.dtype=int64",
        x=lambda: np.arange(4),
    ),
    dropout_case(
        "x a bool array",
        {},
        TypeError,
        "x must have a real floating dtype, got x.dtype=bool",
        x=lambda: np.ones(3, bool),
    ),
    dropout_case(
        "x a complex array",
        {},
        TypeError,
        "x must have a real floating dtype, got x.dtype=complex64",
        x=lambda: np.ones(3, np.complex64),
    ),
    dropout_case(
        "x a torch int32 tensor",
        {},
        TypeError,
        "x must have a real floating dtype, got x.dtype=torch.int32",
        x=lambda: torch().arange(4, dtype=torch().int32),
        needs_torch=True,
    ),
    dropout_case(
        "x a torch bool tensor",
        {},
        TypeError,
        "x must have a real floating dtype, got x.dtype=torch.bool",
        x=lambda: torch().ones(4, dtype=torch().bool),
        needs_torch=True,
    ),
    dropout_case("p above one", {"p": 1.5}, ValueError, f"{P_RANGE} p=1.5"),
    dropout_case("p negative", {"p": -0.1}, ValueError, f"{P_RANGE} p=-0.1"),
    dropout_case("p NaN", {"p": math.nan}, ValueError, f"{P_RANGE} p=nan"),
    dropout_case("p +inf", {"p": math.inf}, ValueError, f"{P_RANGE} p=inf"),
    dropout_case("p -inf", {"p": -math.inf}, ValueError, f"{P_RANGE} p=-inf"),
    dropout_case("p a Fraction above one", {"p": Fraction(3, 2)}, ValueError, f"{P_RANGE} p=Fraction(3, 2)"),
    dropout_case("p a Decimal above one", {"p": Decimal("1.5")}, ValueError, f"{P_RANGE} p=Decimal('1.5')"),
    dropout_case("p a string", {"p": "0.5"}, TypeError, f"{P_REAL} p='0.5' of type str"),
    dropout_case("p a bool", {"p": True}, TypeError, f"{P_REAL} p=True of type bool"),
    dropout_case("p None", {"p": None}, TypeError, f"{P_REAL} p=None of type NoneType"),
    dropout_case("p complex", {"p": 0.5j}, TypeError, f"{P_REAL} p=0.5j of type complex"),
    dropout_case("p a 0-d array", {"p": np.array(0.5)}, TypeError, f"{P_REAL} p=array(0.5) of type ndarray"),
    dropout_case("seed negative", {"seed": -1}, ValueError, f"seed {U64_RANGE} seed=-1"),
    dropout_case("seed 2**64", {"seed": 2**64}, ValueError, f"seed {U64_RANGE} seed=18446744073709551616"),
    dropout_case("seed a float", {"seed": 1.0}, TypeError, f"seed {U64_RANGE} seed=1.0 of type float"),
    dropout_case("seed a string", {"seed": "1"}, TypeError, f"seed {U64_RANGE} seed='1' of type str"),
    dropout_case("seed a bool", {"seed": True}, TypeError, f"seed {U64_RANGE} seed=True of type bool"),
    dropout_case("step negative", {"seed": 1, "step": -2}, ValueError, f"step {U64_RANGE} step=-2"),
    dropout_case("step 2**64", {"seed": 1, "step": 2**64}, ValueError, f"step {U64_RANGE} step=18446744073709551616"),
    dropout_case("step a float", {"seed": 1, "step": 0.5}, TypeError, f"step {U64_RANGE} step=0.5 of type float"),
    dropout_case("step None", {"seed": 1, "step": None}, TypeError, f"step {U64_RANGE} step=None of type NoneType"),
    dropout_case(
        "step given with a Generator seed",
        {"step": 3},
        ValueError,
        "step must be left at 0 when seed is a Generator (it supplies the step), got step=3",
    ),
    Case(
        "dropout",
        "seed an exhausted Generator (step 2**64 - 1 used)",
        lambda: (xdrop.dropout, (x34(), 0.5), {"seed": exhausted()}),
        ValueError,
        "Generator(seed=1) has used every step up to 2**64 - 1; make a new Generator",
    ),
    dropout_case(
        "training None",
        {"training": None},
        TypeError,
        "training must be True or False, got training=None of type NoneType",
    ),
    dropout_case(
        "out a list",
        {"out": [0.0] * 12},
        TypeError,
        "out must be a NumPy array of x's shape and dtype, got out of type list",
    ),
    dropout_case(
        "out of another dtype",
        {"out": np.zeros((3, 4), np.float32)},
        TypeError,
        "out must have x's dtype float64, got out.dtype=float32",
    ),
    dropout_case(
        "out of another shape",
        {"out": np.zeros((4, 3))},
        ValueError,
        "out must have x's shape (3, 4), got out.shape=(4, 3)",
    ),
    dropout_case(
        "out read-only",
        {"out": np.broadcast_to(np.zeros(4), (3, 4))},
        ValueError,
        "out must be writeable, got a read-only out",
    ),
    dropout_case(
        "out given for a torch tensor",
        {"out": np.zeros(4, np.float32)},
        TypeError,
        "out= is supported for NumPy arrays only, got x of type Tensor",
        x=lambda: torch().ones(4),
        needs_torch=True,
    ),
    dropout_case(
        "training a string",
        {"training": "False"},
        TypeError,
        "training must be True or False, got training='False' of type str",
    ),
    dropout_case(
        "noise_shape entry neither 1 nor x's size",
        {"noise_shape": (3, 2)},
        ValueError,
        "noise_shape[1] must be None, 1 or x.shape[1]=4, got noise_shape=(3, 2)",
    ),
    dropout_case(
        "noise_shape too short",
        {"noise_shape": (3,)},
        ValueError,
        "noise_shape must have one entry per axis of x.shape=(3, 4), got noise_shape=(3,)",
    ),
    dropout_case(
        "noise_shape an int",
        {"noise_shape": 4},
        ValueError,
        "noise_shape must have one entry per axis of x.shape=(3, 4), got noise_shape=4",
    ),
    dropout_case(
        "noise_shape entry negative",
        {"noise_shape": (3, -1)},
        ValueError,
        "noise_shape[1] must be None, 1 or x.shape[1]=4, got noise_shape=(3, -1)",
    ),
    dropout_case(
        "noise_shape entry a bool",
        {"noise_shape": (True, 4)},
        ValueError,
        "noise_shape[0] must be None, 1 or x.shape[0]=3, got noise_shape=(True, 4)",
    ),
    dropout_case(
        "impl unknown",
        {"impl": "fast"},
        ValueError,
        "impl must be one of ('auto', 'reference', 'blocked', 'compiled', 'cuda'), got impl='fast'",
    ),
    dropout_case(
        "impl None",
        {"impl": None},
        ValueError,
        "impl must be one of ('auto', 'reference', 'blocked', 'compiled', 'cuda'), got impl=None",
    ),
    # -- dropout_forward --
    forward_case(
        "seed None (a cache needs a seed)", {"seed": None}, TypeError, f"seed {U64_RANGE} seed=None of type NoneType"
    ),
    forward_case(
        "x a bool array",
        {},
        TypeError,
        "x must have a real floating dtype, got x.dtype=bool",
        x=lambda: np.ones(3, bool),
    ),
    forward_case("p NaN", {"p": math.nan}, ValueError, f"{P_RANGE} p=nan"),
    forward_case("step 2**64", {"seed": 1, "step": 2**64}, ValueError, f"step {U64_RANGE} step=18446744073709551616"),
    forward_case(
        "noise_shape entry neither 1 nor x's size",
        {"noise_shape": (2, 4)},
        ValueError,
        "noise_shape[0] must be None, 1 or x.shape[0]=3, got noise_shape=(2, 4)",
    ),
    forward_case(
        "impl unknown",
        {"impl": "fast"},
        ValueError,
        "impl must be one of ('auto', 'reference', 'blocked', 'compiled', 'cuda'), got impl='fast'",
    ),
    # -- dropout_backward --
    backward_case(
        "cache None",
        x34,
        lambda: None,
        TypeError,
        "cache must be the DropoutCache returned by dropout_forward, got NoneType",
    ),
    backward_case(
        "cache from cs231n",
        x34,
        lambda: cs231n.dropout_forward(x34(), dict(TRAIN))[1],
        TypeError,
        "cache must be the DropoutCache returned by dropout_forward, got tuple",
    ),
    backward_case(
        "dout of another shape",
        lambda: np.ones(5),
        lambda: forward_cache(np.ones(4)),
        ValueError,
        "dout must have the forward's shape (4,), got dout.shape=(5,)",
    ),
    backward_case(
        "dout transposed",
        lambda: np.ones((4, 3)),
        lambda: forward_cache(x34()),
        ValueError,
        "dout must have the forward's shape (3, 4), got dout.shape=(4, 3)",
    ),
    backward_case(
        "dout of another float dtype",
        lambda: np.ones(4, np.float32),
        lambda: forward_cache(np.ones(4)),
        TypeError,
        "dout must have the forward's dtype float64, got dout.dtype=float32",
    ),
    backward_case(
        "dout an int array",
        lambda: np.ones(4, np.int32),
        lambda: forward_cache(np.ones(4)),
        TypeError,
        "dout must have a real floating dtype, got dout.dtype=int32",
    ),
    backward_case(
        "dout a list",
        lambda: [1.0] * 4,
        lambda: forward_cache(np.ones(4)),
        TypeError,
        f"dout {NOT_ARRAY} dout of type list",
    ),
    backward_case(
        "dout from another library (torch, forward numpy)",
        lambda: torch().ones(4, dtype=torch().float64),
        lambda: forward_cache(np.ones(4)),
        TypeError,
        "dout must be a numpy array like the forward's x, got a torch array",
        needs_torch=True,
    ),
    backward_case(
        "dout from another library (numpy, forward torch)",
        lambda: np.ones(4),
        lambda: forward_cache(torch().ones(4, dtype=torch().float64)),
        TypeError,
        "dout must be a torch array like the forward's x, got a numpy array",
        needs_torch=True,
    ),
    backward_case(
        "dout on another device (torch meta, forward cpu)",
        lambda: torch().ones(4, device="meta"),
        lambda: forward_cache(torch().ones(4)),
        ValueError,
        "dout must be on the forward's device cpu, got device meta",
        needs_torch=True,
    ),
    Case(
        "DropoutCache",
        "a hand-made cache with seed out of range",
        lambda: (xdrop.DropoutCache, (-1, 0, 0.5, (4,), np.float64, "numpy", "cpu", (4,)), {}),
        ValueError,
        f"cache.seed {U64_RANGE} cache.seed=-1",
    ),
    Case(
        "DropoutCache",
        "a hand-made cache with p out of range",
        lambda: (xdrop.DropoutCache, (1, 0, 2.0, (4,), np.float64, "numpy", "cpu", (4,)), {}),
        ValueError,
        "cache.p must be a probability in [0, 1], got cache.p=2.0",
    ),
    # -- keep_mask --
    mask_case(
        "shape with a negative size",
        {"shape": (2, -1)},
        TypeError,
        "shape must be a tuple of non-negative ints, got shape=(2, -1)",
    ),
    mask_case("shape a float", {"shape": 2.5}, TypeError, "shape must be a tuple of non-negative ints, got shape=2.5"),
    mask_case(
        "shape with a float",
        {"shape": (2, 2.0)},
        TypeError,
        "shape must be a tuple of non-negative ints, got shape=(2, 2.0)",
    ),
    mask_case(
        "shape a string", {"shape": "ab"}, TypeError, "shape must be a tuple of non-negative ints, got shape='ab'"
    ),
    mask_case("shape None", {"shape": None}, TypeError, "shape must be a tuple of non-negative ints, got shape=None"),
    mask_case(
        "shape with 2**64 elements",
        {"shape": (2**32, 2**32)},
        ValueError,
        "shape must have fewer than 2**64 elements (the stream's flat indices are 64-bit), "
        "got shape=(4294967296, 4294967296) with 18446744073709551616 elements",
    ),
    mask_case(
        "shape with more than 2**64 elements",
        {"shape": (3, 2**63)},
        ValueError,
        "shape must have fewer than 2**64 elements (the stream's flat indices are 64-bit), "
        "got shape=(3, 9223372036854775808) with 27670116110564327424 elements",
    ),
    mask_case("p above one", {"p": 1.5}, ValueError, f"{P_RANGE} p=1.5"),
    mask_case("seed None", {"seed": None}, TypeError, f"seed {U64_RANGE} seed=None of type NoneType"),
    mask_case("step negative", {"seed": 1, "step": -1}, ValueError, f"step {U64_RANGE} step=-1"),
    mask_case("xp a string", {"xp": "numpy"}, TypeError, "xp must be an array namespace module, got xp='numpy'"),
    mask_case("xp None", {"xp": None}, TypeError, "xp must be an array namespace module, got xp=None"),
    mask_case(
        "xp a module that is not an array library",
        {"xp": NOT_AN_ARRAY_LIBRARY},
        TypeError,
        "xp must be an array namespace module, got xp=<module 'string_tools'>",
    ),
    mask_case(
        "device unknown to NumPy",
        {"device": "cuda"},
        ValueError,
        "device must be a device of the numpy namespace, got device='cuda'",
    ),
    mask_case(
        "device absent (torch cuda on a CPU-only host)",
        lambda: {"xp": torch(), "device": "cuda"},
        ValueError,
        "device must be a device of the torch namespace, got device='cuda'",
        needs_torch=True,
        skip_if=cuda_present,
    ),
    mask_case(
        "impl unknown",
        {"impl": "fast"},
        ValueError,
        "impl must be one of ('auto', 'reference', 'blocked', 'compiled', 'cuda'), got impl='fast'",
    ),
    # -- Generator --
    generator_case("seed negative", (-1,), {}, ValueError, f"seed {U64_RANGE} seed=-1"),
    generator_case("seed 2**64", (2**64,), {}, ValueError, f"seed {U64_RANGE} seed=18446744073709551616"),
    generator_case("seed a float", (1.5,), {}, TypeError, f"seed {U64_RANGE} seed=1.5 of type float"),
    generator_case("seed a string", ("1",), {}, TypeError, f"seed {U64_RANGE} seed='1' of type str"),
    generator_case("seed None", (None,), {}, TypeError, f"seed {U64_RANGE} seed=None of type NoneType"),
    generator_case("seed a bool", (True,), {}, TypeError, f"seed {U64_RANGE} seed=True of type bool"),
    generator_case("step negative", (1,), {"step": -1}, ValueError, f"step {U64_RANGE} step=-1"),
    generator_case("step 2**64", (1,), {"step": 2**64}, ValueError, f"step {U64_RANGE} step=18446744073709551616"),
    generator_case("step a float", (1,), {"step": 0.5}, TypeError, f"step {U64_RANGE} step=0.5 of type float"),
    Case(
        "Generator.take_step",
        "an exhausted Generator",
        lambda: (exhausted().take_step, (), {}),
        ValueError,
        "Generator(seed=1) has used every step up to 2**64 - 1; make a new Generator",
    ),
    # -- random.philox4x32 --
    philox_case(
        "counter an int",
        lambda: 5,
        lambda: (0, 0),
        TypeError,
        "counter must be a sequence of 4 uint32 arrays or ints, got counter=5",
    ),
    philox_case(
        "counter of 3 words",
        lambda: (0, 0, 0),
        lambda: (0, 0),
        TypeError,
        "counter must be a sequence of 4 uint32 arrays or ints, got counter=(0, 0, 0)",
    ),
    philox_case(
        "counter a string",
        lambda: "abcd",
        lambda: (0, 0),
        TypeError,
        "counter must be a sequence of 4 uint32 arrays or ints, got counter='abcd'",
    ),
    philox_case(
        "key of 1 word",
        lambda: (0, 0, 0, 0),
        lambda: (0,),
        TypeError,
        "key must be a sequence of 2 uint32 arrays or ints, got key=(0,)",
    ),
    philox_case(
        "counter word 2**32",
        lambda: (2**32, 0, 0, 0),
        lambda: (0, 0),
        ValueError,
        "counter[0] must be an integer in [0, 2**32) or a uint32 array, got counter[0]=4294967296",
    ),
    philox_case(
        "key word negative",
        lambda: (0, 0, 0, 0),
        lambda: (0, -1),
        ValueError,
        "key[1] must be an integer in [0, 2**32) or a uint32 array, got key[1]=-1",
    ),
    philox_case(
        "counter word a float",
        lambda: (0, 1.0, 0, 0),
        lambda: (0, 0),
        TypeError,
        "counter[1] must be an integer in [0, 2**32) or a uint32 array, got counter[1]=1.0 of type float",
    ),
    philox_case(
        "counter word a bool",
        lambda: (0, 0, True, 0),
        lambda: (0, 0),
        TypeError,
        "counter[2] must be an integer in [0, 2**32) or a uint32 array, got counter[2]=True of type bool",
    ),
    philox_case(
        "counter word an int64 array",
        lambda: (np.arange(3), 0, 0, 0),
        lambda: (0, 0),
        TypeError,
        "counter[0] must have dtype uint32, got counter[0].dtype=int64",
    ),
    philox_case(
        "key word a float32 array",
        lambda: (0, 0, 0, 0),
        lambda: (np.ones(2, np.float32), 0),
        TypeError,
        "key[0] must have dtype uint32, got key[0].dtype=float32",
    ),
    philox_case(
        "words that do not broadcast",
        lambda: (np.zeros(3, np.uint32), 0, 0, 0),
        lambda: (np.zeros(2, np.uint32), 0),
        ValueError,
        "counter and key words must broadcast together, got shapes [(3,), (), (), ()] and [(2,), ()]",
    ),
    philox_case(
        "words from two libraries",
        lambda: (np.zeros(3, np.uint32), 0, 0, 0),
        lambda: (torch().zeros(3, dtype=torch().uint32), 0),
        TypeError,
        "expected arrays of one supported library, got numpy.ndarray, torch.Tensor",
        needs_torch=True,
    ),
    philox_case(
        "rounds 0",
        lambda: WORDS[0],
        lambda: WORDS[1],
        ValueError,
        "rounds must be an integer in [1, 16], got rounds=0",
        rounds=0,
    ),
    philox_case(
        "rounds 17",
        lambda: WORDS[0],
        lambda: WORDS[1],
        ValueError,
        "rounds must be an integer in [1, 16], got rounds=17",
        rounds=17,
    ),
    philox_case(
        "rounds a float",
        lambda: WORDS[0],
        lambda: WORDS[1],
        TypeError,
        "rounds must be an integer in [1, 16], got rounds=10.0 of type float",
        rounds=10.0,
    ),
    philox_case(
        "rounds a bool",
        lambda: WORDS[0],
        lambda: WORDS[1],
        TypeError,
        "rounds must be an integer in [1, 16], got rounds=True of type bool",
        rounds=True,
    ),
    philox_case(
        "rounds None",
        lambda: WORDS[0],
        lambda: WORDS[1],
        TypeError,
        "rounds must be an integer in [1, 16], got rounds=None of type NoneType",
        rounds=None,
    ),
    philox_case(
        "rounds 2**70",
        lambda: WORDS[0],
        lambda: WORDS[1],
        ValueError,
        "rounds must be an integer in [1, 16], got rounds=1180591620717411303424",
        rounds=2**70,
    ),
    philox_case(
        "counter one uint32 array of 4 words (not a sequence of words)",
        lambda: np.zeros(4, np.uint32),
        lambda: (0, 0),
        TypeError,
        "counter must be a sequence of 4 uint32 arrays or ints, got counter=array([0, 0, 0, 0], dtype=uint32)",
    ),
    philox_case(
        "key a long list (shown elided)",
        lambda: WORDS[0],
        lambda: list(range(100)),
        TypeError,
        "key must be a sequence of 2 uint32 arrays or ints, got key=[0, 1, 2, 3, 4, 5, 6, 7,... 97, 98, 99] "
        "(390 characters)",
    ),
    philox_case(
        "key word a uint32 array and counter word an out-of-range int",
        lambda: (0, 0, 0, 2**32 + 1),
        lambda: (np.zeros(3, np.uint32), 0),
        ValueError,
        "counter[3] must be an integer in [0, 2**32) or a uint32 array, got counter[3]=4294967297",
    ),
    # -- cs231n --
    cs_forward_case(
        "dropout_param None",
        x34,
        lambda: None,
        TypeError,
        "dropout_param must be a dict with keys 'p' and 'mode', got NoneType",
    ),
    cs_forward_case(
        "dropout_param a list",
        x34,
        lambda: [0.5, "train"],
        TypeError,
        "dropout_param must be a dict with keys 'p' and 'mode', got list",
    ),
    cs_forward_case(
        "mode unknown",
        x34,
        lambda: {"mode": "eval", "p": 0.5},
        ValueError,
        'dropout_param["mode"] must be "train" or "test", got \'eval\'',
    ),
    cs_forward_case(
        "mode missing", x34, lambda: {"p": 0.5}, ValueError, 'dropout_param["mode"] must be "train" or "test", got None'
    ),
    cs_forward_case(
        "p missing",
        x34,
        lambda: {"mode": "train"},
        TypeError,
        'dropout_param["p"] must be a real number in [0, 1], got dropout_param["p"]=None of type NoneType',
    ),
    cs_forward_case(
        "p above one",
        x34,
        lambda: {"mode": "train", "p": 1.2},
        ValueError,
        'dropout_param["p"] must be a probability in [0, 1], got dropout_param["p"]=1.2',
    ),
    cs_forward_case(
        "p NaN (test mode too)",
        x34,
        lambda: {"mode": "test", "p": math.nan},
        ValueError,
        'dropout_param["p"] must be a probability in [0, 1], got dropout_param["p"]=nan',
    ),
    cs_forward_case(
        "p a string",
        x34,
        lambda: {"mode": "train", "p": "0.5"},
        TypeError,
        'dropout_param["p"] must be a real number in [0, 1], got dropout_param["p"]=\'0.5\' of type str',
    ),
    cs_forward_case(
        "seed negative", x34, lambda: {**TRAIN, "seed": -3}, ValueError, f"{CS_SEED} {U64_RANGE} {CS_SEED}=-3"
    ),
    cs_forward_case(
        "seed a float",
        x34,
        lambda: {**TRAIN, "seed": 1.5},
        TypeError,
        f"{CS_SEED} {U64_RANGE} {CS_SEED}=1.5 of type float",
    ),
    cs_forward_case(
        "x an int array",
        lambda: np.arange(4),
        lambda: dict(TRAIN),
        TypeError,
        "x must have a real floating dtype, got x.dtype=int64",
    ),
    cs_forward_case(
        "x a list (test mode too)",
        lambda: [1.0, 2.0],
        lambda: {"mode": "test", "p": 0.5},
        TypeError,
        f"x {NOT_ARRAY} x of type list",
    ),
    cs_backward_case(
        "cache None",
        x34,
        lambda: None,
        TypeError,
        "cache must be the (dropout_param, cache) pair that dropout_forward returned, got NoneType",
    ),
    cs_backward_case(
        "cache from xdrop.dropout_forward",
        x34,
        lambda: forward_cache(x34()),
        TypeError,
        "cache must be the (dropout_param, cache) pair that dropout_forward returned, got DropoutCache",
    ),
    cs_backward_case(
        "train-mode params with a test-mode cache",
        x34,
        lambda: (dict(TRAIN), None),
        ValueError,
        "cache holds no training-mode forward; pass the cache dropout_forward returned",
    ),
    cs_backward_case(
        "dout of another shape",
        lambda: np.ones(5),
        lambda: cs231n.dropout_forward(np.ones(4), dict(TRAIN))[1],
        ValueError,
        "dout must have the forward's shape (4,), got dout.shape=(5,)",
    ),
]


CHANNEL_FIRST_3D = "(C, L) or 3 dims (N, C, L)"
IMPLS_MSG = "impl must be one of ('auto', 'reference', 'blocked', 'compiled', 'cuda'), got impl="
CASES += [
    # -- contracts of issue 15 --
    dropout_case(
        "p an int beyond binary64 (10**400)",
        {"p": 10**400},
        ValueError,
        f"{P_RANGE} p=" + "1" + "0" * 23 + "...000000000000 (401 characters)",
    ),
    dropout_case(
        "x a numpy.matrix",
        {},
        TypeError,
        f"x {NOT_ARRAY} x of type matrix (numpy.matrix is not supported, its * is a matrix product: "
        "pass numpy.asarray(x))",
        x=lambda: matrix([[1.0, 2.0]]),
    ),
    dropout_case(
        "impl that does not apply (cuda on a NumPy array)",
        {"impl": "cuda"},
        ValueError,
        "impl='cuda' does not apply to numpy arrays on this device",
    ),
    dropout_case(
        "x a torch sparse tensor",
        {},
        TypeError,
        "x must be a dense (strided) tensor, got x.layout=torch.sparse_coo",
        x=lambda: torch().ones(4).to_sparse(),
        needs_torch=True,
    ),
    dropout_case(
        "x a torch float8 tensor",
        {},
        TypeError,
        "x must have a real floating dtype with arithmetic (float16, bfloat16, float32, float64), "
        "got x.dtype=torch.float8_e4m3fn",
        x=lambda: torch().ones(4, dtype=torch().float8_e4m3fn),
        needs_torch=True,
    ),
    dropout_case(
        "x a numpy.longdouble array wider than 64 bits",
        {"p": 0.0},
        TypeError,
        "x must have a real floating dtype of at most 64 bits (float16, bfloat16, float32, float64), "
        "got x.dtype=float128 (128 bits); convert it, e.g. x.astype(numpy.float64)",
        x=lambda: np.ones(4, np.longdouble),
        skip_if=lambda: None if str(np.dtype(np.longdouble)) == "float128" else "numpy.longdouble is not float128 here",
    ),
    dropout_case(
        "x a numpy.ma.MaskedArray",
        {},
        TypeError,
        "x must be a plain array, got x of type numpy.ma.MaskedArray: the result would lose its mask; "
        "pass x.data (or x.filled(...)) and apply x.mask to the result",
        x=lambda: np.ma.masked_array(np.ones(4), mask=[False, True, False, False]),
    ),
    dropout_case(
        "x a Dask array of unknown chunk sizes",
        {},
        ValueError,
        "x must have known chunk sizes, got x.chunks=((nan, nan),); call x.compute_chunk_sizes() first",
        x=dask_unknown_chunks,
    ),
    dropout_case(
        "impl that does not apply (cuda on a Dask array), at call time",
        {"impl": "cuda"},
        ValueError,
        "impl='cuda' does not apply to dask arrays on this device",
        x=dask_ones,
    ),
    Case(
        "dropout",
        "seed a Generator while JAX traces x (jax.jit)",
        lambda: jitted(xdrop.dropout, p=0.5, seed=xdrop.Generator(5, step=7)),
        TypeError,
        "seed=Generator(seed=5, step=7) cannot be used here: while JAX traces x (under jax.jit, grad, vmap, ...) "
        "it would be read once, at trace time, and every call of the compiled function would reuse one mask; "
        "pass an int seed and the step as a traced argument instead, e.g. step=jnp.asarray(i, jnp.uint32)",
    ),
    Case(
        "dropout",
        "seed None while JAX traces x (jax.jit)",
        lambda: jitted(xdrop.dropout, p=0.5),
        TypeError,
        "seed=None cannot be used here: while JAX traces x (under jax.jit, grad, vmap, ...) "
        "it would be read once, at trace time, and every call of the compiled function would reuse one mask; "
        "pass an int seed and the step as a traced argument instead, e.g. step=jnp.asarray(i, jnp.uint32)",
    ),
    Case(
        "DropoutCache",
        "a hand-made cache whose noise_shape does not broadcast to shape",
        lambda: (xdrop.DropoutCache, (1, 0, 0.5, (4,), np.float64, "numpy", "cpu", (4, 1)), {}),
        ValueError,
        "cache.noise_shape must broadcast to the shape (4,): one int per axis, each 1 or that axis' size, "
        "got cache.noise_shape=(4, 1)",
    ),
    Case(
        "dropout_backward",
        "impl that does not apply (cuda on a NumPy array)",
        lambda: (xdrop.dropout_backward, (np.ones(4), forward_cache(np.ones(4))), {"impl": "cuda"}),
        ValueError,
        "impl='cuda' does not apply to numpy arrays on this device",
    ),
    mask_case(
        "shape larger than memory (2**40 elements, reference)",
        {"shape": (2**40,), "impl": "reference"},
        ValueError,
        "shape=(1099511627776,) needs a mask of 1099511627776 bytes, more than the 1000000 bytes of this host's "
        "memory (set XDROP_MAX_MASK_BYTES to change the limit, or use a lazy Dask mask)",
    ),
    mask_case(
        "impl that does not apply (cuda with xp=numpy)",
        {"impl": "cuda"},
        ValueError,
        "impl='cuda' does not apply to numpy arrays on this device",
    ),
    # -- the variants: one gate, so the same checks as dropout --
    *(
        variant_case(
            name,
            "training None",
            {"training": None},
            TypeError,
            "training must be True or False, got training=None of type NoneType",
            x=x_for,
        )
        for name, x_for in [
            ("dropout1d", lambda: np.ones((2, 3, 4))),
            ("dropout2d", lambda: np.ones((2, 3, 4, 4))),
            ("dropout3d", lambda: np.ones((2, 3, 2, 2, 2))),
            ("alpha_dropout", x34),
            ("feature_alpha_dropout", x34),
            ("drop_path", x34),
        ]
    ),
    variant_case(
        "dropout1d",
        "training a string",
        {"training": "no"},
        TypeError,
        "training must be True or False, got training='no' of type str",
        x=lambda: np.ones((2, 3, 4)),
    ),
    variant_case(
        "dropout1d",
        "x of 4 dims",
        {},
        RankError,
        "dropout1d expects x with 2 dims " + CHANNEL_FIRST_3D + ", got x.ndim=4 (x.shape=(1, 2, 3, 4)); "
        "as PyTorch: dropout1d: Expected 2D or 3D input, but received a 4D input.",
        x=lambda: np.ones((1, 2, 3, 4)),
    ),
    variant_case(
        "dropout2d",
        "data_format unknown",
        {"data_format": "NCHW"},
        ValueError,
        "data_format must be one of ('channels_first', 'channels_last'), got data_format='NCHW'",
        x=lambda: np.ones((2, 3, 4, 4)),
    ),
    variant_case(
        "dropout2d",
        "x of 2 dims, channels_last",
        {"data_format": "channels_last"},
        RankError,
        "dropout2d expects x with 3 dims (H, W, C) or 4 dims (N, H, W, C), got x.ndim=2 (x.shape=(3, 4))",
    ),
    variant_case(
        "dropout3d",
        "x an int array",
        {},
        TypeError,
        "x must have a real floating dtype, got x.dtype=int64",
        x=lambda: np.ones((2, 3, 2, 2, 2), int),
    ),
    variant_case("alpha_dropout", "p above one", {"p": 1.5}, ValueError, f"{P_RANGE} p=1.5"),
    variant_case(
        "alpha_dropout",
        "noise_shape entry neither 1 nor x's size",
        {"noise_shape": (3, 2)},
        ValueError,
        "noise_shape[1] must be None, 1 or x.shape[1]=4, got noise_shape=(3, 2)",
    ),
    variant_case("alpha_dropout", "impl unknown", {"impl": "fast"}, ValueError, f"{IMPLS_MSG}'fast'"),
    variant_case(
        "alpha_dropout",
        "impl that does not apply (cuda on a NumPy array)",
        {"impl": "cuda"},
        ValueError,
        "impl='cuda' does not apply to numpy arrays on this device",
    ),
    variant_case(
        "feature_alpha_dropout",
        "x of 1 dim",
        {},
        RankError,
        "feature_alpha_dropout expects x with at least 2 dims (N, C, ...), got x.ndim=1 (x.shape=(4,))",
        x=lambda: np.ones(4),
    ),
    variant_case(
        "drop_path",
        "x 0-d",
        {},
        RankError,
        "drop_path expects x with at least 1 dim (N, ...), got x.ndim=0 (x.shape=())",
        x=lambda: np.ones(()),
    ),
    variant_case(
        "drop_path",
        "scale_by_keep None",
        {"scale_by_keep": None},
        TypeError,
        "scale_by_keep must be True or False, got scale_by_keep=None of type NoneType",
    ),
    variant_case("drop_path", "seed 2**64", {"seed": 2**64}, ValueError, f"seed {U64_RANGE} seed=18446744073709551616"),
    variant_case(
        "dropout2d_forward",
        "seed None (a cache needs a seed)",
        {"seed": None},
        TypeError,
        f"seed {U64_RANGE} seed=None of type NoneType",
        x=lambda: np.ones((2, 3, 4, 4)),
    ),
    variant_case(
        "alpha_dropout_forward",
        "step given with a Generator seed",
        {"step": 3},
        ValueError,
        "step must be left at 0 when seed is a Generator (it supplies the step), got step=3",
    ),
    variant_case("drop_path_forward", "x a list", {}, TypeError, f"x {NOT_ARRAY} x of type list", x=lambda: [1.0, 2.0]),
    *LAYER_CASES,
    *FLAX_CASES,
]


# -- global_shape / global_start: where an array lies in a larger one (xdrop._lib._sharding) --
# (bad input in words, keywords, exception, message); {what} names the shape argument, {shape} its value.
OUTSIDE = (
    "the block lies outside the global array: along axis {axis}, global_start={s} + {what}={d} > global_shape={g} "
)
BAD_BLOCKS = [
    (
        "global_shape without global_start",
        {"global_shape": (6, 11)},
        TypeError,
        "global_shape and global_start must be given together (or neither), got global_shape=(6, 11), "
        "global_start=None",
    ),
    (
        "global_start without global_shape",
        {"global_start": (0, 0)},
        TypeError,
        "global_shape and global_start must be given together (or neither), got global_shape=None, global_start=(0, 0)",
    ),
    (
        "global_shape and global_start of 1 axis, 2 wanted",
        {"global_shape": (6,), "global_start": (0,)},
        ValueError,
        "global_shape and global_start must have one entry per axis of {what}={shape}, got global_shape=(6,), "
        "global_start=(0,)",
    ),
    (
        "global_start of 1 axis, 2 wanted",
        {"global_shape": (6, 11), "global_start": (0,)},
        ValueError,
        "global_shape and global_start must have one entry per axis of {what}={shape}, got global_shape=(6, 11), "
        "global_start=(0,)",
    ),
    (
        "global_start entry negative",
        {"global_shape": (6, 11), "global_start": (-1, 0)},
        ValueError,
        "global_start must be non-negative, got global_start=(-1, 0)",
    ),
    (
        "global_shape entry negative",
        {"global_shape": (6, -11), "global_start": (0, 0)},
        TypeError,
        "global_shape must be a tuple of non-negative ints, got global_shape=(6, -11)",
    ),
    (
        "global_start + shape past the end of axis 0",
        {"global_shape": (6, 11), "global_start": (4, 0)},
        ValueError,
        OUTSIDE.format(axis=0, s=4, what="{what}", d=3, g=6)
        + "(global_shape=(6, 11), global_start=(4, 0), {what}={shape})",
    ),
    (
        "global_start + shape past the end of axis 1",
        {"global_shape": (6, 11), "global_start": (0, 9)},
        ValueError,
        OUTSIDE.format(axis=1, s=9, what="{what}", d=4, g=11)
        + "(global_shape=(6, 11), global_start=(0, 9), {what}={shape})",
    ),
    (
        "global_start entry a float",
        {"global_shape": (6, 11), "global_start": (0, 1.0)},
        TypeError,
        "global_start must be a tuple of non-negative ints, got global_start=(0, 1.0) (entry 1 of type float)",
    ),
    (
        "global_start an int, not a tuple",
        {"global_shape": (6, 11), "global_start": 3},
        TypeError,
        "global_start must be a tuple of non-negative ints, got global_start=3",
    ),
    (
        "global_shape of 2**66 elements",
        {"global_shape": (2**33, 2**33), "global_start": (0, 0)},
        ValueError,
        "global_shape must have fewer than 2**64 elements (the stream's flat indices are 64-bit), "
        "got global_shape=(8589934592, 8589934592) with 73786976294838206464 elements",
    ),
]


def block_cases(function: str, rows: list[Any], x: Callable[[], Any] = x34) -> list[Case]:
    """The rows of BAD_BLOCKS for ``xdrop.<function>`` on ``x()`` (keep_mask: a mask of x's shape)."""
    out = []
    for bad, kwargs, error, message in rows:
        if function == "keep_mask":
            shape = tuple(x().shape)
            out.append(mask_case(bad, {"shape": shape, **kwargs}, error, message.format(what="shape", shape=shape)))
        else:
            text = message.format(what="x.shape", shape=tuple(x().shape))
            out.append(variant_case(function, bad, kwargs, error, text, x=x))
    return out


def past_axis_0(shape: tuple[int, ...]) -> tuple[Any, ...]:
    """A BAD_BLOCKS row for an array of ``shape``: the global array is its own shape, the block starts at 1."""
    start = (1,) + (0,) * (len(shape) - 1)
    message = OUTSIDE.format(axis=0, s=1, what="{what}", d=shape[0], g=shape[0])
    return (
        "global_start + shape past the end of axis 0 (global_shape the array's own)",
        {"global_shape": shape, "global_start": start},
        ValueError,
        message + f"(global_shape={shape}, global_start={start}, {{what}}={{shape}})",
    )


def x2344() -> np.ndarray:
    return np.ones((2, 3, 4, 4))


def x23222() -> np.ndarray:
    return np.ones((2, 3, 2, 2, 2))


# Every row for the functions with their own path to the check (dropout, its forward, a variant with
# a noise rule, keep_mask); the other variants share the gate: the first and an out-of-bounds row each.
CASES += [
    *(
        case
        for name in ("dropout", "dropout_forward", "dropout1d", "keep_mask")
        for case in block_cases(name, BAD_BLOCKS)
    ),
    *(
        case
        for name, x_for in [
            ("dropout1d_forward", x34),
            ("dropout2d", x2344),
            ("dropout2d_forward", x2344),
            ("dropout3d", x23222),
            ("dropout3d_forward", x23222),
            ("alpha_dropout", x34),
            ("alpha_dropout_forward", x34),
            ("feature_alpha_dropout", x34),
            ("feature_alpha_dropout_forward", x34),
            ("drop_path", x34),
            ("drop_path_forward", x34),
        ]
        for case in block_cases(name, [BAD_BLOCKS[0], past_axis_0(tuple(x_for().shape))], x_for)
    ),
]


# -- scaled_dot_product_attention (issue #24) ----------------------------------------------------------


def qkv() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.ones((2, 3, 4)), np.ones((2, 5, 4)), np.ones((2, 5, 6))


def attention_case(bad, change, error, message, **extra) -> Case:
    """A row for ``xdrop.scaled_dot_product_attention``: ``change(q, k, v, kwargs)`` makes the bad call."""

    def build() -> Call:
        q, k, v = qkv()
        kwargs: dict[str, Any] = {"dropout_p": 0.5, "seed": gen()}
        q, k, v = change(q, k, v, kwargs)
        return xdrop.scaled_dot_product_attention, (q, k, v), kwargs

    return Case("scaled_dot_product_attention", bad, build, error, message, **extra)


def _set(**more: Any) -> Callable[..., Any]:
    def change(q: Any, k: Any, v: Any, kwargs: dict[str, Any]) -> Any:
        kwargs.update(more() if callable(more.get("_")) else more)
        return q, k, v

    return change


CASES += [
    attention_case(
        "q not an array",
        lambda q, k, v, kw: ([1.0], k, v),
        TypeError,
        "q must be an array (NumPy, PyTorch, CuPy, JAX, Dask, ...), got q of type list",
    ),
    attention_case(
        "k of another library",
        lambda q, k, v, kw: (q, torch().ones(2, 5, 4, dtype=torch().float64), v),
        TypeError,
        "k must be a numpy array like q, got a torch array",
        needs_torch=True,
    ),
    attention_case(
        "v of another dtype",
        lambda q, k, v, kw: (q, k, v.astype(np.float32)),
        TypeError,
        "v must have q's dtype float64, got v.dtype=float32",
    ),
    attention_case(
        "q of rank 1",
        lambda q, k, v, kw: (np.ones(4), k, v),
        ValueError,
        "q must have at least 2 dimensions (..., length, features), got q.shape=(4,)",
    ),
    attention_case(
        "k with another feature size",
        lambda q, k, v, kw: (q, np.ones((2, 5, 3)), v),
        ValueError,
        "q and k must have the same last dimension E, got q.shape=(2, 3, 4), k.shape=(2, 5, 3)",
    ),
    attention_case(
        "v with another number of keys",
        lambda q, k, v, kw: (q, k, np.ones((2, 4, 6))),
        ValueError,
        "k and v must have the same number of keys S (dim -2), got k.shape=(2, 5, 4), v.shape=(2, 4, 6)",
    ),
    attention_case(
        "leading dimensions that do not broadcast",
        lambda q, k, v, kw: (np.ones((3, 3, 4)), k, v),
        ValueError,
        "the leading dimensions of q, k and v do not broadcast: [(3,), (2,), (2,)]: "
        "q.shape=(3, 3, 4), k.shape=(2, 5, 4), v.shape=(2, 5, 6)",
    ),
    attention_case(
        "dropout_p > 1",
        _set(dropout_p=1.5),
        ValueError,
        "dropout_p must be a probability in [0, 1], got dropout_p=1.5",
    ),
    attention_case(
        "is_causal not a bool",
        _set(is_causal="yes"),
        TypeError,
        "is_causal must be True or False, got is_causal='yes' of type str",
    ),
    attention_case(
        "attn_mask and is_causal together",
        _set(is_causal=True, attn_mask=np.ones((3, 5), dtype=bool)),
        ValueError,
        "attn_mask and is_causal=True cannot be given together: put the causal mask in attn_mask",
    ),
    attention_case(
        "attn_mask that does not broadcast",
        _set(attn_mask=np.ones((4, 5), dtype=bool)),
        ValueError,
        "attn_mask must broadcast to the weights' shape (2, 3, 5), got attn_mask.shape=(4, 5)",
    ),
    attention_case(
        "attn_mask of an integer dtype",
        _set(attn_mask=np.ones((3, 5), dtype=np.int64)),
        TypeError,
        "attn_mask must be bool or q's dtype float64, got attn_mask.dtype=int64",
    ),
    attention_case(
        "attn_mask not an array",
        _set(attn_mask=[[True] * 5] * 3),
        TypeError,
        "attn_mask must be None or an array of q's namespace, got attn_mask of type list",
    ),
    attention_case(
        "scale not a number",
        _set(scale="0.5"),
        TypeError,
        "scale must be None or a finite real number, got scale='0.5'",
    ),
    attention_case(
        "no seed while dropping",
        _set(seed=None),
        ValueError,
        "seed is required when dropout_p > 0 and training: pass an int in [0, 2**64) or a Generator",
    ),
    attention_case(
        "seed out of range",
        _set(seed=-1),
        ValueError,
        "seed must be an integer in [0, 2**64), got seed=-1",
    ),
    attention_case(
        "step beside a Generator",
        _set(step=3),
        ValueError,
        "step must be left at 0 when seed is a Generator (it supplies the step), got step=3",
    ),
]


# -- snapshots: proof that nothing was mutated or advanced -----------------------------------------


def snapshot(obj: Any) -> Any:
    """A comparable picture of an argument: array bits, Generator state, containers' contents."""
    if isinstance(obj, np.ndarray):
        return ("ndarray", obj.dtype.str, obj.shape, obj.tobytes())
    if type(obj).__module__.startswith("torch") and hasattr(obj, "detach"):
        if obj.device.type == "meta":
            return ("meta", str(obj.dtype), tuple(obj.shape))
        t = obj.detach().cpu()
        t = t if t.layout == torch().strided else t.to_dense()
        t = t.view(torch().uint8) if t.dtype.itemsize == 1 else t  # float8 has no NumPy dtype
        return ("tensor", str(obj.dtype), tuple(obj.shape), t.numpy().tobytes())
    if isinstance(obj, xdrop.Generator):
        return ("Generator", obj.seed, obj.step)
    if isinstance(obj, dict):
        return ("dict", tuple((k, snapshot(v)) for k, v in obj.items()))
    if isinstance(obj, (list, tuple)):
        return (type(obj).__name__, tuple(snapshot(v) for v in obj))
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return ("dataclass", tuple(snapshot(getattr(obj, f.name)) for f in dataclasses.fields(obj)))
    if callable(obj) and hasattr(obj, "__self__"):  # a bound method: its object's state
        return ("method", snapshot(obj.__self__))
    return ("value", repr(obj))


def case_id(case: Case) -> str:
    return f"{case.function}: {case.bad}"


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_bad_input(case, monkeypatch):
    monkeypatch.setenv("XDROP_MAX_MASK_BYTES", "1000000")  # the memory row states this limit
    if case.needs_torch:
        torch()
    reason = case.skip_if()
    if reason:
        pytest.skip(reason)
    fn, args, kwargs = case.build()
    before = snapshot((fn, args, kwargs))
    with pytest.raises(case.error) as info:
        fn(*args, **kwargs)
    assert type(info.value) is case.error
    assert str(info.value) == case.message
    assert snapshot((fn, args, kwargs)) == before  # no argument mutated, no Generator advanced


def test_cases_are_distinct():
    ids = [case_id(c) for c in CASES]
    assert len(ids) == len(set(ids))


# -- the docs table ------------------------------------------------------------------------------------


def render_table(cases: list[Case]) -> str:
    rows = ["| function | bad input | exception | message |", "|---|---|---|---|"]
    for c in cases:
        message = c.message.replace("|", "\\|")
        rows.append(f"| `{c.function}` | {c.bad} | `{c.error.__name__}` | `{message}` |")
    return "\n".join(rows)


def doc_table(text: str) -> str:
    start = text.index(BEGIN) + len(BEGIN)
    return text[start : text.index(END, start)].strip("\n")


def test_docs_table_is_generated_from_these_cases():
    assert doc_table(DOC.read_text()) == render_table(CASES), f"run: {REGENERATE}"


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        text = DOC.read_text()
        start = text.index(BEGIN) + len(BEGIN)
        DOC.write_text(text[:start] + "\n" + render_table(CASES) + "\n" + text[text.index(END, start) :])
    else:
        print(render_table(CASES))
