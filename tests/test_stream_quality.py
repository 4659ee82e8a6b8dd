"""A quick statistical battery on the mask stream (the heavy one: ``nox -s stream_battery``).

Each check turns a statistic into a z-score that is standard normal if the
stream is ideal, and fails when ``|z| >= 5``: a false-alarm rate of 5.7e-7 per
check (two-sided normal tail). This file makes fewer than 150 checks, so the
chance that an ideal stream fails any of them is below 150 * 5.7e-7 = 8.6e-5
(Bonferroni). The seeds are fixed, so the outcome is deterministic: a failure
is reproducible, never flaky. Chi-square statistics are mapped to z by the
Wilson-Hilferty cube-root approximation.

The stream is read through the reference (``keep_flat``, ``block_words``) on
NumPy; the other backends equal it bit for bit (test_stream, test_properties).
"""

from __future__ import annotations

import io
import math

import array_api_compat.numpy as xp
import numpy as np
import pytest
from helpers import load_tool
from spec_v1 import philox4x32

from xdrop._lib._stream import block_words, keep_count, keep_flat

Z_LIMIT = 5.0
N = 1 << 20  # decisions per stream for the single-stream checks
N_PAIR = 1 << 18  # per stream for the two-stream checks


def keep_bits(p: float, seed: int = 2024, step: int = 1, n: int = N, start: int = 0) -> np.ndarray:
    return np.asarray(keep_flat(xp, start, n, seed, step, keep_count(p), None))


def z_binomial(count: float, n: int, q: float) -> float:
    return (count - n * q) / math.sqrt(n * q * (1 - q))


def z_chi2(statistic: float, df: int) -> float:
    """Wilson-Hilferty: (X/df)**(1/3) is close to normal with mean 1 - 2/(9 df), variance 2/(9 df)."""
    v = 2 / (9 * df)
    return ((statistic / df) ** (1 / 3) - (1 - v)) / math.sqrt(v)


def chi2(counts: np.ndarray, expected: np.ndarray) -> float:
    return float(np.sum((counts - expected) ** 2 / expected))


def z_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """sqrt(n) times the sample correlation: standard normal for independent streams."""
    a = a.astype(np.float64) - a.mean()
    b = b.astype(np.float64) - b.mean()
    r = float(np.dot(a, b) / math.sqrt(np.dot(a, a) * np.dot(b, b)))
    return r * math.sqrt(a.size)


def assert_z(z: float, what: str) -> None:
    assert abs(z) < Z_LIMIT, f"{what}: z = {z:.2f}"


