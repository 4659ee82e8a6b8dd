"""Write tests/data/golden_v1.json from the scalar spec in tests/spec_v1.py.

Run once when stream v1 was defined; the file is frozen since. It refuses to
overwrite: golden vectors change only with a new stream version.
"""

import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))
from spec_v1 import keep_bits, pack_hex

CASES = [
    (0, 0, (16,), 0.5),
    (7, 0, (8,), 0.5),
    (7, 1, (8,), 0.5),
    (42, 0, (3, 5), 0.1),
    (42, 3, (2, 3, 4), 0.9),
    (123, 0, (), 0.5),
    (123, 0, (0,), 0.5),
    (2**32 - 1, 2**32, (37,), 0.3),
    (2**32, 2**32 + 5, (5, 7), 1 / 3),
    (2**64 - 1, 2**64 - 1, (64,), 0.5),
    (0x243F6A8885A308D3, 12345, (257,), 0.25),
    (9, 9, (11,), 0.0),
    (9, 9, (11,), 1.0),
    (5, 0, (100,), 2.0**-32),
    (5, 0, (100,), 1 - 2.0**-33),
]


def main() -> None:
    path = Path(__file__).with_name("golden_v1.json")
    if path.exists():
        sys.exit(f"{path} exists: golden vectors are frozen (a new stream version needs a new file)")
    rows = []
    for seed, step, shape, p in CASES:
        bits = keep_bits(seed, step, 0, math.prod(shape), p)
        rows.append({"seed": seed, "step": step, "shape": list(shape), "p": p.hex(), "keep": pack_hex(bits)})
    doc = {"stream_version": 1, "bit_order": "flat row-major, 8 per byte, MSB first", "p": "float.hex", "cases": rows}
    path.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
