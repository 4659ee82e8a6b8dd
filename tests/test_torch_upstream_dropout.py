"""PyTorch's own dropout tests, run on xdrop's layers and functions.

Source: ``test/nn/test_dropout.py`` of pytorch/pytorch at commit
09d3a8687489ca4b89f667780644d6aceea9e30b (the CPU tests; every check they
make is made here, written for pytest). Substituted: ``torch.nn.Dropout``,
``Dropout1d/2d/3d``, ``AlphaDropout``, ``FeatureAlphaDropout`` ->
``xdrop.torch``'s layers, ``torch.nn.functional.dropout`` -> ``xdrop.dropout``.

Adapted, and why:

- Global-RNG plumbing. The layers are built without a seed, so each takes
  its stream from torch's default generator; an autouse fixture calls
  ``torch.manual_seed(0)`` first, and ``random.randint`` sizes come from
  ``random.Random(0)``, so every run draws the same masks (the upstream tests
  are random from run to run). Statistical bounds are upstream's; with fixed
  seeds a pass or fail is deterministic (no false-alarm rate to state).
- ``freeze_rng_state()`` around two calls (no-batch-dim tests) becomes two
  calls of one layer and of its ``copy.deepcopy`` twin: an xdrop layer's mask
  depends on its ``(seed, step)``, not on the global RNG.
- ``NNTestCase`` plumbing (CUDA memory-leak and non-default-stream checks,
  ``markDynamoStrictTest``, ``expectedFailureXLA``, device instantiation) is
  dropped: CPU only. ``test_native_dropout_corner_case`` is CUDA-only and
  tests ``torch.native_dropout``, which xdrop does not replace: not ported.
- ``assertEqual`` / ``assertNotEqual`` -> ``torch.testing.assert_close`` and
  ``torch.equal``; ``assertWarnsRegex`` / ``assertRaisesRegex`` -> ``pytest``.
"""

import copy
import itertools
import random

import pytest

torch = pytest.importorskip("torch", reason="xdrop.torch needs torch")

import xdrop  # noqa: E402
import xdrop.torch as nn  # noqa: E402  # the substitution: nn.Dropout below is xdrop's


@pytest.fixture(autouse=True)
def seeded():
    """Upstream relies on the global RNG being whatever it is; here it is fixed (see the module docstring)."""
    torch.set_num_threads(1)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        yield


RNG = random.Random(0)


# -- TestDropoutNN -----------------------------------------------------------------------------------


def check_alpha_dropout(cls, input):
    mean, std = input.mean(), input.std()
    for p in [0.2, 0.5, 0.8]:
        module = cls(p)
        input_var = input.detach().clone().requires_grad_()
        output = module(input_var)
        assert abs(output.data.mean() - mean) < 0.1  # output mean close to input mean
        assert abs(output.data.std() - std) < 0.1  # output std close to input std
        output.backward(input)


def test_AlphaDropout():
    check_alpha_dropout(nn.AlphaDropout, torch.randn(5000))  # zero mean, unit std


def test_FeatureAlphaDropout():
    b, w, h, d = RNG.randint(1, 5), RNG.randint(1, 5), RNG.randint(1, 5), RNG.randint(1, 2)
    check_alpha_dropout(nn.FeatureAlphaDropout, torch.randn(1000, b, d, w, h))
    check_alpha_dropout(nn.FeatureAlphaDropout, torch.randn(50, 20, 64, 64))  # no batch dims


def test_invalid_dropout_p():
    v = torch.ones(1)
    for cls in (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d):
        for p in (-0.1, 1.1):
            with pytest.raises(ValueError):
                cls(p)
    for p in (-0.1, 1.1):
        with pytest.raises(ValueError):
            xdrop.dropout(v, p)


# -- TestDropoutNNDeviceType (CPU) ------------------------------------------------------------------