# -- one stream -----------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_rate_per_lane(p):
    """Each of the four words of a Philox block keeps at rate K / 2**32 (4 checks per p)."""
    q = keep_count(p) / 2**32
    lanes = keep_bits(p).reshape(-1, 4).sum(axis=0)
    for lane, count in enumerate(lanes):
        assert_z(z_binomial(count, N // 4, q), f"lane {lane}")


@pytest.mark.parametrize("p", [0.1, 0.5])
@pytest.mark.parametrize("block", [1 << 10, 1 << 14])
def test_keep_rate_per_block(p, block):
    """Counts per run of `block` consecutive decisions: chi-square against Binomial(block, q)."""
    q = keep_count(p) / 2**32
    counts = keep_bits(p).reshape(-1, block).sum(axis=1)
    statistic = float(np.sum((counts - block * q) ** 2) / (block * q * (1 - q)))
    assert_z(z_chi2(statistic, counts.size), f"{counts.size} blocks of {block}")


@pytest.mark.parametrize("p", [0.5, 0.1])
def test_lag_correlations(p):
    """Lags 1..20 cover neighbours in a block, across blocks and across 4-word strides (20 checks per p)."""
    bits = keep_bits(p, seed=77, step=2**33)
    for lag in range(1, 21):
        assert_z(z_correlation(bits[:-lag], bits[lag:]), f"lag {lag}")


def runs_of(bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The values and lengths of the maximal runs of equal bits."""
    edges = np.flatnonzero(np.diff(bits.astype(np.int8))) + 1
    starts = np.concatenate([[0], edges])
    lengths = np.diff(np.concatenate([starts, [bits.size]]))
    return bits[starts], lengths


@pytest.mark.parametrize("p", [0.5, 0.25])
def test_run_lengths(p):
    """The number of runs (Wald-Wolfowitz) and the run-length histogram, per value (3 checks per p)."""
    bits = keep_bits(p, seed=5, step=0)
    values, lengths = runs_of(bits)
    n1 = int(bits.sum())
    n0 = bits.size - n1
    mean = 2 * n1 * n0 / bits.size + 1
    var = (mean - 1) * (mean - 2) / (bits.size - 1)
    assert_z((values.size - mean) / math.sqrt(var), "number of runs")
    for value, q in ((True, n1 / bits.size), (False, n0 / bits.size)):
        own = lengths[values == value]
        top = 12  # lengths 1..11, and 12 or more lumped together
        counts = np.bincount(np.minimum(own, top), minlength=top + 1)[1:]
        probs = np.array([(1 - q) * q ** (k - 1) for k in range(1, top)] + [q ** (top - 1)])
        assert_z(z_chi2(chi2(counts, own.size * probs), top - 1), f"run lengths of {value}")


def test_word_bits_and_top_byte():
    """The raw words: each of the 32 bit positions is balanced, the top byte uniform (33 checks)."""
    words = np.stack([np.asarray(w) for w in block_words(xp, 2**32 - 100, N_PAIR // 4, 3, 9, None)], axis=1)
    words = words.reshape(-1).astype(np.uint32)
    for bit in range(32):
        ones = int(np.count_nonzero(words & np.uint32(1 << bit)))
        assert_z(z_binomial(ones, words.size, 0.5), f"bit {bit}")
    counts = np.bincount(words >> np.uint32(24), minlength=256)
    assert_z(z_chi2(chi2(counts, np.full(256, words.size / 256)), 255), "top byte")


# -- pairs of streams -----------------------------------------------------------------------------


SEED_PAIRS = [(0, 1), (2**32 - 1, 2**32), (2**63 - 1, 2**63), (12345, 12345 + 2**32)]
STEP_PAIRS = [(0, 1), (2**32 - 1, 2**32), (2**64 - 2, 2**64 - 1)]


def assert_independent(a: np.ndarray, b: np.ndarray, what: str) -> None:
    """Same-index and shifted-by-one correlations, and the agreement rate (4 checks)."""
    assert_z(z_correlation(a, b), f"{what}: correlation")
    assert_z(z_correlation(a[1:], b[:-1]), f"{what}: correlation at lag +1")
    assert_z(z_correlation(a[:-1], b[1:]), f"{what}: correlation at lag -1")
    qa, qb = a.mean(), b.mean()
    agree = qa * qb + (1 - qa) * (1 - qb)
    assert_z(z_binomial(int(np.count_nonzero(a == b)), a.size, agree), f"{what}: agreement")


@pytest.mark.parametrize("seeds", SEED_PAIRS, ids=str)
def test_adjacent_seeds_are_independent(seeds):
    a, b = (keep_bits(0.5, seed=s, step=0, n=N_PAIR) for s in seeds)
    assert_independent(a, b, f"seeds {seeds}")


@pytest.mark.parametrize("steps", STEP_PAIRS, ids=str)
def test_adjacent_steps_are_independent(steps):
    a, b = (keep_bits(0.5, seed=99, step=t, n=N_PAIR) for t in steps)
    assert_independent(a, b, f"steps {steps}")


def test_the_checks_can_fail():
    """The battery's power: a stream with a 1% lane bias or a 1% lag-1 dependence is caught."""
    rng = np.random.default_rng(0)
    biased = (rng.random(N) < 0.5).reshape(-1, 4)
    biased[:, 2] = rng.random(N // 4) < 0.51
    assert abs(z_binomial(biased[:, 2].sum(), N // 4, 0.5)) >= Z_LIMIT
    sticky = rng.random(N) < 0.5
    copy = rng.random(N) < 0.02  # 2% of bits copy their left neighbour: lag-1 correlation ~ 0.01
    sticky[1:][copy[1:]] = sticky[:-1][copy[1:]]
    assert abs(z_correlation(sticky[:-1], sticky[1:])) >= Z_LIMIT


# -- the heavy battery's input ----------------------------------------------------------------------


def load_battery_tool():
    return load_tool("stream_battery")


def test_battery_feeds_the_stream_words(monkeypatch):
    """tools/stream_battery.py writes the spec's words: streams interleaved in chunks, little-endian uint32."""
    tool = load_battery_tool()
    monkeypatch.setattr(tool, "CHUNK_BLOCKS", 2)
    first = 2**32 - 1  # the block counter carries inside the second chunk
    out = io.BytesIO()
    n_bytes = 2 * len(tool.STREAMS) * 2 * 16  # two rounds of every stream
    assert tool.write_words(out, first, n_bytes) == n_bytes
    got = np.frombuffer(out.getvalue(), dtype="<u4").tolist()
    want = []
    for chunk in range(2):
        for seed, step in tool.STREAMS:
            for block in range(first + 2 * chunk, first + 2 * chunk + 2):
                ctr = (block & 0xFFFFFFFF, block >> 32, step & 0xFFFFFFFF, step >> 32)
                want += philox4x32(ctr, (seed & 0xFFFFFFFF, seed >> 32))
    assert got == want


def test_battery_parses_dieharder_rows():
    tool = load_battery_tool()
    text = (
        "   diehard_birthdays|   0|       100|     100|0.60790133|  PASSED  \n"
        "        sts_serial|   3|    100000|     100|0.00401234|   WEAK   \n"
        "        sts_serial|   3|    100000|     100|0.51234000|  PASSED  \n"
        "        sts_serial|   3|    100000|     200|0.41234000|  PASSED  \n"
        "        sts_serial|   3|    100000|     200|0.31234000|  PASSED  \n"
    )
    rows = tool.parse(text)
    assert [(r.test, r.ntup, r.psamples, r.pvalue) for r in rows] == [
        ("diehard_birthdays", 0, 100, 0.60790133),
        # -Y 1 ran the WEAK test again with more psamples: its last pass counts, both of its rows
        ("sts_serial", 3, 200, 0.41234),
        ("sts_serial", 3, 200, 0.31234),
    ]
