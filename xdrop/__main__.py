"""Command line: ``python -m xdrop verify`` and ``python -m xdrop bench``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xdrop", description="xdrop: verify the three properties")
    sub = parser.add_subparsers(dest="command", required=True)
    verify = sub.add_parser("verify", help="check the three properties on every installed backend")
    verify.add_argument("--backend", action="append", help="a backend to check (repeatable); default: all")
    bench = sub.add_parser("bench", help="time xdrop against native dropouts (see benchmarks/README.md)")
    from . import bench as b

    b.add_arguments(bench)
    args = parser.parse_args(argv)
    if args.command == "bench":
        return b.main(args)

    from . import verify as v

    names = args.backend
    unknown = sorted(set(names or ()) - set(v.LOADERS))
    if unknown:
        parser.error(f"unknown backend {', '.join(unknown)}; choose from {', '.join(v.LOADERS)}")
    results = v.run(names)
    print(v.format_table(results))
    ok = v.all_passed(results)
    print("\nall properties hold on every available backend" if ok else "\nFAILED: a property does not hold")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
