"""torch.distributed on CPU (gloo, 127.0.0.1): DDP, data-parallel invariance, DTensor.

Each test spawns 1, 2 or 4 processes; a worker asserts and the parent re-raises
its error. Every run is bounded: process-group timeouts of 60 s and a join
deadline after which the workers are terminated and the test fails.
"""

import os
import socket
import time
from datetime import timedelta

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")
dist = pytest.importorskip("torch.distributed", reason="torch.distributed is not available")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

import torch.multiprocessing as mp  # noqa: E402
from torch.distributed.device_mesh import init_device_mesh  # noqa: E402
from torch.distributed.tensor import DTensor, Partial, Replicate, Shard, distribute_tensor  # noqa: E402
from torch.nn.parallel import DistributedDataParallel as DDP  # noqa: E402

import xdrop  # noqa: E402
import xdrop.torch  # noqa: E402
from xdrop.distributed import RANK_SHIFT, data_parallel  # noqa: E402

DEADLINE_S = 540  # process start-up (importing torch) dominates; slow on a loaded machine
SEED, P = 2**63 + 3, 0.4


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank, world, port, fn, args):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=60))
    try:
        fn(rank, world, *args)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def spawn(fn, world, *args):
    ctx = mp.start_processes(
        _entry, args=(world, _free_port(), fn, args), nprocs=world, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + DEADLINE_S
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                if p.is_alive():
                    p.terminate()
            pytest.fail(f"distributed workers did not finish within {DEADLINE_S} s")


def _gather(t):
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return parts


def _check_equal(got, want, what):
    """torch.equal, but a rank that fails says which rank, which tensor and how many elements differ."""
    if got.shape != want.shape or got.dtype != want.dtype:
        raise AssertionError(
            f"rank {dist.get_rank()}: {what}: {got.dtype}{tuple(got.shape)} != {want.dtype}{tuple(want.shape)}"
        )
    if not torch.equal(got, want):
        differ = got != want
        first = tuple(int(i) for i in differ.nonzero()[0])
        raise AssertionError(
            f"rank {dist.get_rank()}: {what}: {int(differ.sum())} of {want.numel()} elements differ, "
            f"first at {first}: {got[first].item()!r} != {want[first].item()!r}"
        )


# -- DDP: ranks never silently share masks -----------------------------------------------------------------


def _ddp_ranks_differ(rank, world):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), xdrop.torch.Dropout(0.5, seed=100 + rank))
    ddp = DDP(model)
    # DDP broadcast rank 0's buffers: every rank now holds seed 100 ...
    assert int(model[1].seed) == 100
    x = torch.ones(4, 16)
    for step in range(3):
        out = ddp(x)
        masks = [m != 0 for m in _gather(out)]
        # ... yet the masks differ, and each is the per-rank stream (step + rank << 40) of one process
        same = [r for r, m in enumerate(masks[1:], 1) if torch.equal(masks[0], m)]
        assert not same, f"rank {rank}, step {step}: ranks {same} drew rank 0's mask"
        ref = data_parallel(xdrop.torch.Dropout(0.5, seed=100), "shared")  # one process's stream
        ref.step.fill_(step + (rank << RANK_SHIFT))
        _check_equal(out != 0, ref(model[0](x)) != 0, f"step {step}: DDP mask vs the stream step + rank << 40")
        out.sum().backward()


def _resume(rank, world, path):
    torch.manual_seed(0)
    layer = xdrop.torch.Dropout(0.5, seed=SEED)
    ddp = DDP(torch.nn.Sequential(torch.nn.Linear(8, 8), layer))
    x = torch.ones(2, 8)
    for _ in range(3):
        ddp(x)
    if rank == 0:
        torch.save(ddp.module.state_dict(), path)
    dist.barrier()
    after = [ddp(x) for _ in range(2)]
    torch.manual_seed(0)
    resumed = torch.nn.Sequential(torch.nn.Linear(8, 8), xdrop.torch.Dropout(0.5))
    resumed.load_state_dict(torch.load(path))
    ddp2 = DDP(resumed)
    for i, want in enumerate(after):
        _check_equal(ddp2(x), want, f"resumed call {i} vs the uninterrupted run")


# -- data-parallel invariance: N ranks draw the masks of one process over the global batch ---------------------


GLOBAL_BATCH = 8
LAYERS = {
    "Dropout": (lambda: xdrop.torch.Dropout(P, seed=SEED), (GLOBAL_BATCH, 5)),
    "Dropout2d": (lambda: xdrop.torch.Dropout2d(P, seed=SEED), (GLOBAL_BATCH, 3, 2, 2)),
    "DropPath": (lambda: xdrop.torch.DropPath(P, seed=SEED), (GLOBAL_BATCH, 3)),
    "AlphaDropout": (lambda: xdrop.torch.AlphaDropout(P, seed=SEED), (GLOBAL_BATCH, 5)),
}


def _one_process_outputs(name, steps=3):
    make, shape = LAYERS[name]
    layer = data_parallel(make(), "shared")  # one process's masks, even inside the process group
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    return x, [layer(x) for _ in range(steps)]


def _global_batch(rank, world, name):
    x, wanted = _one_process_outputs(name)
    make, _ = LAYERS[name]
    layer = data_parallel(make(), "global_batch")
    size = GLOBAL_BATCH // world
    mine = x[rank * size : (rank + 1) * size].clone().requires_grad_()
    for step, want in enumerate(wanted):
        out = layer(mine)
        _check_equal(torch.cat(_gather(out.detach())), want, f"{name} step {step}: gathered output vs one process")
        (out * 3).sum().backward()  # the gradient is the same block of the mask
        if name != "AlphaDropout":
            _check_equal(mine.grad != 0, out.detach() != 0, f"{name} step {step}: gradient's mask vs output's")
        mine.grad = None


