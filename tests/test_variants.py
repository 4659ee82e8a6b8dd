"""The dropout family: channel dropout, alpha dropout, drop path, shared-across-time masks.

Expected values come from the independent scalar spec (tests/spec_v1.py) on the
noise shape and from the formulas written out here, never from xdrop itself.
"""

import math

import numpy as np
import pytest
from helpers import inverted, random_input, spec_keep
from spec_v1 import alpha_bits

import xdrop
from xdrop import verify
from xdrop._lib._stream import keep_count

ALPHA_PRIME = -1.7580993408473766  # PyTorch's -lambda * alpha of SELU (aten/src/ATen/native/Dropout.cpp)

# name -> (function, forward, noise shape of x.shape, example shape)
CHANNEL = {
    "dropout1d": (xdrop.dropout1d, xdrop.dropout1d_forward, lambda s: (*s[:-1], 1)),
    "dropout2d": (xdrop.dropout2d, xdrop.dropout2d_forward, lambda s: (*s[:-2], 1, 1)),
    "dropout3d": (xdrop.dropout3d, xdrop.dropout3d_forward, lambda s: (*s[:-3], 1, 1, 1)),
}
SHAPES = {
    "dropout1d": [(3, 5, 7), (5, 7)],
    "dropout2d": [(3, 4, 2, 3), (1, 4, 2, 3)],  # no unbatched form: torch 2.x reads 3-d as (N, C, L)
    "dropout3d": [(2, 3, 2, 2, 3), (3, 2, 2, 3)],
}


def alpha_abc(p):
    """PyTorch's constants with 1 - p replaced by the effective keep probability q."""
    q = keep_count(p) / 2**32
    a = 1.0 / math.sqrt(q * (1.0 + (1.0 - q) * ALPHA_PRIME**2))
    return a, -a * (1.0 - q) * ALPHA_PRIME, a * q * ALPHA_PRIME


def spec_alpha(p, dtype):
    """The spec's (a, b, c): the exact reals, each rounded once to ``dtype`` (tests/spec_v1.py)."""
    dtype = np.dtype(dtype)
    uint = {2: np.uint16, 4: np.uint32, 8: np.uint64}[dtype.itemsize]
    return tuple(np.array(v, uint).view(dtype)[()] for v in alpha_bits(keep_count(p), dtype.name))


def alpha_expected(x, keep, p):
    if keep_count(p) == 0:
        return np.zeros_like(x)
    a, b, c = spec_alpha(p, x.dtype)
    kept = x * a if b == 0 else x * a + b
    return np.where(keep, kept, c)


# -- the same bits as the independent spec, on every backend ------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("p", [0.0, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("name", list(CHANNEL))
def test_channel_dropout_matches_spec(backend, name, p, dtype):
    fn, _, noise = CHANNEL[name]
    for shape in SHAPES[name]:
        x_np = random_input(shape, dtype)
        got = backend.to_numpy(fn(backend.asarray(x_np), p, seed=11, step=4))
        assert got.tobytes() == inverted(x_np, spec_keep(noise(shape), p, 11, 4), p).tobytes()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("p", [0.0, 0.2, 0.5, 0.9, 1.0])
def test_alpha_dropout_matches_spec(backend, p, dtype):
    x_np = random_input((6, 13), dtype)
    got = backend.to_numpy(xdrop.alpha_dropout(backend.asarray(x_np), p, seed=2**40 + 3, step=9))
    assert got.tobytes() == alpha_expected(x_np, spec_keep((6, 13), p, 2**40 + 3, 9), p).tobytes()


@pytest.mark.parametrize("p", [0.0, 0.25, 0.5, 1.0])
def test_feature_alpha_dropout_matches_spec(backend, p):
    x_np = random_input((4, 3, 2, 5), "float32")
    got = backend.to_numpy(xdrop.feature_alpha_dropout(backend.asarray(x_np), p, seed=5, step=1))
    assert got.tobytes() == alpha_expected(x_np, spec_keep((4, 3, 1, 1), p, 5, 1), p).tobytes()


