"""``litegate demo``: many threads share one database for a few seconds; invariants are proved.

Example::

    litegate demo --seconds 5 --threads 16

Exit codes: 0 every invariant held; 1 an invariant broke; 2 usage error.
"""

from __future__ import annotations

import argparse
import sys

from . import DEFAULT_SECONDS, DEFAULT_THREADS, OPS, format_report, run_demo

__all__ = ("configure", "run")

_EPILOG = """\
examples:
  litegate demo                    # 16 threads, ~5 s
  litegate demo --seconds 2 --threads 32

exit codes: 0 all invariants hold, 1 an invariant broke, 2 usage error"""


def _positive_float(text: str) -> float:
    value = float(text)
    if not 0 < value <= 600:
        raise argparse.ArgumentTypeError(f"must be in (0, 600], got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 512:
        raise argparse.ArgumentTypeError(f"must be in [1, 512], got {text}")
    return value


def _readers(text: str) -> int | str:
    if text == "per-thread":
        return text
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 or 'per-thread', got {text}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``demo`` options to ``parser``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _EPILOG
    parser.add_argument(
        "--seconds",
        type=_positive_float,
        default=DEFAULT_SECONDS,
        help=f"how long the threads run (default {DEFAULT_SECONDS:g})",
    )
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=DEFAULT_THREADS,
        help=f"worker threads sharing the database (default {DEFAULT_THREADS})",
    )
    parser.add_argument(
        "--readers",
        type=_readers,
        default=4,
        help="read pool: a number, 'per-thread' or 0 (default 4)",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")


def run(args: argparse.Namespace) -> int:
    """Run the demo, print the summary; 0 only if every invariant holds."""
    tty = sys.stderr.isatty()

    def progress(elapsed: float, counts: dict[str, int], errors: int) -> None:
        done = "  ".join(f"{op} {counts[op]}" for op in OPS)
        line = f"  {elapsed:4.1f}/{args.seconds:g}s  {done}  errors {errors}"
        if tty:
            sys.stderr.write("\r" + line)
        elif int(elapsed * 2) % 2 == 0:  # a line a second when not on a terminal
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    print(
        f"litegate demo: {args.threads} threads, one database, {args.seconds:g}s of transfers, "
        "point reads, ledger inserts and snapshot sums",
        flush=True,
    )
    report = run_demo(
        seconds=args.seconds,
        threads=args.threads,
        readers=args.readers,
        seed=args.seed,
        progress=progress,
    )
    if tty:
        sys.stderr.write("\n")
    print(format_report(report))
    return 0 if report.ok else 1
