"""xdrop.flax: NNX and linen layers give the bits of xdrop.dropout on NumPy, under jit, grad, scan and remat."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="xdrop.flax needs jax")
pytest.importorskip("flax", reason="xdrop.flax needs flax")
import jax.numpy as jnp  # noqa: E402
from flax import linen, nnx  # noqa: E402

import xdrop  # noqa: E402
import xdrop.flax  # noqa: E402

SEED = 2**40 + 123  # both key words matter


def _x(shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def _want(x: np.ndarray, rate: float, step: int, noise_shape: tuple[int, ...] | None = None) -> np.ndarray:
    return np.asarray(xdrop.dropout(x, rate, seed=SEED, step=step, noise_shape=noise_shape))


def _same_bits(got: object, want: np.ndarray) -> None:
    got = np.asarray(got)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.tobytes() == want.tobytes()


def test_nnx_eager_steps_match_functional() -> None:
    x = _x((4, 33))
    layer = xdrop.flax.Dropout(0.3, seed=SEED)
    for step in range(3):
        _same_bits(layer(jnp.asarray(x)), _want(x, 0.3, step))
    assert [int(w) for w in layer.step[...]] == [3, 0]


def test_nnx_jit_advances_step_and_matches() -> None:
    x = _x((8, 16))
    layer = xdrop.flax.Dropout(0.5, seed=SEED)

    @nnx.jit
    def run(m: xdrop.flax.Dropout, v: jax.Array) -> jax.Array:
        return m(v)

    outs = [run(layer, jnp.asarray(x)) for _ in range(3)]
    for step, out in enumerate(outs):
        _same_bits(out, _want(x, 0.5, step))


def test_nnx_step_carry_into_high_word() -> None:
    x = _x((64,))
    layer = xdrop.flax.Dropout(0.5, seed=SEED)
    layer.step[...] = jnp.asarray([2**32 - 1, 6], jnp.uint32)
    _same_bits(layer(jnp.asarray(x)), _want(x, 0.5, 6 * 2**32 + 2**32 - 1))
    _same_bits(layer(jnp.asarray(x)), _want(x, 0.5, 7 * 2**32))


def test_nnx_broadcast_dims_and_deterministic() -> None:
    x = _x((3, 5, 7))
    layer = xdrop.flax.Dropout(0.4, broadcast_dims=(-1,), seed=SEED)
    _same_bits(layer(jnp.asarray(x)), _want(x, 0.4, 0, (3, 5, 1)))
    assert layer(jnp.asarray(x), deterministic=True) is not None
    _same_bits(layer(jnp.asarray(x), deterministic=True), x)
    layer.eval()
    _same_bits(layer(jnp.asarray(x)), x)
    layer.train()
    _same_bits(layer(jnp.asarray(x)), _want(x, 0.4, 1, (3, 5, 1)))


def test_nnx_grad_is_dropout_of_cotangent() -> None:
    x = _x((6, 10))
    layer = xdrop.flax.Dropout(0.25, seed=SEED)

    def loss(m: xdrop.flax.Dropout, v: jax.Array) -> jax.Array:
        return jnp.sum(m(v) * 3.0)

    g = nnx.grad(loss, argnums=1)(layer, jnp.asarray(x))
    _same_bits(g, _want(np.full_like(x, 3.0), 0.25, 0))


def test_nnx_scan_and_remat_match_per_step_calls() -> None:
    x = _x((5, 12))
    layer = xdrop.flax.Dropout(0.5, seed=SEED)

    @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=(nnx.Carry, 0))
    def body(m: xdrop.flax.Dropout, row: jax.Array) -> tuple[xdrop.flax.Dropout, jax.Array]:
        return m, nnx.remat(lambda mm, r: mm(r))(m, row)

    _, rows = body(layer, jnp.asarray(x))
    for i in range(x.shape[0]):
        _same_bits(rows[i], _want(x[i], 0.5, i))
    assert int(layer.step[0]) == x.shape[0]


def test_nnx_seed_from_rngs_is_reproducible_and_state_restores() -> None:
    x = jnp.asarray(_x((4, 4)))
    a = xdrop.flax.Dropout(0.5, rngs=nnx.Rngs(dropout=3))
    b = xdrop.flax.Dropout(0.5, rngs=nnx.Rngs(dropout=3))
    c = xdrop.flax.Dropout(0.5, rngs=nnx.Rngs(dropout=4))
    assert np.array_equal(a.seed[...], b.seed[...]) and not np.array_equal(a.seed[...], c.seed[...])
    a(x)
    saved = {k: np.asarray(v) for k, v in nnx.to_flat_state(nnx.state(a, xdrop.flax.DropoutState))}
    first = a(x)  # step 1
    restored = nnx.state(b, xdrop.flax.DropoutState)
    for k, v in nnx.to_flat_state(restored):
        v[...] = jnp.asarray(saved[k])
    nnx.update(b, restored)  # b resumes where a was checkpointed
    assert int(b.step[0]) == 1
    _same_bits(b(x), np.asarray(first))


def test_nnx_needs_a_seed_source_and_checks_rate() -> None:
    with pytest.raises(TypeError, match=r"seed= .* or rngs="):
        xdrop.flax.Dropout(0.5)
    with pytest.raises(ValueError, match="rate"):
        xdrop.flax.Dropout(1.5, seed=0)
    with pytest.raises(ValueError, match="broadcast_dims"):
        xdrop.flax.Dropout(0.5, broadcast_dims=(3,), seed=0)(jnp.ones((2, 2)))


def _seed_of(words: object) -> int:
    lo, hi = (int(w) for w in np.asarray(words))
    return lo | hi << 32


def test_nnx_takes_the_arguments_of_nnx_dropout() -> None:
    for ours, theirs in (
        (xdrop.flax.Dropout.__init__, nnx.Dropout.__init__),
        (xdrop.flax.Dropout.__call__, nnx.Dropout.__call__),
    ):
        missing = set(inspect.signature(theirs).parameters) - set(inspect.signature(ours).parameters)
        assert not missing, f"{theirs.__qualname__} takes {missing}"


def test_nnx_seed_from_an_rng_stream() -> None:
    x = _x((4, 8))
    from_rngs = xdrop.flax.Dropout(0.5, rngs=nnx.Rngs(dropout=3))
    from_stream = xdrop.flax.Dropout(0.5, rngs=nnx.Rngs(dropout=3).dropout)  # nnx.Dropout(..., rngs=rngs.dropout)
    other = xdrop.flax.Dropout(0.5, rngs=nnx.Rngs(dropout=4).dropout)
    assert np.array_equal(from_stream.seed[...], from_rngs.seed[...])
    assert not np.array_equal(from_stream.seed[...], other.seed[...])
    got = from_stream(jnp.asarray(x))
    _same_bits(got, np.asarray(xdrop.dropout(x, 0.5, seed=_seed_of(from_stream.seed[...]), step=0)))


def test_nnx_deterministic_none_must_be_given_per_call_or_view() -> None:
    x = _x((4, 8))
    layer = xdrop.flax.Dropout(0.5, seed=SEED, deterministic=None)  # nnx.Dropout's form
    with pytest.raises(ValueError, match=r"deterministic=None .* pass deterministic=True or False"):
        layer(jnp.asarray(x))
    assert [int(w) for w in layer.step[...]] == [0, 0]  # the refused call took no step
    _same_bits(layer(jnp.asarray(x), deterministic=False), _want(x, 0.5, 0))
    _same_bits(layer(jnp.asarray(x), deterministic=True), x)
    layer.train()
    _same_bits(layer(jnp.asarray(x)), _want(x, 0.5, 1))


def test_nnx_call_with_rngs_draws_from_the_key() -> None:
    x = _x((4, 8))
    layer = xdrop.flax.Dropout(0.5, seed=SEED)
    key = jax.random.key(5)
    want = np.asarray(xdrop.dropout(x, 0.5, seed=_seed_of(xdrop.flax.dropout_seed(key)), step=0))
    _same_bits(layer(jnp.asarray(x), rngs=key), want)
    streamed = nnx.Rngs(dropout=key).dropout()  # the first key an Rngs' "dropout" stream gives
    want_streamed = np.asarray(xdrop.dropout(x, 0.5, seed=_seed_of(xdrop.flax.dropout_seed(streamed)), step=0))
    _same_bits(layer(jnp.asarray(x), rngs=nnx.Rngs(dropout=key)), want_streamed)
    assert want_streamed.tobytes() != want.tobytes()
    assert [int(w) for w in layer.step[...]] == [0, 0]  # the layer's own stream is left where it was
    _same_bits(layer(jnp.asarray(x)), _want(x, 0.5, 0))


def test_linen_init_takes_no_step_and_apply_i_draws_step_i() -> None:
    class Model(linen.Module):
        @linen.compact
        def __call__(self, v: jax.Array) -> jax.Array:
            return xdrop.flax.LinenDropout(0.5, seed=SEED)(linen.Dense(6)(v), deterministic=False)

    x = _x((3, 4))
    model = Model()
    variables = model.init(jax.random.key(0), jnp.asarray(x))  # training mode, as Flax's init usually runs
    assert [int(w) for w in variables["xdrop"]["LinenDropout_0"]["step"]] == [0, 0]
    dense = linen.Dense(6).apply({"params": variables["params"]["Dense_0"]}, jnp.asarray(x))
    train = jax.jit(lambda v, a: model.apply(v, a, mutable=["xdrop"]))
    for step in range(3):
        out, updated = train(variables, jnp.asarray(x))
        _same_bits(out, _want(np.asarray(dense), 0.5, step))
        variables = {**variables, **updated}


def test_linen_training_apply_without_mutable_raises() -> None:
    class Model(linen.Module):
        @linen.compact
        def __call__(self, v: jax.Array, train: bool) -> jax.Array:
            return xdrop.flax.LinenDropout(0.5, seed=SEED, name="drop")(v, deterministic=not train)

    x = jnp.ones((2, 4))
    variables = Model().init(jax.random.key(0), x, True)
    with pytest.raises(ValueError, match=r"LinenDropout 'drop' with seed=.*apply with mutable=\['xdrop'\]"):
        Model().apply(variables, x, True)
    _same_bits(Model().apply(variables, x, False), np.ones((2, 4), np.float32))  # inference needs no mutable


def test_linen_seeded_step_collection_and_rng_mode() -> None:
    x = _x((3, 9))
    layer = xdrop.flax.LinenDropout(0.3, seed=SEED, deterministic=False)
    variables: dict[str, object] = {}
    for step in range(2):
        out, variables = layer.apply(variables, jnp.asarray(x), mutable=["xdrop"])
        _same_bits(out, _want(x, 0.3, step))
    # seed=None: a seed per call from make_rng (which folds in the module path, as flax.linen.Dropout's does)
    rng_layer = xdrop.flax.LinenDropout(0.3)
    run = lambda k: np.asarray(rng_layer.apply({}, jnp.asarray(x), deterministic=False, rngs={"dropout": k}))  # noqa: E731
    a, b, c = run(jax.random.key(1)), run(jax.random.key(1)), run(jax.random.key(2))
    assert a.tobytes() == b.tobytes() and a.tobytes() != c.tobytes()
    kept = a != 0
    scale = np.float32(2**32 / xdrop._lib._stream.keep_count(0.3))
    assert np.array_equal(a[kept], x[kept] * scale) and 0 < kept.sum() < kept.size
    _same_bits(rng_layer.apply({}, jnp.asarray(x), deterministic=True), x)


def test_linen_inside_a_model_under_jit() -> None:
    class Model(linen.Module):
        @linen.compact
        def __call__(self, v: jax.Array) -> jax.Array:
            return xdrop.flax.LinenDropout(0.5, seed=SEED)(v, deterministic=False)

    x = _x((2, 20))
    out, _ = jax.jit(lambda v: Model().apply({}, v, mutable=["xdrop"]))(jnp.asarray(x))
    _same_bits(out, _want(x, 0.5, 0))
