"""Generate every build-time page fragment and figure into docs/_generated/.

Run by ``nox -s docs`` before the build; ``conf.py`` calls :func:`run` with
``missing_only=True`` so a plain ``sphinx-build`` works too. Each generator
returns problems found (a golden case not reproduced, a failing matrix cell,
a figure contradicting the derivation); the build reports them as warnings,
which ``-W`` turns into errors.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import gen_attention
import gen_golden
import gen_matrix
import gen_performance
import gen_theory

GENERATORS: dict[str, tuple[Callable[[], list[str]], Path]] = {
    "golden vectors": (gen_golden.generate, gen_golden.PAGE),
    "backend matrix": (gen_matrix.generate, gen_matrix.PAGE),
    "performance": (gen_performance.generate, gen_performance.PAGE),
    "theory figure": (gen_theory.generate, gen_theory.FIGURE),
    "attention figure": (gen_attention.generate, gen_attention.FIGURE),
}


def run(missing_only: bool = False) -> list[str]:
    problems: list[str] = []
    for name, (generate, output) in GENERATORS.items():
        if missing_only and output.exists() and name != "golden vectors":
            continue  # the golden check is cheap and guards the spec page: always redo it
        print(f"xdrop docs: generating {name}", flush=True)
        problems += generate()
    return problems


if __name__ == "__main__":
    found = run()
    for p in found:
        print("PROBLEM:", p, file=sys.stderr)
    sys.exit(1 if found else 0)