def check_dropout(cls, input, memory_format=torch.contiguous_format):
    p = 0.2
    input = input.fill_(1 - p)

    module = cls(p)
    input_var = input.clone(memory_format=memory_format).requires_grad_()
    output = module(input_var)
    assert output.is_contiguous(memory_format=memory_format)
    assert abs(output.data.mean() - (1 - p)) < 0.05
    output.backward(input)
    assert input_var.grad.is_contiguous(memory_format=memory_format)
    assert abs(input_var.grad.data.mean() - (1 - p)) < 0.05

    module = cls(p, True)
    input_var = input.clone(memory_format=memory_format).requires_grad_()
    output = module(input_var + 0)
    assert output.is_contiguous(memory_format=memory_format)
    assert abs(output.data.mean() - (1 - p)) < 0.05
    output.backward(input)
    assert input_var.grad.is_contiguous(memory_format=memory_format)
    assert abs(input_var.grad.data.mean() - (1 - p)) < 0.05

    for inplace in [True, False]:  # eval mode changes nothing
        module = cls(p, inplace).eval()
        torch.testing.assert_close(input, module(input))

    repr(module), str(module)  # these do not raise


def check_dropout_discontiguous(cls, memory_format=torch.contiguous_format):
    # Dropout keeps the layout and the data for every memory format (pytorch/pytorch#47176).
    close_to_zero_p = 1e-10  # almost zero, but not zero: p = 0 takes another path
    for p in [0, close_to_zero_p]:
        inp = torch.ones(2, 3, 3, 3)
        inp_discontiguous = torch.empty(2, 3, 3, 6, memory_format=memory_format)[..., ::2]
        inp_discontiguous.copy_(inp)
        out = cls(p=p)(inp_discontiguous)
        if p != 0:  # p = 0 keeps the input's strides
            assert out.is_contiguous(memory_format=memory_format)
        torch.testing.assert_close(inp_discontiguous, out)


def check_dropout_stride_mean_preserve(cls):
    def invert_perm(p):
        d = {x: i for i, x in enumerate(p)}
        return (d[0], d[1], d[2], d[3])

    inp = torch.ones(2, 3, 4, 5)
    shifts = [(0, 0), (1, 0), (0, 1), (1, 1)]
    for perm in itertools.permutations((0, 1, 2, 3), r=4):
        for shift in shifts:
            for p in [1e-10, 0.3, 0.5, 0.7]:
                mod = cls(p=p)
                permuted_inp = inp.permute(perm).contiguous().permute(invert_perm(perm))
                permuted_inp = permuted_inp[shift[0] :, shift[1] :, :, :]
                out = mod(permuted_inp)

                assert out.permute(perm).is_contiguous()
                torch.testing.assert_close(inp.mean(), out.mean(), rtol=0.5, atol=0.5)
                if p == 1e-10:
                    torch.testing.assert_close(permuted_inp, out)
                else:
                    assert not torch.equal(permuted_inp, out)


def test_Dropout():
    input = torch.empty(1000)
    check_dropout(nn.Dropout, input)
    check_dropout_discontiguous(nn.Dropout)
    check_dropout_discontiguous(nn.Dropout, memory_format=torch.channels_last)
    check_dropout_stride_mean_preserve(nn.Dropout)
    check_dropout(nn.Dropout, input.bfloat16())


def check_dropoutNd_no_batch(dropout, input):
    twin = copy.deepcopy(dropout)  # upstream: freeze_rng_state() around each call
    input_clone = input.clone()
    res_no_batch = dropout(input)
    res_batched = twin(input_clone.unsqueeze(0)).squeeze(0)
    torch.testing.assert_close(res_no_batch, res_batched)


def check_dropoutNd_channel_zero(dropout, input):
    # a channel of an all-positive input has 0 or all of its elements zeroed
    B, C = input.shape[:2]
    channel_numel = torch.tensor(input.shape[2:]).prod()
    result = dropout(input)
    for b, c in itertools.product(range(B), range(C)):
        assert result[b, c].count_nonzero() in (0, channel_numel)


