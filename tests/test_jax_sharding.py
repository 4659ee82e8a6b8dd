"""JAX sharding on 8 host CPU devices: sharded dropout equals unsharded NumPy, bit for bit.

``--xla_force_host_platform_device_count`` must be set before JAX starts, so the
checks run in a fresh interpreter (``CHECKS`` below), one per test, with a
bounded timeout; this process may already have imported JAX with one device.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("jax", reason="jax is not installed")

ROOT = Path(__file__).resolve().parents[1]

PRELUDE = """
import os
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import xdrop

assert len(jax.devices()) == 8, jax.devices()
SEED, STEP, p = 2**63 + 7, 2**35 + 1, 0.3
x = np.random.default_rng(0).standard_normal((16, 24, 3)).astype(np.float32)
COLLECTIVES = ("all-gather", "all-to-all", "collective-permute", "all-reduce", "reduce-scatter")

def meshes():
    for n in (1, 2, 4, 8):
        yield Mesh(np.array(jax.devices()[:n]), ("a",)), [P("a"), P(None, "a"), P("a", None, None)]
    yield Mesh(np.array(jax.devices()).reshape(2, 4), ("a", "b")), [P("a", "b"), P("b", "a"), P(None, ("a", "b"))]
"""

CHECKS = {
    "jit_keeps_sharding": """
# (alpha_dropout is left out: XLA contracts x * a + b into an FMA under jit, 1 ulp off NumPy, sharded or not)
for fn, kw in [(xdrop.dropout, {}), (xdrop.dropout2d, {}), (xdrop.drop_path, {})]:
    want = fn(x, p, seed=SEED, step=STEP, **kw)
    f = jax.jit(lambda a: fn(a, p, seed=SEED, step=STEP, **kw))
    for mesh, specs in meshes():
        for spec in specs:
            xs = jax.device_put(x, NamedSharding(mesh, spec))
            out = f(xs)
            assert np.asarray(out).tobytes() == want.tobytes(), (fn.__name__, mesh.shape, spec)
            assert out.sharding.is_equivalent_to(xs.sharding, x.ndim), (fn.__name__, spec, out.sharding)
            if fn is xdrop.dropout:  # the elementwise kernel partitions with no communication
                hlo = f.lower(xs).compile().as_text()
                assert not [c for c in COLLECTIVES if c in hlo], (spec, hlo[:2000])
print("ok")
""",
    "traced_step_under_jit": """
want = xdrop.dropout(x, p, seed=SEED, step=5)
f = jax.jit(lambda a, s: xdrop.dropout(a, p, seed=SEED, step=s))
for mesh, specs in meshes():
    for spec in specs:
        xs = jax.device_put(x, NamedSharding(mesh, spec))
        out = f(xs, jnp.uint32(5))
        assert np.asarray(out).tobytes() == want.tobytes(), (mesh.shape, spec)
        assert out.sharding.is_equivalent_to(xs.sharding, x.ndim)
print("ok")
""",
    "shard_map_with_global_start": """
want = xdrop.dropout(x, p, seed=SEED, step=STEP)
want2d = xdrop.dropout2d(x[None], p, seed=SEED, step=STEP)[0]
for n in (1, 2, 4, 8):
    mesh = Mesh(np.array(jax.devices()[:n]), ("a",))
    for axis in (0, 1):
        size = x.shape[axis] // n

        def body(block, axis=axis, size=size):
            first = jax.lax.axis_index("a").astype(jnp.uint32) * size  # traced
            start = tuple(first if a == axis else 0 for a in range(x.ndim))
            one = xdrop.dropout(block, p, seed=SEED, step=STEP, global_shape=x.shape, global_start=start)
            two = xdrop.dropout2d(block[None], p, seed=SEED, step=STEP, global_shape=(1, *x.shape),
                                  global_start=(0, *start))[0]
            return one, two

        spec = P(*[("a" if a == axis else None) for a in range(x.ndim)])
        f = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=spec, out_specs=(spec, spec)))
        xs = jax.device_put(x, NamedSharding(mesh, spec))
        one, two = f(xs)
        assert np.asarray(one).tobytes() == want.tobytes(), (n, axis)
        assert np.asarray(two).tobytes() == want2d.tobytes(), (n, axis)
        assert one.sharding.is_equivalent_to(xs.sharding, x.ndim)
print("ok")
""",
    "traced_start_must_be_unsigned": """
def body(block):
    start = (jax.lax.axis_index("a") * 8, 0, 0)  # int32: a negative value could not be rejected
    return xdrop.dropout(block, p, seed=SEED, global_shape=x.shape, global_start=start)

mesh = Mesh(np.array(jax.devices()[:2]), ("a",))
try:
    jax.jit(jax.shard_map(body, mesh=mesh, in_specs=P("a"), out_specs=P("a")))(x)
except TypeError as e:
    assert "traced starts must be unsigned" in str(e), e
else:
    raise AssertionError("a signed traced start was accepted")
print("ok")
""",
}


@pytest.mark.parametrize("name", list(CHECKS))
def test_on_eight_cpu_devices(name):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("JAX_ENABLE_X64", None)
    script = textwrap.dedent(PRELUDE) + textwrap.dedent(CHECKS[name])
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT, check=False
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.strip().endswith("ok")
