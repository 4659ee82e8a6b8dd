"""The CS231n exercise's own checks, run unchanged against xdrop.cs231n."""

import numpy as np
import pytest

from xdrop.cs231n import dropout_backward, dropout_forward


def rel_error(x, y):
    return np.max(np.abs(x - y) / np.maximum(1e-8, np.abs(x) + np.abs(y)))


def numerical_gradient_array(f, x, df, h=1e-5):
    """Central differences of f at x, contracted with df (the exercise's checker)."""
    grad = np.zeros_like(x)
    for ix in np.ndindex(x.shape):
        old = x[ix]
        x[ix] = old + h
        pos = f(x).copy()
        x[ix] = old - h
        neg = f(x).copy()
        x[ix] = old
        grad[ix] = np.sum((pos - neg) * df) / (2 * h)
    return grad


@pytest.mark.parametrize("keep", [0.25, 0.4, 0.7])
def test_forward_means_and_zero_fractions(keep):
    """The exercise prints these; the assertions are its intended outcome.

    Zero fraction within 5 sigma of 1 - keep over 250000 elements
    (false-alarm rate 5.7e-7); inputs are randn + 10, so no input is zero.
    """
    x = np.random.default_rng(231).standard_normal((500, 500)) + 10
    out, _ = dropout_forward(x, {"mode": "train", "p": keep, "seed": 1})
    out_test, _ = dropout_forward(x, {"mode": "test", "p": keep})
    assert out_test is x
    n = x.size
    assert abs((out == 0).mean() - (1 - keep)) < 5 * np.sqrt(keep * (1 - keep) / n)
    assert abs(out.mean() - x.mean()) < 5 * x.std() * np.sqrt((1 - keep) / keep / n) + 0.05
    assert (out_test == 0).mean() == 0


def test_backward_numerical_gradient():
    rng = np.random.default_rng(231)
    x = rng.standard_normal((10, 10)) + 10
    dout = rng.standard_normal(x.shape)
    dropout_param = {"mode": "train", "p": 0.2, "seed": 123}
    _out, cache = dropout_forward(x, dropout_param)
    dx = dropout_backward(dout, cache)
    dx_num = numerical_gradient_array(lambda xx: dropout_forward(xx, dropout_param)[0], x, dout)
    assert dx_num.shape == dx.shape
    assert rel_error(dx, dx_num) < 1e-8  # the exercise: "around e-10 or less"


def test_seed_does_not_reseed_numpy():
    state = np.random.get_state()[1].copy()
    dropout_forward(np.ones(4), {"mode": "train", "p": 0.5, "seed": 1})
    assert np.array_equal(np.random.get_state()[1], state)


def test_keep_probability_convention():
    """CS231n's p keeps: p=1 keeps everything unscaled, p=0 drops everything."""
    x = np.arange(1.0, 9.0)
    assert np.array_equal(dropout_forward(x, {"mode": "train", "p": 1.0, "seed": 3})[0], x)
    assert not dropout_forward(x, {"mode": "train", "p": 0.0, "seed": 3})[0].any()


def test_test_mode_backward_passes_gradient_through():
    dout = np.ones(3)
    _, cache = dropout_forward(np.ones(3), {"mode": "test", "p": 0.5})
    assert dropout_backward(dout, cache) is dout


@pytest.mark.parametrize(
    "param, error, match",
    [
        ({"mode": "eval", "p": 0.5}, ValueError, 'dropout_param\\["mode"\\] must be "train" or "test", got \'eval\''),
        ({"mode": "train", "p": 1.2}, ValueError, 'dropout_param\\["p"\\] must be a probability'),
        ({"mode": "train"}, TypeError, 'dropout_param\\["p"\\] must be a real number'),
        ({"mode": "train", "p": 0.5, "seed": -3}, ValueError, 'dropout_param\\["seed"\\]=-3'),
    ],
)
def test_bad_dropout_param(param, error, match):
    with pytest.raises(error, match=match):
        dropout_forward(np.ones(3), param)


def test_cache_speaks_in_the_students_keep_probability():
    """The student passed p=0.2 (keep): the cache must not show xdrop's drop probability 0.8."""
    _, cache = dropout_forward(np.ones((2, 3)), {"mode": "train", "p": 0.2, "seed": 5})
    text = repr(cache)
    assert "p=0.2 (keep probability)" in text and "0.8" not in text
    assert cache[1].keep == 0.2 and cache[1].stream.p == pytest.approx(0.8)