def test_Dropout1d():
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.double)
    try:
        N, C, L = RNG.randint(10, 15), RNG.randint(10, 15), RNG.randint(10, 15)
        check_dropout(nn.Dropout1d, torch.empty(N, C, L))

        with pytest.raises(RuntimeError, match="Expected 2D or 3D input, but received a 4D input"):
            nn.Dropout1d(p=0.5)(torch.rand(1, 2, 2, 2))
        with pytest.raises(RuntimeError, match="Expected 2D or 3D input, but received a 1D input"):
            nn.Dropout1d(p=0.5)(torch.rand(2))

        input = torch.rand(50, 2)  # no batch dims
        check_dropoutNd_no_batch(nn.Dropout1d(p=0.5), input)
        check_dropoutNd_no_batch(nn.Dropout1d(p=0.5, inplace=True), input)

        input = torch.ones(10, 4, 2)  # complete channels are dropped
        check_dropoutNd_channel_zero(nn.Dropout1d(p=0.5), input)
        check_dropoutNd_channel_zero(nn.Dropout1d(p=0.5, inplace=True), input)
    finally:
        torch.set_default_dtype(default)


def test_Dropout2d():
    b, w, h = RNG.randint(1, 5), RNG.randint(1, 5), RNG.randint(1, 5)
    input = torch.empty(1000, b, w, h)
    check_dropout(nn.Dropout2d, input)
    check_dropout(nn.Dropout2d, input, memory_format=torch.channels_last)
    check_dropout_discontiguous(nn.Dropout2d)
    check_dropout_discontiguous(nn.Dropout2d, memory_format=torch.channels_last)

    with pytest.warns(UserWarning, match="Received a 5-D input to dropout2d"):
        nn.Dropout2d(p=0.5)(torch.rand(1, 2, 2, 2, 2))
    with pytest.warns(UserWarning, match="Received a 2-D input to dropout2d"):
        nn.Dropout2d(p=0.5)(torch.rand(1, 2))
    # (upstream keeps the no-batch-dim check commented out: 3-d input is read as (N, C, L))
    with pytest.warns(UserWarning, match="assuming that channel-wise 1D dropout behavior is desired"):
        nn.Dropout2d(p=0.5)(torch.rand(1, 2, 2))

    input = torch.ones(10, 4, 2, 2)  # complete channels are dropped
    check_dropoutNd_channel_zero(nn.Dropout2d(p=0.5), input)
    check_dropoutNd_channel_zero(nn.Dropout2d(p=0.5, inplace=True), input)


def test_Dropout3d():
    b, w, h, d = RNG.randint(1, 5), RNG.randint(1, 5), RNG.randint(1, 5), RNG.randint(1, 2)
    check_dropout(nn.Dropout3d, torch.empty(1000, b, d, w, h))
    check_dropout_discontiguous(nn.Dropout3d)
    check_dropout_discontiguous(nn.Dropout3d, memory_format=torch.channels_last)

    with pytest.warns(UserWarning, match="Received a 6-D input to dropout3d"):
        nn.Dropout3d(p=0.5)(torch.rand(1, 2, 2, 2, 2, 2))
    with pytest.warns(UserWarning, match="Received a 3-D input to dropout3d"):
        nn.Dropout3d(p=0.5)(torch.rand(1, 2, 2))

    input = torch.rand(50, 2, 2, 2)  # no batch dims
    check_dropoutNd_no_batch(nn.Dropout3d(p=0.5), input)
    check_dropoutNd_no_batch(nn.Dropout3d(p=0.5, inplace=True), input)

    input = torch.ones(10, 4, 2, 2, 2)  # complete channels are dropped
    check_dropoutNd_channel_zero(nn.Dropout3d(p=0.5), input)
    check_dropoutNd_channel_zero(nn.Dropout3d(p=0.5, inplace=True), input)


def test_empty_dropout():
    x = torch.tensor([])
    out = xdrop.dropout(x, 0.5)
    assert out.size() == x.size()
