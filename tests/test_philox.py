from pathlib import Path

import numpy as np
import pytest

from xdrop.random import philox4x32

KAT = Path(__file__).parent / "data" / "kat_philox4x32.txt"


def kat_rows() -> list[tuple[int, list[int], list[int], list[int]]]:
    rows = []
    for line in KAT.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split()
        words = [int(w, 16) for w in fields[2:]]
        rows.append((int(fields[1]), words[0:4], words[4:6], words[6:10]))
    return rows


def test_kat_file_has_both_round_counts():
    assert sorted({r[0] for r in kat_rows()}) == [7, 10]


@pytest.mark.parametrize("rounds, counter, key, expected", kat_rows())
def test_known_answers_python_ints(rounds, counter, key, expected):
    out = philox4x32(counter, key, rounds=rounds)
    assert [int(w) for w in out] == expected
    assert all(isinstance(w, np.ndarray) and w.dtype == np.uint32 for w in out)


def test_known_answers_on_backend(backend):
    """All KAT rows at once, as broadcast arrays in the backend's namespace."""
    for rounds in (7, 10):
        rows = [r for r in kat_rows() if r[0] == rounds]
        cols = np.array([c + k for _, c, k, _ in rows], dtype=np.uint32).T
        arrays = [backend.asarray(col) for col in cols]
        out = philox4x32(arrays[:4], arrays[4:], rounds=rounds)
        assert all(w.dtype == backend.xp.uint32 for w in out)
        got = np.stack([backend.to_numpy(w).astype(np.int64) for w in out], axis=1)
        assert got.tolist() == [e for *_, e in rows]


def test_broadcasts_scalars_with_arrays(backend):
    c0 = backend.asarray(np.arange(6, dtype=np.uint32).reshape(2, 3))
    out = philox4x32((c0, 1, 2, 3), (4, 5))
    assert tuple(out[0].shape) == (2, 3)
    one = [int(w) for w in philox4x32((4, 1, 2, 3), (4, 5))]
    got = [int(backend.to_numpy(w).astype(np.int64)[1, 1]) for w in out]
    assert got == one


@pytest.mark.parametrize(
    "counter, key, rounds, error, match",
    [
        ((0, 0, 0), (0, 0), 10, TypeError, "counter must be a sequence of 4"),
        ((0, 0, 0, 0), (0,), 10, TypeError, "key must be a sequence of 2"),
        ((0, 0, 0, 2**32), (0, 0), 10, ValueError, r"counter\[3\]"),
        ((0, 0, 0, -1), (0, 0), 10, ValueError, r"counter\[3\]"),
        ((0, 0, 0, 0), (0, np.zeros(2, dtype=np.int64)), 10, TypeError, r"key\[1\] must have dtype uint32"),
        ((0, 0, 0, 0), (0, 0), 0, ValueError, "rounds=0"),
        ((0, 0, 0, 0), (0, 0), 7.0, TypeError, "rounds=7.0 of type float"),
    ],
)
def test_bad_arguments(counter, key, rounds, error, match):
    with pytest.raises(error, match=match):
        philox4x32(counter, key, rounds=rounds)
