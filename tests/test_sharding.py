"""The sharding law: a block of a larger array, given its global shape and start, gets that block of the mask.

For every block ``b`` of ``x``:
``dropout(x[b], ..., global_shape=x.shape, global_start=start(b))`` has the bits
of ``dropout(x, ...)[b]``, on every backend and for every variant's noise shape.
The whole-array side is itself checked against the scalar spec elsewhere; near
the top of the index space the blocks are checked against the spec directly.
"""

import itertools
import math

import numpy as np
import pytest
from spec_v1 import keep_bits

import xdrop
from xdrop._lib._sharding import Block, block_keep, check_block, contiguous_start

SEED, STEP, P = 2**63 + 11, 2**40 + 3, 0.3

# shape -> blocks (start, block shape) covering the kinds of layout
BLOCKS = {
    (6, 11): [
        ((0, 0), (6, 11)),  # the whole array
        ((2, 0), (3, 11)),  # whole rows: one contiguous run (the fast kernels)
        ((0, 4), (6, 3)),  # a column stripe: one run per row
        ((5, 10), (1, 1)),  # the last element
        ((1, 2), (4, 5)),
        ((3, 3), (0, 2)),  # empty
    ],
    (3, 4, 5): [((1, 0, 0), (2, 4, 5)), ((0, 1, 2), (3, 2, 3)), ((2, 3, 0), (1, 1, 5)), ((0, 0, 4), (3, 4, 1))],
    (2, 3000): [((0, 1000), (2, 7))],  # short runs far apart: drawn run by run
    (1025,): [((100,), (925,)), ((3,), (1,))],
}
CASES = [(shape, start, bshape) for shape, blocks in BLOCKS.items() for start, bshape in blocks]


