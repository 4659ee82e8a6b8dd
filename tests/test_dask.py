"""Dask: lazy, chunk-invariant dropout equal to NumPy's, locally and on a distributed cluster."""

import math

import numpy as np
import pytest
from helpers import random_input

import xdrop
from xdrop._kernels._dask import CALL_COST_IN_DRAWS, MAX_SPAN_FACTOR, chunk_keep

da = pytest.importorskip("dask.array", reason="dask[array] is not installed")
dask = pytest.importorskip("dask", reason="dask[array] is not installed")

SEED, STEP = 2**63 + 5, 2**33 + 1


def rand(shape, dtype="float32", seed=0):
    return random_input(shape, dtype, seed)


def ref(x, p=0.3, **kw):
    return xdrop.dropout(x, p, seed=SEED, step=STEP, impl="reference", **kw)


def _refuse(*args, **kwargs):
    raise AssertionError("dask computed something")


@pytest.fixture
def no_compute():
    """Any compute inside the block fails the test: dropout must only build a graph."""
    with dask.config.set(scheduler=_refuse):
        yield


CHUNKINGS = [
    ((6, 11), "auto"),
    ((6, 11), (6, 11)),
    ((6, 11), (1, 1)),  # one element per chunk
    ((6, 11), ((1, 5), (4, 4, 3))),  # uneven
    ((6, 11), (6, 1)),  # column chunks: a run per row
    ((6, 11), (2, 11)),  # whole rows: contiguous chunks
    ((3, 4, 5), (2, 3, 2)),
    ((3, 4, 5), (1, 4, 5)),
    ((2, 3000), (2, 7)),  # short runs far apart: drawn run by run
    ((1025,), (100,)),
    ((0, 4), (1, 2)),
]


@pytest.mark.parametrize("impl", ["auto", "reference"])
@pytest.mark.parametrize("shape, chunks", CHUNKINGS, ids=str)
def test_any_chunking_gives_numpys_bits(shape, chunks, impl):
    x = rand(shape)
    out = xdrop.dropout(da.from_array(x, chunks=chunks), 0.3, seed=SEED, step=STEP, impl=impl)
    assert isinstance(out, da.Array)
    assert out.chunks == da.from_array(x, chunks=chunks).chunks
    got = out.compute()
    assert got.dtype == x.dtype and got.shape == x.shape and got.tobytes() == ref(x).tobytes()


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_dtype_and_meta_are_preserved(dtype):
    x = da.from_array(rand((5, 6), dtype), chunks=2)
    out = xdrop.dropout(x, 0.5, seed=1)
    assert out.dtype == x.dtype and isinstance(out._meta, np.ndarray) and out._meta.dtype == x.dtype
    assert out.compute().tobytes() == xdrop.dropout(x.compute(), 0.5, seed=1).tobytes()


def test_nothing_is_computed_at_call_time(no_compute):
    x = da.random.default_rng(0).standard_normal((2000, 3000), chunks=(500, 700)).astype("float32")
    out = xdrop.dropout(x, 0.5, seed=1)
    fwd, cache = xdrop.dropout_forward(x, 0.5, seed=1, noise_shape=(None, 1))
    dx = xdrop.dropout_backward(x, cache)
    mask = xdrop.keep_mask((10**6,), 0.5, seed=1, xp=da)
    for lazy in (out, fwd, dx, mask):
        assert isinstance(lazy, da.Array)


def test_same_graph_name_for_the_same_call():
    x = da.from_array(rand((8, 8)), chunks=3)
    assert xdrop.dropout(x, 0.5, seed=1).name == xdrop.dropout(x, 0.5, seed=1).name
    assert xdrop.dropout(x, 0.5, seed=1).name != xdrop.dropout(x, 0.5, seed=1, step=1).name


def test_noise_shape_on_dask():
    x = rand((3, 4, 5))
    for noise_shape in ((None, 1, 5), (1, 4, 1), (3, 4, 5)):
        out = xdrop.dropout(da.from_array(x, chunks=(2, 3, 2)), 0.5, seed=6, noise_shape=noise_shape)
        assert out.compute().tobytes() == xdrop.dropout(x, 0.5, seed=6, noise_shape=noise_shape).tobytes()


def test_keep_mask_on_dask_is_chunked_and_equal():
    mask = xdrop.keep_mask((3, 7), 0.4, seed=2, step=3, xp=da)
    assert isinstance(mask, da.Array) and mask.dtype == bool
    assert np.array_equal(mask.compute(), xdrop.keep_mask((3, 7), 0.4, seed=2, step=3, xp=np))