@pytest.mark.parametrize("scale_by_keep", [True, False])
@pytest.mark.parametrize("p", [0.0, 0.4, 1.0])
def test_drop_path_matches_spec(backend, p, scale_by_keep):
    x_np = random_input((9, 4, 3), "float32")
    got = backend.to_numpy(xdrop.drop_path(backend.asarray(x_np), p, seed=8, scale_by_keep=scale_by_keep))
    keep = spec_keep((9, 1, 1), p, 8, 0)
    expected = inverted(x_np, keep, p) if scale_by_keep else np.where(keep, x_np, np.float32(0))
    assert got.tobytes() == expected.tobytes()


# -- zero patterns ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CHANNEL))
def test_channel_dropout_zeroes_whole_channels(backend, name):
    fn = CHANNEL[name][0]
    batched = SHAPES[name][0]
    x = backend.asarray(np.ones(batched))
    out = backend.to_numpy(fn(x, 0.5, seed=3)).reshape(batched[0] * batched[1], -1)
    per_channel = out[:, 0]
    assert np.all(out == per_channel[:, None])  # one value per (sample, channel)
    assert set(np.unique(per_channel)) == {0.0, 2.0}


@pytest.mark.parametrize("name", ["dropout1d", "dropout3d"])
def test_unbatched_equals_batch_of_one(backend, name):
    fn = CHANNEL[name][0]
    x_np = random_input(SHAPES[name][1], "float32")
    alone = backend.to_numpy(fn(backend.asarray(x_np), 0.5, seed=21, step=2))
    batch = backend.to_numpy(fn(backend.asarray(x_np[None]), 0.5, seed=21, step=2))
    assert alone.tobytes() == batch[0].tobytes()


def test_dropout2d_reads_3d_input_as_torch_2_does(numpy_ref):
    """(N, C, L) with torch 2.x's UserWarning, not (C, H, W): the bits of dropout1d."""
    x = np.ones((16, 2, 3))
    with pytest.warns(UserWarning, match="assuming that channel-wise 1D dropout behavior is desired"):
        out = xdrop.dropout2d(x, 0.5, seed=4)
    assert np.array_equal(out, xdrop.dropout1d(x, 0.5, seed=4))


@pytest.mark.parametrize(
    "fn, shape, noise",
    [
        (xdrop.dropout2d, (3, 4), (3, 4)),
        (xdrop.dropout2d, (2, 3, 2, 2, 2), (2, 3, 1, 1, 1)),
        (xdrop.dropout3d, (3, 2, 2), (3, 1, 1)),
        (xdrop.dropout3d, (5,), (5,)),
        (xdrop.dropout3d, (1, 2, 2, 2, 2, 2), (1, 2, 1, 1, 1, 1)),
    ],
)
def test_deprecated_ranks_warn_as_torch_and_use_its_noise_shape(fn, shape, noise):
    name = fn.__name__
    with pytest.warns(UserWarning, match=f"Received a {len(shape)}-D input to {name}, which is deprecated") as rec:
        out = fn(np.ones(shape), 0.5, seed=8)
    assert rec[0].filename == __file__  # the warning names the caller's line
    assert np.array_equal(out, xdrop.dropout(np.ones(shape), 0.5, seed=8, noise_shape=noise))


def test_drop_path_zeroes_whole_samples(backend):
    out = backend.to_numpy(xdrop.drop_path(backend.asarray(np.ones((32, 3, 2))), 0.5, seed=6))
    per_sample = out.reshape(32, -1)
    assert np.all(per_sample == per_sample[:, :1]) and set(np.unique(per_sample)) == {0.0, 2.0}


def test_locked_dropout_shares_the_mask_across_time(backend):
    """Variational / locked dropout for (N, T, F) sequences is noise_shape=(N, 1, F)."""
    x_np = random_input((4, 6, 5), "float32")
    out = backend.to_numpy(xdrop.dropout(backend.asarray(x_np), 0.5, seed=2, noise_shape=(None, 1, None)))
    zero = out == 0
    assert np.all(zero == zero[:, :1, :]) and 0 < zero.sum() < zero.size
    assert out.tobytes() == inverted(x_np, spec_keep((4, 1, 5), 0.5, 2, 0), 0.5).tobytes()


def test_feature_alpha_dropout_sets_whole_channels(backend):
    out = backend.to_numpy(xdrop.feature_alpha_dropout(backend.asarray(np.zeros((8, 4, 3))), 0.5, seed=1))
    assert np.all(out == out[:, :, :1])
    _, b, c = alpha_abc(0.5)
    np.testing.assert_allclose(sorted(set(out.ravel().tolist())), sorted([c, b]), rtol=1e-15)