def _global_batch_ddp(rank, world):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 5), xdrop.torch.Dropout(P, seed=SEED))
    x = torch.randn(GLOBAL_BATCH, 5, generator=torch.Generator().manual_seed(1))
    size = GLOBAL_BATCH // world
    # The reference drops what the dropout layer received on the ranks, gathered: the Linear of the whole batch is
    # not bit-equal to the Linear of each rank's slice (MKL's GEMM rounds by its blocking, which follows the number
    # of rows and the data's alignment, and a slice starts at another alignment), and that is not dropout's law.
    seen = []
    model[1].register_forward_pre_hook(lambda _, args: seen.append(args[0].detach().clone()))
    ddp = DDP(data_parallel(model, "global_batch"))
    out = ddp(x[rank * size : (rank + 1) * size])
    want = xdrop.dropout(torch.cat(_gather(seen[0])), P, seed=SEED, step=0)
    _check_equal(torch.cat(_gather(out.detach())), want, "DDP global_batch output vs one process over the batch")


# -- DTensor: Shard / Replicate in, the same placements out, full_tensor() as one process -----------------------


def _placements_for(world):
    if world == 2:
        meshes = [((2,), [[Shard(0)], [Shard(1)], [Replicate()]])]
        meshes.append(((1, 2), [[Shard(0), Shard(1)], [Replicate(), Shard(0)]]))
    else:
        meshes = [((4,), [[Shard(0)], [Shard(1)], [Shard(2)], [Replicate()]])]
        meshes.append(
            ((2, 2), [[Shard(0), Shard(1)], [Shard(1), Shard(0)], [Replicate(), Shard(2)], [Shard(0), Shard(0)]])
        )
    return meshes


def _dtensor(rank, world):
    full = torch.randn(6, 9, 4, generator=torch.Generator().manual_seed(3))  # uneven shards too
    for mesh_shape, placement_sets in _placements_for(world):
        names = ("a", "b")[: len(mesh_shape)]
        mesh = init_device_mesh("cpu", mesh_shape, mesh_dim_names=names)
        for placements in placement_sets:
            dt = distribute_tensor(full, mesh, placements)
            for fn, layer in [
                (lambda t: xdrop.dropout(t, P, seed=SEED, step=5), xdrop.torch.Dropout(P, seed=SEED)),
                (lambda t: xdrop.dropout1d(t, P, seed=SEED, step=5), xdrop.torch.Dropout1d(P, seed=SEED)),
                (lambda t: xdrop.alpha_dropout(t, P, seed=SEED, step=5), xdrop.torch.AlphaDropout(P, seed=SEED)),
            ]:
                want = fn(full)
                out = fn(dt)
                where = f"mesh {mesh_shape} {placements}"
                assert isinstance(out, DTensor) and tuple(out.placements) == tuple(placements), (rank, where, out)
                _check_equal(out.full_tensor(), want, f"{where}: function's full_tensor() vs the full tensor's")
                layer.step.fill_(5)
                leaf = dt.detach().requires_grad_()
                got = layer(leaf)
                assert isinstance(got, DTensor) and tuple(got.placements) == tuple(placements), (rank, where, got)
                _check_equal(got.full_tensor(), want, f"{where}: layer's full_tensor() vs the full tensor's")
                got.sum().backward()
                assert isinstance(leaf.grad, DTensor), (rank, where, type(leaf.grad))
                ones, noise = torch.ones_like(full), layer._noise_shape(full)
                forward = xdrop.alpha_dropout_forward if layer._alpha else xdrop.dropout_forward
                ones_out = forward(ones, P, seed=SEED, step=5, noise_shape=noise)[1]  # full-tensor cache
                grad = xdrop.dropout_backward(torch.ones_like(full), ones_out)
                _check_equal(leaf.grad.full_tensor(), grad, f"{where}: gradient vs dropout_backward")
            partial = DTensor.from_local(torch.ones(2, 3), mesh, [Partial()] * len(mesh_shape), run_check=False)
            with pytest.raises(ValueError, match="Partial"):
                xdrop.dropout(partial, P, seed=SEED)
            with pytest.raises(ValueError, match="Partial"):
                xdrop.torch.Dropout(P, seed=SEED)(partial)


def _all_checks(rank, world, path):
    """Everything for one world size in one set of processes (each spawn costs seconds of imports)."""
    for name in LAYERS:
        _global_batch(rank, world, name)
    _global_batch_ddp(rank, world)
    if world > 1:
        _ddp_ranks_differ(rank, world)
        _resume(rank, world, path)
        _dtensor(rank, world)


@pytest.mark.parametrize("world", [1, 2, 4])
def test_gloo_processes(world, tmp_path):
    """world 1, 2, 4: global-batch invariance (layers and DDP) against one process; with 2 and 4 ranks also
    DDP's per-rank default, exact resume from state_dict, and DTensor Shard/Replicate/Partial on 1-d and 2-d meshes."""
    spawn(_all_checks, world, str(tmp_path / "ckpt.pt"))


def test_placement_of_splits_the_batch_in_rank_order():
    x = np.arange(24.0).reshape(8, 3)
    whole = xdrop.dropout(x, P, seed=SEED)
    parts = []
    for rank in range(4):
        gs, gst = xdrop.distributed.placement_of((2, 3), rank, 4)
        parts.append(xdrop.dropout(x[2 * rank : 2 * rank + 2], P, seed=SEED, global_shape=gs, global_start=gst))
    assert np.concatenate(parts).tobytes() == whole.tobytes()
