"""``litegate bench``: litegate against the folk remedies (one connection per thread, a queue
pool, one connection behind a lock), same file, same workload, one run.

Example::

    litegate bench --seconds 3 --workload all --json bench.json

Exit codes: 0 the benchmark ran (targets are reported, not enforced); 1 with ``--check`` when
a target was missed, litegate reported an error or its data did not match; 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import sys

from . import DEFAULT_POOL_SIZE, DEFAULT_SECONDS, WORKLOADS, format_report, run_benchmark

__all__ = ("configure", "run")

_EPILOG = """\
examples:
  litegate bench                          # both workloads, 3 s per contender
  litegate bench --workload writes --seconds 1
  litegate bench --json results.json --check

exit codes: 0 ran (targets are only reported), 1 --check and a target missed or litegate
failed its data check, 2 usage error"""


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``bench`` options to ``parser``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _EPILOG
    parser.add_argument(
        "--seconds",
        type=_positive,
        default=DEFAULT_SECONDS,
        help=f"run time per contender and workload (default {DEFAULT_SECONDS:g})",
    )
    parser.add_argument(
        "--workload",
        choices=[*WORKLOADS, "all"],
        default="all",
        help="mixed (8 threads, 90%% reads), writes (64 writer threads) or all (default)",
    )
    parser.add_argument("--json", metavar="FILE", help="also save the results as JSON")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when a target is missed or litegate fails"
    )
    parser.add_argument(
        "--dir",
        metavar="DIR",
        help="directory for the database file (default: the system temp dir); use the disk "
        "you care about, since synchronous=FULL makes fsync speed matter",
    )
    parser.add_argument(
        "--pool-size",
        type=int,
        default=DEFAULT_POOL_SIZE,
        help=f"connections in the queue-pool remedy (default {DEFAULT_POOL_SIZE})",
    )
    parser.add_argument(
        "--no-reference", action="store_true", help="skip the raw single-thread reference"
    )


def _progress(message: str) -> None:
    sys.stderr.write(f"[bench] {message}\n")
    sys.stderr.flush()


def run(args: argparse.Namespace) -> int:
    """Run the benchmark, print the table to stdout (progress to stderr)."""
    workloads = list(WORKLOADS) if args.workload == "all" else [args.workload]
    result = run_benchmark(
        seconds=args.seconds,
        workloads=workloads,
        directory=args.dir,
        pool_size=args.pool_size,
        reference=not args.no_reference,
        progress=_progress,
    )
    sys.stdout.write(format_report(result) + "\n")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result.as_dict(), fh, indent=2)
            fh.write("\n")
        sys.stdout.write(f"results saved to {args.json}\n")
    if args.check and not result.ok:
        return 1
    return 0
