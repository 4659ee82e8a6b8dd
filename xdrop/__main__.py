"""Command line: ``xdrop verify``, ``xdrop bench`` and ``xdrop --version`` (or ``python -m xdrop ...``).

Each subcommand is one ``add_<name>(subparsers)`` function that declares its
arguments and sets ``run``, a function ``(args, parser) -> exit status``; to add
one, write such a function and list it in :data:`SUBCOMMANDS`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

Subparsers = Any  # argparse's _SubParsersAction is private


def run_verify(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from . import verify

    names = args.backend
    unknown = sorted(set(names or ()) - set(verify.REGISTRY))
    if unknown:
        parser.error(f"unknown backend {', '.join(unknown)}; choose from {', '.join(verify.REGISTRY)}")
    if args.json is not None:
        check_writable(args.json, "--json", parser)  # before the run, not after minutes of it
    results = verify.run(list(dict.fromkeys(names)) if names else None)
    if args.wide:
        print(verify.format_table(results) + "\n\n" + verify.LEGEND)
    else:
        print(verify.format_summary(results) + "\n\nWhat each column checks:\n" + verify.summary_legend())
        print("\nThe measured figures behind each verdict: --wide (a wide table) or --json PATH.")
    print("\n" + verify.describe_host_kernel())
    if args.json is not None:
        try:
            verify.write_json(results, args.json)
        except OSError as exc:
            print(f"\nerror: --json {args.json!r}: cannot write: {exc.strerror or exc}", file=sys.stderr)
            return 2
        print(f"\nwrote {args.json}")
    ok = verify.all_passed(results)
    # A backend named on the command line must run: skipping it would pass a check that never happened.
    not_run = {n: results[n].skipped for n in names or () if results[n].skipped is not None}
    if not ok:
        print("\nFAILED: a property does not hold")
    elif not_run:
        print(f"\nFAILED: not verified: {', '.join(not_run)} named with --backend but cannot run")
    else:
        print("\nall properties hold on every available backend")
    for name, reason in not_run.items():
        print(f"FAILED: backend {name} was named with --backend but cannot run: {reason}", file=sys.stderr)
    return 0 if ok and not not_run else 1


def check_writable(path: str, option: str, parser: argparse.ArgumentParser) -> None:
    """Exit with a usage error unless a file can be created at ``path`` (its directory made if missing)."""
    import os
    import tempfile
    from pathlib import Path

    if not path:
        parser.error(f"{option}: the path is empty")
    target = Path(path)
    if target.is_dir():
        parser.error(f"{option} {path!r} is a directory")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        parser.error(f"{option} {path!r}: cannot write there: {exc.strerror or exc}")


def add_verify(sub: Subparsers) -> None:
    p = sub.add_parser(
        "verify",
        help="check xdrop's properties on every installed backend",
        description="Measures on each installed backend: the same bits as the NumPy reference, E[out] = x, "
        "the gradient, blocks of sharded arrays and attention dropout (the report explains each). "
        "Exits 1 if any cell fails or a backend named with --backend cannot run; "
        "without --backend, a backend that is not installed or has no device is shown as not run, "
        "which is not a failure.",
    )
    p.add_argument("--backend", action="append", metavar="NAME", help="a backend to check (repeatable); default: all")
    p.add_argument("--json", metavar="PATH", help="also write the matrix, host, date and versions as JSON")
    p.add_argument(
        "--wide", action="store_true", help="print every cell's measured figures (a table ~250 columns wide)"
    )
    p.set_defaults(run=run_verify)


def add_bench(sub: Subparsers) -> None:
    from . import bench

    p = sub.add_parser("bench", help="time xdrop against native dropouts (see benchmarks/README.md)")
    bench.add_arguments(p)
    p.set_defaults(run=run_bench)


def run_bench(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from . import bench

    return bench.main(args)  # --sizes was checked by its argparse type


SUBCOMMANDS: list[Callable[[Subparsers], None]] = [add_verify, add_bench]


def program_name(argv0: str) -> str:
    """How the user invoked the command: ``python -m xdrop`` (``argv[0]`` is this file) or ``xdrop``."""
    import os

    return "python -m xdrop" if os.path.basename(argv0) == "__main__.py" else "xdrop"


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    from . import __version__
    from ._lib._stream import STREAM_VERSION

    parser = argparse.ArgumentParser(
        prog=prog or program_name(sys.argv[0]), description="xdrop: one dropout, the same bits everywhere"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__} (stream v{STREAM_VERSION})")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.run(args, parser)
        sys.stdout.flush()  # inside the try: a pipe's buffered output is written here, not at exit
    except BrokenPipeError:
        # The reader left (``xdrop verify | head``): not an error of ours. Point stdout at devnull so
        # the interpreter's final flush does not raise again, and exit as a closed pipe's writer does.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, the shell's status for a writer killed by a closed pipe
    return status


if __name__ == "__main__":
    sys.exit(main())