def _per_chunk_build_data(lazy):
    """The graph's per-chunk values built at call time (Dask's ``block_info`` dicts), counted in chunks."""
    from dask.blockwise import Blockwise, BlockwiseDepDict
    from dask.layers import ArrayValuesDep

    layer = lazy.dask.layers[lazy.name]  # xdrop's own layer (from_array's input layer is materialised)
    assert isinstance(layer, Blockwise) and not layer.is_materialized()  # nothing expanded task by task
    deps = layer.io_deps.values()  # what each task gets besides its chunk: lazy (ArrayBlockIdDep) or stored
    found = sum(len(dep.values) for dep in deps if isinstance(dep, ArrayValuesDep))
    return found + sum(len(dep.mapping) for dep in deps if isinstance(dep, BlockwiseDepDict))


def test_building_a_lazy_mask_does_not_iterate_chunks():
    """Regression: keep_mask((2**48,), xp=dask.array) took about a minute to build, a dict per chunk of
    ``block_info``; regular chunks now find their place from ``block_id`` (lazy) and the chunk size."""
    with dask.config.set({"array.chunk-size": "256B"}):
        mask = xdrop.keep_mask((2**20,), 0.5, seed=SEED, step=STEP, xp=da)
    assert mask.numblocks == (4096,) and _per_chunk_build_data(mask) == 0
    assert np.array_equal(mask.compute(), xdrop.keep_mask((2**20,), 0.5, seed=SEED, step=STEP, xp=np))
    x = rand((64, 300))
    regular = da.from_array(x, chunks=(5, 7))  # the last chunk along each axis is shorter: still regular
    out = xdrop.dropout(regular, 0.3, seed=SEED, step=STEP)
    assert _per_chunk_build_data(out) == 0 and out.compute().tobytes() == ref(x).tobytes()
    # Irregular chunks still take their place from block_info (what the count above would have found)
    irregular = da.from_array(x, chunks=((1, 63), (100, 200)))
    out = xdrop.dropout(irregular, 0.3, seed=SEED, step=STEP)
    assert _per_chunk_build_data(out) == 4 and out.compute().tobytes() == ref(x).tobytes()


def test_backward_is_dropout_of_dout():
    x, dout = rand((9, 7)), rand((9, 7), seed=1)
    _, cache = xdrop.dropout_forward(da.from_array(x, chunks=4), 0.3, seed=5, step=2)
    dx = xdrop.dropout_backward(da.from_array(dout, chunks=(2, 7)), cache)
    assert dx.compute().tobytes() == xdrop.dropout(dout, 0.3, seed=5, step=2).tobytes()


def test_unknown_chunk_sizes_say_what_to_do():
    x = da.from_array(rand((10,)), chunks=5)
    unknown = x[x > 0]
    with pytest.raises(ValueError, match=r"x must have known chunk sizes.*compute_chunk_sizes\(\)"):
        xdrop.dropout(unknown, 0.5, seed=1)


# -- memory: a chunk draws a bounded number of decisions -------------------------------------------


@pytest.mark.parametrize(
    "shape, origin, cshape",
    [
        ((6, 11), (2, 3), (3, 4)),  # covering range
        ((2, 30000), (0, 5), (2, 7)),  # runs far apart: run by run
        ((5, 7, 9), (1, 2, 3), (4, 5, 6)),
        ((5, 7, 9), (1, 0, 0), (3, 7, 9)),  # contiguous
        ((4, 2**20), (0, 0), (4, 3)),
    ],
)
def test_chunk_keep_is_exact_and_draws_a_bounded_amount(shape, origin, cshape):
    """Equal to the chunk of the whole mask; never draws more than MAX_SPAN_FACTOR x the chunk."""
    requested = []

    def mask(start, n):
        requested.append(n)
        return xdrop.keep_mask((start + n,), 0.5, seed=3, xp=np)[start:]

    got = chunk_keep(shape, origin, cshape, mask)
    whole = xdrop.keep_mask(shape, 0.5, seed=3, xp=np)
    assert np.array_equal(got, whole[tuple(slice(o, o + c) for o, c in zip(origin, cshape, strict=True))])
    assert sum(requested) <= MAX_SPAN_FACTOR * math.prod(cshape) + CALL_COST_IN_DRAWS


# -- distributed ------------------------------------------------------------------------------------


def test_local_cluster_with_worker_processes():
    """Two worker processes, one thread each: the workers draw the bits of NumPy."""
    distributed = pytest.importorskip("distributed", reason="dask.distributed is not installed")
    x = rand((40, 50))
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=50
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        out = client.persist(xdrop.dropout(da.from_array(x, chunks=(7, 13)), 0.3, seed=SEED, step=STEP))
        distributed.wait(out)
        holders = {w for ws in client.who_has(out).values() for w in ws}
        workers = set(client.scheduler_info()["workers"])
        got = out.compute()
        total = client.compute(out.sum(dtype="float64")).result()
    assert len(workers) == 2 and holders and holders <= workers  # the chunks were drawn in worker processes
    assert got.tobytes() == ref(x).tobytes()
    assert total == pytest.approx(ref(x).sum(dtype="float64"), rel=1e-12)  # summation order differs