# -- p = 0, p = 1, training = False ------------------------------------------------------------

ALL = {
    "dropout1d": (xdrop.dropout1d, (2, 3, 4)),
    "dropout2d": (xdrop.dropout2d, (2, 3, 4, 2)),
    "dropout3d": (xdrop.dropout3d, (2, 3, 1, 4, 2)),
    "alpha_dropout": (xdrop.alpha_dropout, (5, 4)),
    "feature_alpha_dropout": (xdrop.feature_alpha_dropout, (2, 3, 4)),
    "drop_path": (xdrop.drop_path, (6, 2)),
}


@pytest.mark.parametrize("name", list(ALL))
def test_p_zero_is_identity_p_one_is_zeros_eval_is_x(backend, name):
    fn, shape = ALL[name]
    x_np = random_input(shape, "float32")
    x_np.ravel()[0] = -0.0
    x = backend.asarray(x_np)
    assert backend.to_numpy(fn(x, 0.0, seed=1)).tobytes() == x_np.tobytes()
    ones = backend.to_numpy(fn(x, 1.0, seed=1))
    assert not ones.any() and not np.signbit(ones).any()
    assert fn(x, 0.5, seed=1, training=False) is x


@pytest.mark.parametrize("name", list(ALL))
def test_input_is_never_modified(backend, name):
    fn, shape = ALL[name]
    x_np = random_input(shape, "float32")
    x = backend.asarray(x_np.copy())
    fn(x, 0.5, seed=3)
    assert backend.to_numpy(x).tobytes() == x_np.tobytes()


def test_generator_supplies_and_advances_the_step():
    gen = xdrop.Generator(5, step=2)
    x = np.ones((3, 4, 2))
    first = xdrop.dropout1d(x, 0.5, seed=gen)
    _, cache = xdrop.alpha_dropout_forward(x, 0.5, seed=gen)
    assert gen.step == 4 and cache.step == 3
    assert first.tobytes() == xdrop.dropout1d(x, 0.5, seed=5, step=2).tobytes()


# -- expectation -------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.2, 0.7])
@pytest.mark.parametrize(
    "name, shape",
    [("dropout1d", (2**14, 8, 2)), ("dropout2d", (2**14, 8, 1, 2)), ("dropout3d", (2**14, 8, 1, 1, 2))],
)
def test_channel_dropout_expectation_is_x(backend, name, shape, p):
    """Mean over 2**17 independent channels within 5 standard errors: false alarm 5.7e-7 per case."""
    out = backend.to_numpy(CHANNEL[name][0](backend.asarray(np.ones(shape)), p, seed=17, step=1))
    q = keep_count(p) / 2**32
    assert abs(out.mean() - 1.0) < 5 * math.sqrt((1 - q) / q / 2**17)


@pytest.mark.parametrize("p", [0.1, 0.6])
def test_drop_path_expectation_is_x(backend, p):
    """Mean over 2**17 samples within 5 standard errors (false alarm 5.7e-7 per case)."""
    out = backend.to_numpy(xdrop.drop_path(backend.asarray(np.ones((2**17, 3))), p, seed=4))
    q = keep_count(p) / 2**32
    assert abs(out.mean() - 1.0) < 5 * math.sqrt((1 - q) / q / 2**17)


@pytest.mark.parametrize("p", [0.05, 0.5, 0.9])
def test_alpha_dropout_keeps_mean_zero_and_variance_one(backend, p):
    """Standard-normal input, n = 2**18: mean and E[out**2] each within 5 standard errors.

    The standard errors are exact: Var(out) = 1, and the fourth moment follows
    from out = a*x + b (kept, x ~ N(0, 1)) or c (dropped). Two-sided false-alarm
    rate 5.7e-7 per check (normal approximation); seeds are fixed.
    """
    n = 2**18
    x_np = random_input((n,), "float64", seed=123)
    out = backend.to_numpy(xdrop.alpha_dropout(backend.asarray(x_np), p, seed=31, step=5))
    q = keep_count(p) / 2**32
    a, b, c = alpha_abc(p)
    mu4 = q * (3 * a**4 + 6 * a**2 * b**2 + b**4) + (1 - q) * c**4
    assert abs(out.mean()) < 5 / math.sqrt(n)
    assert abs(np.mean(out**2) - 1.0) < 5 * math.sqrt((mu4 - 1.0) / n)


