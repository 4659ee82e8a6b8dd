"""Write tests/data/golden_outputs_v1.json: output bits of every public function, per dtype.

The outputs come from the scalar spec in tests/spec_v1.py (written from
docs/stream-spec.md), never from xdrop. Inputs are fixed here: special values
(signed zeros, infinities, NaN, the largest finite, subnormals) and values of a
seeded normal sample, rounded once to the dtype. Like golden_v1.json the file
is frozen once written: it refuses to overwrite.
"""

import json
import math
import random
import sys
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))
from spec_v1 import FORMATS, _inf_pattern, _sign_bit, encode_rational, noise_shape_of, outputs

HALF_K_65553 = ((1 << 32) - 65553) / 2**32  # K = 65553: float16's last finite scale
# (function, shape, p, seed, step, extra keyword arguments)
CALLS = [
    ("dropout", (5, 7), 0.5, 7, 0, {}),
    ("dropout", (40,), 1 / 3, 2**64 - 1, 2**40 + 3, {}),
    ("dropout", (12,), 0.0, 1, 2, {}),
    ("dropout", (12,), 1.0, 1, 2, {}),
    ("dropout", (16,), 1 - 2.0**-17, 3, 0, {}),  # K = 32768: float16 scale is inf
    ("dropout", (24,), HALF_K_65553, 3, 1, {}),
    ("dropout", (24,), 1 - 65552 / 2**32, 3, 1, {}),  # K = 65552: first inf
    ("dropout", (4, 6), 0.3, 11, 5, {"noise_shape": [None, 1]}),
    ("dropout1d", (2, 3, 4), 0.5, 5, 0, {}),
    ("dropout1d", (3, 4), 0.5, 5, 0, {}),
    ("dropout2d", (2, 3, 2, 2), 0.4, 6, 1, {}),
    ("dropout3d", (2, 2, 1, 2, 2), 0.4, 6, 1, {}),
    ("alpha_dropout", (30,), 0.5, 7, 0, {}),
    ("alpha_dropout", (30,), 0.1, 8, 9, {}),
    ("alpha_dropout", (12,), 1 - 2.0**-32, 0, 0, {}),  # K = 1: float16 c is subnormal
    ("alpha_dropout", (12,), 2.0**-32, 0, 0, {}),  # b rounds to 0 in float16/bfloat16: -0 stays -0
    ("alpha_dropout", (12,), 0.0, 4, 4, {}),
    ("alpha_dropout", (12,), 1.0, 4, 4, {}),
    ("feature_alpha_dropout", (3, 4, 2), 0.3, 9, 0, {}),
    ("drop_path", (6, 3), 0.5, 7, 0, {"scale_by_keep": True}),
    ("drop_path", (6, 3), 0.5, 7, 0, {"scale_by_keep": False}),
]
# dropout_backward of the cache of (forward, shape, p, seed, step, extra); the input is dout.
BACKWARD = [
    ("dropout_forward", (5, 6), 0.3, 12, 3, {}),
    ("dropout_forward", (4, 6), 0.3, 12, 3, {"noise_shape": [1, None]}),
    ("dropout2d_forward", (2, 3, 2, 2), 0.5, 1, 0, {}),
    ("alpha_dropout_forward", (20,), 0.4, 2, 7, {}),
    ("feature_alpha_dropout_forward", (3, 4, 2), 0.4, 2, 7, {}),
    ("drop_path_forward", (6, 3), 0.5, 7, 0, {"scale_by_keep": True}),
    ("drop_path_forward", (6, 3), 0.5, 7, 0, {"scale_by_keep": False}),
    ("dropout_forward", (16,), 1 - 2.0**-17, 3, 0, {}),
]
KIND = {
    "dropout": "inverted",
    "dropout1d": "inverted",
    "dropout2d": "inverted",
    "dropout3d": "inverted",
    "alpha_dropout": "alpha",
    "feature_alpha_dropout": "alpha",
}


def kind_of(function: str, extra: dict) -> str:
    if function == "drop_path":
        return "inverted" if extra["scale_by_keep"] else "unscaled"
    return KIND[function]


def specials(fmt: str) -> list[int]:
    sign, inf = _sign_bit(fmt), _inf_pattern(fmt)
    one = encode_rational(0, Fraction(1), fmt)
    quiet_nan = inf | ((inf & -inf) >> 1)  # the top fraction bit set (no signalling NaN: libraries differ)
    smallest_normal = inf & -inf
    return [0, sign, one, one | sign, inf, inf | sign, quiet_nan, inf - 1, 1, 1 | sign, smallest_normal, sign | 3]


def inputs(fmt: str, n: int, seed: int) -> list[int]:
    """Specials first, then a normal sample (times 3) rounded once to the dtype."""
    rng = random.Random(seed)
    values = specials(fmt)
    while len(values) < n:
        v = Fraction(rng.gauss(0.0, 3.0))
        values.append(encode_rational(int(v < 0), abs(v), fmt))
    return values[:n]


def hexes(bits: list[int], fmt: str) -> str:
    width = sum(FORMATS[fmt]) // 4  # significand (with the implicit bit) + exponent = the width
    return " ".join(f"{b:0{width}x}" for b in bits)


def main() -> None:
    path = Path(__file__).with_name("golden_outputs_v1.json")
    if path.exists():
        sys.exit(f"{path} exists: golden vectors are frozen (a new stream version needs a new file)")
    cases = []
    for fmt in FORMATS:
        for function, shape, p, seed, step, extra in CALLS + BACKWARD:
            backward = function.endswith("_forward")
            base = function.removesuffix("_forward")
            n = math.prod(shape)
            noise = noise_shape_of(base, shape)
            if "noise_shape" in extra:
                noise = tuple(d if e is None else e for d, e in zip(shape, extra["noise_shape"], strict=True))
            x = inputs(fmt, n, seed=len(cases))
            kind = ("grad_" if backward else "") + kind_of(base, extra)
            out = outputs(x, shape, noise, seed, step, p, fmt, kind)
            cases.append(
                {
                    "function": "dropout_backward" if backward else function,
                    **({"forward": function} if backward else {}),
                    "dtype": fmt,
                    "shape": list(shape),
                    "p": p.hex(),
                    "seed": seed,
                    "step": step,
                    "kwargs": extra,
                    "x": hexes(x, fmt),
                    "out": hexes(out, fmt),
                }
            )
    doc = {
        "stream_version": 1,
        "about": "x and out are the dtype's bit patterns in flat row-major order, hex; for dropout_backward x "
        "is dout. A NaN in out means any NaN (sign and payload unspecified).",
        "p": "float.hex",
        "cases": cases,
    }
    path.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
