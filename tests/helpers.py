"""What the tests share: input builders, the spec's expected outputs, and a bit-exact comparison.

Every expected value here comes from the independent scalar spec
(``tests/spec_v1.py``) and from exact rational arithmetic, never from xdrop:
the keep decisions, the threshold K, the correctly rounded scale ``2**32 / K``
in the output dtype, and the product ``x * scale`` (one IEEE multiplication).
NumPy has no bfloat16: bfloat16 values are carried as float32.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from fractions import Fraction
from pathlib import Path
from types import ModuleType

import numpy as np
from spec_v1 import keep_bits, threshold

from xdrop.verify import round_to_bfloat16  # checked against torch's rounding in test_verify.py

TWO32 = 1 << 32
SIGNIFICAND_BITS = {"float16": 11, "bfloat16": 8, "float32": 24, "float64": 53}

# -- inputs ---------------------------------------------------------------------------------------


def random_input(shape, dtype="float64", seed=0, *, specials=False) -> np.ndarray:
    """Standard normal values in ``dtype``; ``specials``: NaN, -inf and -0.0 spread over the first third."""
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    if specials:
        flat = x.reshape(-1)  # a view: NaN, inf and -0 follow the product's rules when kept
        idx = np.arange(min(3, flat.size)) * max(1, flat.size // 3)
        flat[idx] = np.array([np.nan, -np.inf, -0.0], dtype)[: idx.size]
    return x


def input_on(backend, shape, dtype, seed=0):
    """A random input on ``backend`` in ``dtype``, and the values it holds as NumPy.

    NumPy has no bfloat16: its input is drawn in float32 and cast on the
    backend; the NumPy copy then holds the bfloat16 values as float32.
    """
    x = backend.asarray(random_input(shape, "float32" if dtype == "bfloat16" else dtype, seed), dtype)
    return x, backend.to_numpy(x)


# -- the spec's expected outputs ------------------------------------------------------------------


def spec_keep(noise_shape, p, seed, step, shape=None) -> np.ndarray:
    """The spec's keep decisions over ``noise_shape``, broadcast to ``shape`` when given."""
    n = math.prod(noise_shape)
    keep = np.array(keep_bits(seed, step, 0, n, p), dtype=bool).reshape(noise_shape)
    return keep if shape is None else np.broadcast_to(keep, shape)


def _f32_bits_to_float(bits: int) -> float:
    return float(np.array([bits], dtype=np.uint32).view(np.float32)[0])


def _ulp_of(v: float, dtype: str) -> Fraction:
    exponent = math.frexp(v)[1] - 1  # v = m * 2**exponent, 1 <= m < 2
    return Fraction(2) ** (exponent - SIGNIFICAND_BITS[dtype] + 1)


def _neighbours(value: Fraction, dtype: str) -> list[float]:
    """Finite values of ``dtype`` just below and above ``value`` (value >= 1)."""
    if dtype == "bfloat16":  # a bfloat16 is a float32 whose low 16 bits are zero
        f32 = np.float32(float(value))
        top = int(np.array([f32]).view(np.uint32)[0]) & 0xFFFF0000
        return [_f32_bits_to_float(top + d * 0x10000) for d in (-1, 0, 1, 2) if top + d * 0x10000 < 0x7F800000]
    t = np.dtype(dtype).type
    with np.errstate(over="ignore"):
        c = t(float(value))
        out = [c, np.nextafter(c, t(-np.inf)), np.nextafter(c, t(np.inf))]
    return [float(v) for v in out if np.isfinite(v)]


def correctly_rounded(value: Fraction, dtype: str) -> float:
    """``value`` (>= 1) rounded to nearest ``dtype`` value, ties to even; inf past the overflow threshold."""
    top = _f32_bits_to_float(0x7F7F0000) if dtype == "bfloat16" else float(np.finfo(dtype).max)
    if value >= Fraction(top) + _ulp_of(top, dtype) / 2:
        return math.inf

    def key(v: float) -> tuple[Fraction, int]:
        odd = int(Fraction(v) / _ulp_of(v, dtype)) % 2
        return abs(Fraction(v) - value), odd

    return min(_neighbours(value, dtype), key=key)


def spec_scale(p: float, dtype: str) -> float:
    """The scale kept elements get: ``2**32 / K`` correctly rounded to ``dtype`` (0 when K = 0)."""
    k = threshold(p)
    return 0.0 if k == 0 else correctly_rounded(Fraction(TWO32, k), dtype)


def inverted(x: np.ndarray, keep: np.ndarray, p: float, dtype: str | None = None) -> np.ndarray:
    """``where(keep, x * scale, 0)`` with the spec's scale, one rounding of the product.

    ``dtype`` is the output dtype when ``x`` carries it in another (bfloat16 in float32).
    """
    dtype = dtype or x.dtype.name
    with np.errstate(over="ignore", invalid="ignore"):
        prod = x * x.dtype.type(spec_scale(p, dtype))  # float16: exact in float32, rounded once
    if dtype == "bfloat16":  # the float32 product of two bfloat16 is exact; round it once to bfloat16
        prod = np.where(np.isnan(prod), prod, round_to_bfloat16(np.where(np.isnan(prod), 0, prod)))
    return np.where(keep, prod, x.dtype.type(0))


def expected_dropout(x: np.ndarray, p, seed, step, noise_shape=None, dtype: str | None = None) -> np.ndarray:
    """Dropout of ``x`` per the spec, in NumPy (masks drawn over ``noise_shape``, default ``x.shape``)."""
    keep = spec_keep(x.shape if noise_shape is None else noise_shape, p, seed, step, x.shape)
    return inverted(x, keep, p, dtype)


# -- comparison -----------------------------------------------------------------------------------


def assert_same_bits(got: np.ndarray, want: np.ndarray) -> None:
    """Equal dtype, shape and bits; any NaN matches any NaN (0 * inf makes one)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, got.shape, want.dtype, want.shape)
    udt = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[got.dtype.itemsize]
    same = (got.view(udt) == want.view(udt)) | (np.isnan(got) & np.isnan(want))
    assert same.all(), (got[~same], want[~same])


# -- optional packages ----------------------------------------------------------------------------


def import_timm():
    """timm, or a pytest skip saying why: its torchvision loads only beside the torch build it was made for."""
    import pytest

    try:
        import timm
    except (ImportError, RuntimeError) as e:  # torchvision of another torch build: "operator torchvision::nms ..."
        why = f"{type(e).__name__}: {e}"
        pytest.skip(f"timm cannot be imported here ({why}); the timm tests run in `nox -s models_timm`")
    return timm


def load_tool(name: str) -> ModuleType:
    """``tools/<name>.py`` as a module (the tools are scripts, not a package), registered in ``sys.modules``
    under ``name``: a dataclass in it looks its module up there."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent.parent / "tools" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def recording_sizes(sizes: list[int]):
    """A torch dispatch mode that appends to ``sizes`` the element count of every tensor an aten op returns
    (it sees the ops inside unregistered kernel functions too). Imports torch when called."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor):
                    sizes.append(t.numel())
            return out

    return Record()
