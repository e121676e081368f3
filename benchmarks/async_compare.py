"""litegate's asyncio facade against aiosqlite and ``asyncio.to_thread``, same workload, one run.

Contenders: ``litegate.connect_async(readers=4, synchronous="FULL")``; one aiosqlite connection
(WAL) at ``synchronous=FULL`` and at ``NORMAL``; ``asyncio.to_thread`` over one
``check_same_thread=False`` sqlite3 connection behind a lock (FULL). Reference: raw synchronous
sqlite3 on one thread. Workloads: point reads, single-row write transactions and a 90/10 mix,
with 1 and 64 concurrent tasks. Prints ops/s, p50/p99, errors, ratios, a data check per run and
PASS/FAIL lines for the targets.

    python benchmarks/async_compare.py [--seconds 2] [--tasks 1,64] [--json FILE]

The harness lives in ``litegate._bench`` (also ``litegate bench --suite async``); this script is
a thin wrapper, importable as a module: ``main(argv)`` returns the exit code.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

try:
    import litegate  # noqa: F401
except ImportError:  # running from a checkout without installing
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from litegate._bench import (
    ASYNC_WORKLOADS,
    DEFAULT_ASYNC_SECONDS,
    DEFAULT_TASKS,
    BenchResult,
    format_report,
    run_async_benchmark,
)
from litegate._bench.cli import parse_tasks

__all__ = ("BenchResult", "format_report", "main", "run_async_benchmark")


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="async_compare.py",
        description="Benchmark litegate async against aiosqlite and asyncio.to_thread.",
    )
    parser.add_argument(
        "--seconds",
        type=_positive,
        default=DEFAULT_ASYNC_SECONDS,
        help=f"run time per contender, workload and task count (default {DEFAULT_ASYNC_SECONDS:g})",
    )
    parser.add_argument(
        "--tasks",
        type=parse_tasks,
        default=list(DEFAULT_TASKS),
        metavar="N,N",
        help="concurrent task counts (default " + ",".join(map(str, DEFAULT_TASKS)) + ")",
    )
    parser.add_argument(
        "--workload", choices=[*ASYNC_WORKLOADS, "all"], default="all", help="default: all"
    )
    parser.add_argument("--json", metavar="FILE", help="also save the results as JSON")
    parser.add_argument("--dir", metavar="DIR", help="directory for the database file")
    parser.add_argument(
        "--no-reference", action="store_true", help="skip the raw single-thread reference"
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when a target is missed or litegate fails"
    )
    args = parser.parse_args(argv)

    def progress(message: str) -> None:
        sys.stderr.write(f"[bench] {message}\n")
        sys.stderr.flush()

    result = run_async_benchmark(
        seconds=args.seconds,
        tasks=args.tasks,
        workloads=list(ASYNC_WORKLOADS) if args.workload == "all" else [args.workload],
        directory=args.dir,
        reference=not args.no_reference,
        progress=progress,
    )
    print(format_report(result))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result.as_dict(), fh, indent=2)
            fh.write("\n")
        print(f"results saved to {args.json}")
    return 1 if args.check and not result.ok else 0


if __name__ == "__main__":
    sys.exit(main())