def rand(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def piece(a, start, bshape):
    return a[tuple(slice(s, s + n) for s, n in zip(start, bshape, strict=True))]


def bits(a):
    return np.ascontiguousarray(a).tobytes()


@pytest.mark.parametrize("impl", ["auto", "reference"])
@pytest.mark.parametrize("shape, start, bshape", CASES, ids=str)
def test_block_of_dropout_is_dropout_of_block(backend, shape, start, bshape, impl):
    if impl == "reference" and backend.name == "dask" and math.prod(shape) > 2000:
        pytest.skip("dask reference: the same chunk code as auto, slower")
    x = rand(shape)
    whole = xdrop.dropout(x, P, seed=SEED, step=STEP)
    block = backend.from_numpy(np.ascontiguousarray(piece(x, start, bshape)))
    out = xdrop.dropout(block, P, seed=SEED, step=STEP, impl=impl, global_shape=shape, global_start=start)
    got = backend.to_numpy(out)
    assert got.shape == bshape and got.dtype == np.float32
    assert bits(got) == bits(piece(whole, start, bshape))


@pytest.mark.parametrize("shape, start, bshape", CASES, ids=str)
def test_keep_mask_block(backend, shape, start, bshape):
    whole = xdrop.keep_mask(shape, P, seed=SEED, step=STEP, xp=np)
    got = xdrop.keep_mask(
        bshape, P, seed=SEED, step=STEP, xp=backend.xp, device=backend.device, global_shape=shape, global_start=start
    )
    assert np.array_equal(backend.to_numpy(got), piece(whole, start, bshape))


VARIANTS = {
    "dropout1d": (xdrop.dropout1d, xdrop.dropout1d_forward, {}),
    "dropout2d": (xdrop.dropout2d, xdrop.dropout2d_forward, {}),
    "dropout3d": (xdrop.dropout3d, xdrop.dropout3d_forward, {}),
    "alpha_dropout": (xdrop.alpha_dropout, xdrop.alpha_dropout_forward, {}),
    "feature_alpha_dropout": (xdrop.feature_alpha_dropout, xdrop.feature_alpha_dropout_forward, {}),
    "drop_path": (xdrop.drop_path, xdrop.drop_path_forward, {}),
    "drop_path_unscaled": (xdrop.drop_path, xdrop.drop_path_forward, {"scale_by_keep": False}),
}
GLOBALS = {"dropout1d": (4, 6, 5), "dropout2d": (4, 6, 3, 5)}  # the others: (4, 6, 3, 2, 5)
CUTS = [(0, 0, 0, 0, 0), (2, 0, 0, 0, 0), (0, 3, 0, 0, 0), (1, 2, 1, 1, 2), (3, 5, 2, 1, 4)]


@pytest.mark.parametrize("name", list(VARIANTS))
@pytest.mark.parametrize("cut", CUTS, ids=str)
def test_variants_take_the_global_noise_shape(backend, name, cut):
    """Blocks that cut the batch, channel and spatial axes: each gets its block of the global mask."""
    fn, fwd, kw = VARIANTS[name]
    shape = GLOBALS.get(name, (4, 6, 3, 2, 5))
    start = cut[: len(shape)]
    bshape = tuple(max(1, (g - c) // 2 + c % 2) for g, c in zip(shape, start, strict=True))
    x = rand(shape)
    whole = fn(x, P, seed=SEED, step=STEP, **kw)
    block = backend.from_numpy(np.ascontiguousarray(piece(x, start, bshape)))
    where = {"global_shape": shape, "global_start": start}
    got = backend.to_numpy(fn(block, P, seed=SEED, step=STEP, **kw, **where))
    assert bits(got) == bits(piece(whole, start, bshape))
    out, cache = fwd(block, P, seed=SEED, step=STEP, **kw, **where)
    assert bits(backend.to_numpy(out)) == bits(got)
    dout = rand(bshape, seed=1)
    _, whole_cache = fwd(x, P, seed=SEED, step=STEP, **kw)
    want = piece(xdrop.dropout_backward(_embed(dout, start, shape), whole_cache), start, bshape)
    assert bits(backend.to_numpy(xdrop.dropout_backward(backend.from_numpy(dout), cache))) == bits(want)


def _embed(block, start, shape):
    out = np.zeros(shape, np.float32)
    out[tuple(slice(s, s + n) for s, n in zip(start, block.shape, strict=True))] = block
    return out


@pytest.mark.parametrize("start, bshape", [((0, 0), (6, 11)), ((2, 5), (3, 4)), ((0, 1), (6, 10))], ids=str)
def test_dropout_noise_shape_is_global(backend, start, bshape):
    x = rand((6, 11))
    for ns in [(None, 1), (1, None), (1, 1)]:
        whole = xdrop.dropout(x, P, seed=SEED, step=STEP, noise_shape=ns)
        block = backend.from_numpy(np.ascontiguousarray(piece(x, start, bshape)))
        got = xdrop.dropout(block, P, seed=SEED, step=STEP, noise_shape=ns, global_shape=(6, 11), global_start=start)
        assert bits(backend.to_numpy(got)) == bits(piece(whole, start, bshape)), ns


def test_dropout_forward_backward_of_a_block():
    x = rand((6, 11))
    out, cache = xdrop.dropout_forward(x[:, 3:7], P, seed=SEED, step=STEP, global_shape=(6, 11), global_start=(0, 3))
    assert bits(out) == bits(xdrop.dropout(x, P, seed=SEED, step=STEP)[:, 3:7])
    dout = rand((6, 4), seed=2)
    grad = np.zeros((6, 11), np.float32)
    grad[:, 3:7] = dout
    _, whole = xdrop.dropout_forward(x, P, seed=SEED, step=STEP)
    assert bits(xdrop.dropout_backward(dout, cache)) == bits(xdrop.dropout_backward(grad, whole)[:, 3:7])


def test_every_tiling_reassembles_the_whole():
    """Tile (7, 9) in several ways: the tiles' outputs put together are the whole array's output."""
    x = rand((7, 9))
    whole = xdrop.dropout(x, P, seed=SEED, step=STEP)
    for rows, cols in [((3, 4), (9,)), ((7,), (2, 7)), ((1, 1, 5), (4, 1, 4))]:
        out = np.empty_like(x)
        r0 = 0
        for r in rows:
            c0 = 0
            for c in cols:
                tile = x[r0 : r0 + r, c0 : c0 + c]
                out[r0 : r0 + r, c0 : c0 + c] = xdrop.dropout(
                    tile, P, seed=SEED, step=STEP, global_shape=x.shape, global_start=(r0, c0)
                )
                c0 += c
            r0 += r
        assert bits(out) == bits(whole)


# 2**64 - 1 = 65535 * 42009217 * 6700417: flat indices up to 2**64 - 2, every axis below 2**32
TOP_SHAPE = (65535, 42009217, 6700417)
assert math.prod(TOP_SHAPE) == 2**64 - 1


@pytest.mark.parametrize("bshape", [(1, 1, 64), (2, 3, 5), (1, 1, 13)], ids=str)
def test_blocks_at_the_top_of_the_index_space_match_the_spec(backend, bshape):
    start = tuple(g - b for g, b in zip(TOP_SHAPE, bshape, strict=True))
    where = {"global_shape": TOP_SHAPE, "global_start": start}
    got = xdrop.keep_mask(bshape, P, seed=SEED, step=STEP, xp=backend.xp, device=backend.device, **where)
    rows = itertools.product(*(range(s, s + b) for s, b in zip(start[:2], bshape[:2], strict=True)))
    want = np.array(
        [keep_bits(SEED, STEP, (i * TOP_SHAPE[1] + j) * TOP_SHAPE[2] + start[2], bshape[2], P) for i, j in rows],
        dtype=bool,
    ).reshape(bshape)
    assert want.size and np.array_equal(backend.to_numpy(got), want)
    ones = backend.from_numpy(np.ones(bshape, np.float32))
    out = backend.to_numpy(xdrop.dropout(ones, P, seed=SEED, step=STEP, **where))
    assert np.array_equal(out != 0, want)


def test_a_block_drawn_from_a_covering_range_needs_memory_of_the_block_only(backend):
    """Rows 5 and 6, columns 2-4, of a (2, 2**40, 7) array: one covering range of 10 indices, gathered;
    nothing the size of the global array's rows (7.7 TB) is allocated, on any backend. (JAX takes
    global axes up to 2**32: 30 GB would be as fatal.)"""
    rows = 2**32 if backend.name == "jax" else 2**40
    shape, start, bshape = (2, rows, 7), (0, 5, 2), (1, 2, 3)
    where = {"global_shape": shape, "global_start": start}
    want = np.array([keep_bits(SEED, STEP, r * 7 + 2, 3, P) for r in (5, 6)], dtype=bool).reshape(bshape)
    got = xdrop.keep_mask(bshape, P, seed=SEED, step=STEP, xp=backend.xp, device=backend.device, **where)
    assert np.array_equal(backend.to_numpy(got), want)
    out = xdrop.dropout(backend.from_numpy(np.ones(bshape, np.float32)), P, seed=SEED, step=STEP, **where)
    assert np.array_equal(backend.to_numpy(out) != 0, want)


def test_contiguous_blocks_take_the_fast_kernel():
    """Whole rows are one run of global indices: the fused kernel with a start, no mask drawn."""
    block = check_block((6, 11), (2, 0), (3, 11))
    assert block is not None and contiguous_start(block, (3, 11)) == 22
    assert contiguous_start(Block((6, 11), (2, 1)), (3, 10)) is None


def test_block_keep_draws_run_by_run_or_covering():
    calls = []

    def mask(start, n):
        calls.append((start, n))
        return np.array(keep_bits(SEED, STEP, start, n, P), dtype=bool)

    got = block_keep(np, Block((3, 5000), (0, 10)), (3, 4), mask)
    assert calls == [(10, 4), (5010, 4), (10010, 4)]  # far apart: one call per run
    calls.clear()
    near = block_keep(np, Block((3, 50), (0, 10)), (3, 4), mask)
    assert calls == [(10, 104)]  # close together: one covering range
    for out, width in [(got, 5000), (near, 50)]:
        want = [keep_bits(SEED, STEP, r * width + 10, 4, P) for r in range(3)]
        assert np.array_equal(out, np.array(want, dtype=bool))


# Bad global_shape / global_start for every public function: rows of the table in tests/test_bad_inputs.py.


def test_all_tilings_of_a_small_array_are_exact():
    """Exhaustive over every block of a (3, 4) array: start and shape along each axis."""
    x = rand((3, 4))
    whole = xdrop.dropout(x, P, seed=SEED, step=STEP)
    for r0, c0 in itertools.product(range(3), range(4)):
        for r, c in itertools.product(range(1, 4 - r0), range(1, 5 - c0)):
            got = xdrop.dropout(
                np.ascontiguousarray(x[r0 : r0 + r, c0 : c0 + c]),
                P,
                seed=SEED,
                step=STEP,
                global_shape=(3, 4),
                global_start=(r0, c0),
            )
            assert bits(got) == bits(whole[r0 : r0 + r, c0 : c0 + c])


def test_dask_chunks_holding_the_last_flat_indices_finish():
    """A chunk with flat indices at or above 2**64 - 64 used to spin forever in the C kernel."""
    da = pytest.importorskip("dask.array", reason="dask[array] is not installed")
    top = 2**64 - 1  # the largest size: indices up to 2**64 - 2
    for n in (64, 70, 13):
        got = xdrop.keep_mask((n,), P, seed=SEED, step=STEP, xp=da, global_shape=(top,), global_start=(top - n,))
        assert np.array_equal(got.rechunk(7).compute(), np.array(keep_bits(SEED, STEP, top - n, n, P), dtype=bool))
