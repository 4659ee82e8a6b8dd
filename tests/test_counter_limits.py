"""Counter limits: decisions at the edges of the 64-bit index, seed and step ranges.

Every expectation comes from the independent scalar spec (``spec_v1``). The
reference is reached at huge flat indices through ``keep_flat``'s ``start``, so
nothing large is allocated. ``test_stream.py`` checks a few starts at one seed;
this file adds the carries of the block counter, the extreme seeds and steps,
the piecewise generation across a carry, and the public API at the extremes.
"""

import numpy as np
import pytest
from spec_v1 import keep_bits

import xdrop
from xdrop._lib._checks import check_mask_size
from xdrop._lib._stream import keep_count, keep_flat

TOP = 2**64
# Seeds and steps whose low or high word is all ones or all zeros: the key and
# the counter's step words at their extremes.
EXTREMES = [(0, 0), (2**32 - 1, 2**32), (2**32, 2**32 - 1), (TOP - 1, TOP - 1), (0x0123456789ABCDEF, TOP - 1)]
# Flat index windows where the block counter (index >> 2) carries from its low
# into its high word, or reaches the end of the range.
WINDOWS = [
    (4 * (2**32 - 1) - 3, 14),  # block 2**32 - 1 -> 2**32: the low word wraps
    (4 * (2**33) - 7, 13),  # block 2**33: a second carry
    (4 * (2**32 + 2**31) - 2, 6),  # the low word's top bit
    (2**63 - 5, 11),  # block 2**61: the high word's top bits
    (TOP - 13, 13),  # the last 13 indices, up to 2**64 - 1
]


@pytest.mark.parametrize("seed, step", EXTREMES, ids=lambda v: hex(v))
@pytest.mark.parametrize("start, n", WINDOWS, ids=str)
def test_reference_at_counter_carries_and_extremes(backend, start, n, seed, step):
    p = 0.375  # not 0.5: the threshold's low bits matter too
    got = keep_flat(backend.xp, start, n, seed, step, keep_count(p), backend.device)
    assert backend.to_numpy(got).tolist() == keep_bits(seed, step, start, n, p)


def test_pieces_join_across_a_counter_carry(monkeypatch, numpy_ref):
    """The reference's piecewise generation, with a piece boundary on the 2**32-block carry."""
    import xdrop._lib._stream as stream

    start, n, p = 4 * (2**32 - 4) + 1, 37, 0.5
    monkeypatch.setattr(stream, "PIECE_BLOCKS", 4)  # pieces start at blocks 2**32 - 4, 2**32, 2**32 + 4, ...
    got = keep_flat(numpy_ref.xp, start, n, 9, 2**40, keep_count(p), None)
    assert got.tolist() == keep_bits(9, 2**40, start, n, p)


@pytest.mark.parametrize("start, n", [(-1, 2), (TOP - 3, 4), (TOP, 1), (0, TOP + 1)])
def test_indices_beyond_the_spec_are_refused(numpy_ref, start, n):
    """The spec stops at index 2**64 - 1; past it the block counter would wrap silently."""
    with pytest.raises(ValueError, match=r"flat indices must lie in \[0, 2\*\*64\)"):
        keep_flat(numpy_ref.xp, start, n, 1, 2, keep_count(0.5), None)


def test_the_largest_legal_shapes_pass_the_size_check():
    """A shape's flat indices fit in 64 bits exactly when its size is below 2**64 (checked without allocating)."""
    assert check_mask_size((TOP - 1,)) == TOP - 1
    assert check_mask_size((2**32 - 1, 2**32 + 1)) == TOP - 1
    assert check_mask_size((0, 2**70)) == 0
    with pytest.raises(ValueError, match="fewer than 2\\*\\*64 elements"):
        check_mask_size((2, 2**63))


@pytest.mark.parametrize("seed, step", EXTREMES, ids=lambda v: hex(v))
def test_public_api_at_extreme_seeds_and_steps(backend, seed, step):
    x_np = np.arange(1.0, 20.0)
    want = np.where(keep_bits(seed, step, 0, 19, 0.75), x_np * 4.0, 0.0)
    out = xdrop.dropout(backend.asarray(x_np), 0.75, seed=seed, step=step)
    assert backend.to_numpy(out).tobytes() == want.tobytes()
    mask = xdrop.keep_mask((19,), 0.75, seed=seed, step=step, xp=backend.xp, device=backend.device)
    assert backend.to_numpy(mask).tolist() == keep_bits(seed, step, 0, 19, 0.75)


def test_generator_uses_the_last_step_then_refuses():
    gen = xdrop.Generator(TOP - 1, step=TOP - 2)
    x = np.ones(12)
    outs = [xdrop.dropout(x, 0.5, seed=gen) for _ in range(2)]
    for step, out in zip((TOP - 2, TOP - 1), outs, strict=True):
        assert (out != 0).tolist() == keep_bits(TOP - 1, step, 0, 12, 0.5)
    assert gen.step == TOP
    with pytest.raises(ValueError, match="has used every step up to 2\\*\\*64 - 1"):
        xdrop.dropout(x, 0.5, seed=gen)
    assert gen.step == TOP