def test_torch_alpha_dropout_has_the_same_moments():
    """torch's own output passes the moment checks of our formula (5 standard errors, as above)."""
    torch = pytest.importorskip("torch", reason="compares with torch.nn.functional.alpha_dropout")
    n, p = 2**18, 0.5
    with torch.random.fork_rng():
        torch.manual_seed(0)
        out = torch.nn.functional.alpha_dropout(torch.randn(n, dtype=torch.float64), p, training=True).numpy()
    a, b, c = alpha_abc(p)
    mu4 = 0.5 * (3 * a**4 + 6 * a**2 * b**2 + b**4) + 0.5 * c**4
    assert abs(out.mean()) < 5 / math.sqrt(n)
    assert abs(np.mean(out**2) - 1.0) < 5 * math.sqrt((mu4 - 1.0) / n)


def test_feature_alpha_dropout_keeps_mean_zero_and_variance_one(backend):
    """2**16 channels of 4 elements: channel means of out and out**2 are i.i.d., so their
    empirical standard errors apply; 5 of them, false alarm about 5.7e-7 per check."""
    x_np = random_input((2**14, 4, 4), "float64", seed=5)
    out = backend.to_numpy(xdrop.feature_alpha_dropout(backend.asarray(x_np), 0.3, seed=9))
    for values, target in ((out, 0.0), (out**2, 1.0)):
        per_channel = values.mean(axis=2).ravel()
        stderr = per_channel.std(ddof=1) / math.sqrt(per_channel.size)
        assert abs(per_channel.mean() - target) < 5 * stderr


def test_alpha_constants_agree_with_torch():
    """Fit torch's affine map from its own output (its RNG differs, so no bits are compared)."""
    torch = pytest.importorskip("torch", reason="compares with torch.nn.functional.alpha_dropout")
    x = torch.linspace(-3, 3, 4001, dtype=torch.float64)
    for p in (0.1, 0.5, 0.8):
        with torch.random.fork_rng():
            torch.manual_seed(0)
            ref = torch.nn.functional.alpha_dropout(x, p, training=True)
        a, b, c = alpha_abc(p)
        dropped_value = torch.mode(ref).values.item()  # the one repeated value
        kept = ref != dropped_value
        fit_a, fit_b = np.polyfit(x[kept].numpy(), ref[kept].numpy(), 1)
        # q differs from 1 - p by at most 2**-33: the constants agree to ~1e-9.
        np.testing.assert_allclose([fit_a, fit_b, dropped_value], [a, b, c], rtol=1e-8, atol=1e-9)


# -- gradient identity -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(CHANNEL))
def test_channel_backward_is_the_variant_of_dout(backend, name, dtype):
    fn, forward, _ = CHANNEL[name]
    shape = SHAPES[name][0]
    x = backend.asarray(random_input(shape, dtype))
    dout = backend.asarray(random_input(shape, dtype, seed=1))
    _, cache = forward(x, 0.4, seed=6, step=3)
    dx = backend.to_numpy(xdrop.dropout_backward(dout, cache))
    assert dx.tobytes() == backend.to_numpy(fn(dout, 0.4, seed=6, step=3)).tobytes()


@pytest.mark.parametrize("scale_by_keep", [True, False])
def test_drop_path_backward(backend, scale_by_keep):
    x = backend.asarray(random_input((7, 3), "float32"))
    dout_np = random_input((7, 3), "float32", seed=2)
    _, cache = xdrop.drop_path_forward(x, 0.5, seed=3, scale_by_keep=scale_by_keep)
    dx = backend.to_numpy(xdrop.dropout_backward(backend.asarray(dout_np), cache))
    keep = spec_keep((7, 1), 0.5, 3, 0)
    expected = inverted(dout_np, keep, 0.5) if scale_by_keep else np.where(keep, dout_np, np.float32(0))
    assert dx.tobytes() == expected.tobytes()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    "name, noise", [("alpha_dropout", lambda s: s), ("feature_alpha_dropout", lambda s: (*s[:2], 1))]
)
def test_alpha_backward_is_dout_times_a_where_kept(backend, name, noise, dtype):
    forward = getattr(xdrop, name + "_forward")
    shape = (5, 3, 4)
    x = backend.asarray(random_input(shape, dtype))
    dout_np = random_input(shape, dtype, seed=4)
    _, cache = forward(x, 0.3, seed=12, step=7)
    dx = backend.to_numpy(xdrop.dropout_backward(backend.asarray(dout_np), cache))
    a = spec_alpha(0.3, dout_np.dtype)[0]
    expected = np.where(spec_keep(noise(shape), 0.3, 12, 7), dout_np * a, dout_np.dtype.type(0))
    assert dx.tobytes() == expected.tobytes()


