"""``xdrop.dropout`` on a NumPy array with plain arguments takes a short path: the same kernel, the same bits.

The path skips the namespace lookup and the general checks (a float ``p`` and int
``seed``/``step`` in range); everything else goes the general way. Each case is
compared bit for bit with the pure-standard reference and with the general path
(reached by passing ``p`` as a NumPy scalar), and the short path is shown to be
taken (the general gate is replaced by one that fails).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import xdrop
from xdrop._functional import _call
from xdrop._kernels.host import _buffers as _host
from xdrop._lib import _sharding

LAYOUTS = {
    "C": lambda a: a,
    "F": np.asfortranarray,
    "strided": lambda a: a[:, ::2],
    "0-d": lambda a: a[0, 0, ...],
    "empty": lambda a: a[:0],
}


def _bits(a):
    return np.ascontiguousarray(a).view(f"u{a.dtype.itemsize}")


def _refuse_general_path(monkeypatch):
    def gate(*args, **kwargs):
        raise AssertionError("the general path was taken")

    monkeypatch.setattr(_call, "check_call", gate)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("p", [0.0, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("rows", [3, _host.PARALLEL_MIN // 64 + 3])  # one call; the threaded driver
def test_short_path_equals_the_reference_and_the_general_path(dtype, layout, p, rows, monkeypatch):
    base = np.random.default_rng(rows).standard_normal((rows, 128)).astype(dtype)
    x = LAYOUTS[layout](base)
    before = x.copy()
    general = xdrop.dropout(x, np.float64(p), seed=2**64 - 3, step=5)  # a NumPy scalar p: the general path
    reference = xdrop.dropout(x, p, seed=2**64 - 3, step=5, impl="reference")
    _refuse_general_path(monkeypatch)
    out = xdrop.dropout(x, p, seed=2**64 - 3, step=5)
    assert type(out) is np.ndarray and out.dtype == x.dtype and out.shape == x.shape
    assert np.array_equal(_bits(out), _bits(reference)) and np.array_equal(_bits(out), _bits(general))
    assert np.array_equal(_bits(x), _bits(before))  # the input is not modified


@pytest.mark.parametrize(
    "kwargs",
    [
        {"p": 1.5},
        {"p": float("nan")},
        {"seed": -1},
        {"seed": 2**64},
        {"step": -2},
        {"p": 1 - 2**-17},  # float16: the scale overflows, the general path's inf rule applies
    ],
)
def test_values_the_short_path_does_not_take_go_the_general_way(kwargs):
    x = np.ones(8, np.float16)
    args = {"p": 0.5, "seed": 1, "step": 0} | kwargs
    try:
        want: object = xdrop.dropout(x, args["p"], seed=args["seed"], step=args["step"], impl="reference")
    except (TypeError, ValueError) as e:
        want = (type(e), str(e))
    try:
        got: object = xdrop.dropout(x, args["p"], seed=args["seed"], step=args["step"])
    except (TypeError, ValueError) as e:
        got = (type(e), str(e))
    if isinstance(want, tuple):
        assert got == want
    else:
        assert isinstance(got, np.ndarray) and np.array_equal(_bits(got), _bits(want))


def test_an_ambient_placement_still_places_a_numpy_call():
    """Inside ``placed`` (how the data-parallel layers put a rank's slice in the global batch)."""
    x = np.ones((4, 3), np.float32)
    whole = xdrop.dropout(np.ones((8, 3), np.float32), 0.5, seed=9)
    with _sharding.placed(lambda shape: ((8, 3), (4, 0))):
        out = xdrop.dropout(x, 0.5, seed=9)
    assert np.array_equal(out, whole[4:])


def test_a_first_call_imports_no_namespace_wrapper():
    """The first call of a fresh process needs no array-api-compat namespace (its import is ~100 ms)."""
    code = (
        "import sys, numpy as np, xdrop\n"
        "xdrop.dropout(np.ones(2**20, np.float32), 0.5, seed=1)\n"
        "print(sorted(m for m in sys.modules if m.startswith('array_api_compat.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "array_api_compat.numpy" not in out, out


# -- out=: the result written into an array the caller keeps ----------------------------------------------


OUT_LAYOUTS = {
    "new C": lambda x: np.empty_like(x, order="C"),
    "new F": lambda x: np.empty_like(x, order="F"),  # not C-contiguous: computed, then copied in
    "x itself": lambda x: x,
}


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("layout", ["C", "F", "strided"])
@pytest.mark.parametrize("out_layout", list(OUT_LAYOUTS))
@pytest.mark.parametrize("rows", [3, _host.PARALLEL_MIN // 64 + 3])
def test_out_receives_the_same_bits_and_is_returned(dtype, layout, out_layout, rows):
    base = np.random.default_rng(rows).standard_normal((rows, 128)).astype(dtype)
    x = LAYOUTS[layout](base)
    want = xdrop.dropout(x, 0.3, seed=11, step=2, impl="reference")
    out = OUT_LAYOUTS[out_layout](x)
    if out is not x:
        out.fill(7)  # nothing of the old contents may survive
    got = xdrop.dropout(x, 0.3, seed=11, step=2, out=out)
    assert got is out and np.array_equal(_bits(out), _bits(want))


@pytest.mark.parametrize("n", [64, 5000, _host.PARALLEL_MIN + 3])  # by array, by address, threaded
def test_out_of_plain_calls_is_written_by_the_kernel_directly(n, monkeypatch):
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    want = xdrop.dropout(x, 0.5, seed=6, impl="reference")
    out = np.full_like(x, 7)
    _refuse_general_path(monkeypatch)
    monkeypatch.setattr(np, "copyto", lambda *a, **k: pytest.fail("the result was copied in"))
    assert xdrop.dropout(x, 0.5, seed=6, out=out) is out and np.array_equal(_bits(out), _bits(want))


def test_out_overlapping_x_in_part_gets_the_result_of_the_unshifted_input():
    """out a shifted view of x's memory: the kernel cannot write in place, so the result is copied in."""
    buf = np.random.default_rng(3).standard_normal(1001).astype(np.float32)
    x, out = buf[:1000], buf[1:]
    want = xdrop.dropout(x.copy(), 0.5, seed=4)
    assert np.array_equal(xdrop.dropout(x, 0.5, seed=4, out=out), want)


def test_out_with_every_other_argument_goes_the_general_way_and_is_written():
    x = np.random.default_rng(5).standard_normal((4, 6)).astype(np.float32)
    cases = [  # fresh arguments for each of the two calls (a Generator advances)
        lambda: {"p": 0.5, "seed": 2, "noise_shape": (4, 1)},
        lambda: {"p": 0.5, "seed": xdrop.Generator(9)},
        lambda: {"p": np.float64(0.25), "seed": 2},
        lambda: {"p": 0.5, "seed": 2, "global_shape": (8, 6), "global_start": (4, 0)},
        lambda: {"p": 0.5, "seed": 2, "impl": "reference"},
        lambda: {"p": 0.5, "seed": 2, "training": False},
    ]
    for kwargs in cases:
        out = np.full_like(x, 7)
        want = xdrop.dropout(x, **kwargs())
        assert xdrop.dropout(x, **kwargs(), out=out) is out and np.array_equal(out, want), kwargs()


def test_out_is_refused_for_other_libraries_and_bad_buffers_before_anything_is_written():
    x = np.ones((2, 3), np.float32)
    gen = xdrop.Generator(1)
    bad = [
        (x.tolist(), np.empty((2, 3), np.float32), TypeError, "x must be an array"),
        (x, [0.0] * 6, TypeError, "out must be a NumPy array of x's shape and dtype, got out of type list"),
        (x, np.empty((2, 3)), TypeError, "out must have x's dtype float32, got out.dtype=float64"),
        (x, np.empty((3, 2), np.float32), ValueError, r"out must have x's shape \(2, 3\), got out.shape=\(3, 2\)"),
    ]
    read_only = np.zeros((2, 3), np.float32)
    read_only.flags.writeable = False
    bad.append((x, read_only, ValueError, "out must be writeable, got a read-only out"))
    for xi, out, error, message in bad:
        before = np.array(out, copy=True) if isinstance(out, np.ndarray) else None
        with pytest.raises(error, match=message):
            xdrop.dropout(xi, 0.5, seed=gen, out=out)
        if before is not None:
            assert np.array_equal(out, before)
    assert gen.step == 0  # no rejected call took a step


def test_out_is_numpy_only():
    torch = pytest.importorskip("torch", reason="the torch case needs torch")
    with pytest.raises(TypeError, match="out= is supported for NumPy arrays only, got x of type Tensor"):
        xdrop.dropout(torch.ones(3), 0.5, seed=1, out=np.empty(3, np.float32))