@pytest.mark.parametrize("name", ["dropout2d", "alpha_dropout", "feature_alpha_dropout", "drop_path"])
def test_torch_autograd_equals_backward(torch_backend, name):
    import torch

    shape = (3, 4, 2, 2)
    x = torch_backend.asarray(random_input(shape, "float32")).requires_grad_()
    dout = torch_backend.asarray(random_input(shape, "float32", seed=3))
    getattr(xdrop, name)(x, 0.4, seed=8, step=1).backward(dout)
    _, cache = getattr(xdrop, name + "_forward")(x.detach(), 0.4, seed=8, step=1)
    assert torch.equal(x.grad, xdrop.dropout_backward(dout, cache))


def test_alpha_finite_differences_agree_in_float64(numpy_ref):
    x = random_input((4, 5), "float64")
    dout = random_input((4, 5), "float64", seed=1)
    _, cache = xdrop.alpha_dropout_forward(x, 0.5, seed=3)
    dx = xdrop.dropout_backward(dout, cache)
    num = verify.central_differences(lambda a: xdrop.alpha_dropout(a, 0.5, seed=3), x, dout)
    np.testing.assert_allclose(dx, num, rtol=1e-7, atol=1e-9)


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fn, shape, match",
    [
        (
            xdrop.dropout1d,
            (2, 3, 4, 5),
            r"dropout1d expects x with 2 dims \(C, L\) or 3 dims \(N, C, L\), got x.ndim=4",
        ),
        (xdrop.dropout1d, (4,), "got x.ndim=1"),
        (xdrop.dropout2d, (2,), r"dropout2d expects x .*got x.ndim=1.*feature dropout needs at least 2 dimensions"),
        (xdrop.dropout3d, (), r"dropout3d expects x with 4 dims \(C, D, H, W\) or 5 dims .*got x.ndim=0"),
        (xdrop.feature_alpha_dropout, (5,), r"feature_alpha_dropout expects x with at least 2 dims .*got x.ndim=1"),
        (xdrop.drop_path, (), r"drop_path expects x with at least 1 dim .*got x.ndim=0"),
    ],
)
def test_wrong_rank_names_the_expected_ranks(fn, shape, match):
    gen = xdrop.Generator(1)
    with pytest.raises(RuntimeError, match=match) as err:  # torch's exception type, and xdrop's:
        fn(np.ones(shape), 0.5, seed=gen)
    assert isinstance(err.value, ValueError) and gen.step == 0
    with pytest.raises(ValueError, match=match):
        fn(np.ones(shape), 0.5, seed=gen)
    assert gen.step == 0  # a rejected call draws nothing


@pytest.mark.parametrize("name", list(ALL))
def test_bad_p_and_dtype(name):
    fn, shape = ALL[name]
    with pytest.raises(ValueError, match=r"p must be a probability in \[0, 1\], got p=1.5"):
        fn(np.ones(shape), 1.5, seed=1)
    with pytest.raises(TypeError, match=r"x must have a real floating dtype, got x.dtype=int64"):
        fn(np.ones(shape, dtype=np.int64), 0.5, seed=1)


def test_bad_scale_by_keep_and_missing_seed():
    with pytest.raises(TypeError, match="scale_by_keep must be True or False, got scale_by_keep=1 of type int"):
        xdrop.drop_path(np.ones((2, 2)), 0.5, seed=1, scale_by_keep=1)
    with pytest.raises(TypeError, match="seed must be an integer"):
        xdrop.alpha_dropout_forward(np.ones(3), 0.5, seed=None)


# -- channels_last and alpha noise_shape -------------------------------------------------------------


@pytest.mark.parametrize("spatial", [1, 2, 3])
@pytest.mark.parametrize("batched", [True, False])
def test_channels_last_is_keras_spatial_dropout(backend, spatial, batched):
    shape = (2,) * batched + (3,) * spatial + (4,)
    noise = (2,) * batched + (1,) * spatial + (4,)
    x = random_input(shape, "float32", seed=spatial)
    fn = getattr(xdrop, f"dropout{spatial}d")
    out = backend.to_numpy(fn(backend.asarray(x), 0.5, seed=8, step=1, data_format="channels_last"))
    assert out.tobytes() == inverted(x, spec_keep(noise, 0.5, 8, 1), 0.5).tobytes()
    via_dropout = xdrop.dropout(x, 0.5, seed=8, step=1, noise_shape=noise)
    assert out.tobytes() == via_dropout.tobytes()
    out2, cache = getattr(xdrop, f"dropout{spatial}d_forward")(x, 0.5, seed=8, step=1, data_format="channels_last")
    assert out2.tobytes() == out.tobytes() and cache.noise_shape == noise
    assert xdrop.dropout_backward(x, cache).tobytes() == out.tobytes()


def test_channels_first_is_the_default(numpy_ref):
    x = random_input((2, 3, 4))
    first = xdrop.dropout1d(x, 0.5, seed=3, data_format="channels_first")
    assert first.tobytes() == xdrop.dropout1d(x, 0.5, seed=3).tobytes()


@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_alpha_dropout_with_noise_shape_matches_spec(backend, p):
    x = random_input((3, 5, 2), "float32")
    noise = (3, 1, 2)
    out = backend.to_numpy(xdrop.alpha_dropout(backend.asarray(x), p, seed=6, noise_shape=(None, 1, None)))
    assert out.tobytes() == alpha_expected(x, spec_keep(noise, p, 6, 0), p).tobytes()
    out2, cache = xdrop.alpha_dropout_forward(x, p, seed=6, noise_shape=noise)
    assert out2.tobytes() == out.tobytes() and cache.noise_shape == noise
    dx = xdrop.dropout_backward(np.ones_like(x), cache)
    a = np.float32(alpha_abc(p)[0]) if keep_count(p) else np.float32(0)
    assert dx.tobytes() == np.where(spec_keep(noise, p, 6, 0), np.ones_like(x) * a, np.float32(0)).tobytes()


# -- the gate: every variant checks training like dropout, and never advances a Generator when refusing --


VARIANT_INPUTS = {
    "dropout": (4, 3),
    "dropout1d": (2, 3, 4),
    "dropout2d": (2, 3, 4, 4),
    "dropout3d": (2, 3, 2, 2, 2),
    "alpha_dropout": (4, 3),
    "feature_alpha_dropout": (4, 3),
    "drop_path": (4, 3),
}


@pytest.mark.parametrize("name", list(VARIANT_INPUTS))
@pytest.mark.parametrize("training", [None, "no", 0, 1, np.array(True)])
def test_every_function_checks_training_like_dropout(name, training):
    gen = xdrop.Generator(4)
    with pytest.raises(TypeError, match="training must be True or False"):
        getattr(xdrop, name)(np.ones(VARIANT_INPUTS[name]), 0.5, seed=gen, training=training)
    assert gen.step == 0


@pytest.mark.parametrize("name", list(VARIANT_INPUTS))
def test_refusals_after_the_gate_never_advance_a_generator(name):
    """An impl that does not apply is found by kernel selection, which runs before the seed is taken."""
    x = np.ones(VARIANT_INPUTS[name])
    gen = xdrop.Generator(4)
    for fn in (getattr(xdrop, name), getattr(xdrop, f"{name}_forward")):
        with pytest.raises(ValueError, match="impl='cuda' does not apply to numpy arrays"):
            fn(x, 0.5, seed=gen, impl="cuda")
        assert gen.step == 0
    with pytest.raises(ValueError, match="impl='cuda' does not apply to numpy arrays"):
        xdrop.keep_mask((3,), 0.5, seed=gen, xp=np, impl="cuda")
    assert gen.step == 0
    fn(x, 0.5, seed=gen)  # and a call that succeeds does advance it
    assert gen.step == 1
