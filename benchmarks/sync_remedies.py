"""litegate against the folk remedies for sharing one SQLite file between threads.

Runs the same workloads (a 90/10 mix on 8 threads over 100k rows, one-row writes on 64,
interactive transfers on 8), for the same time, on the same fresh file, at synchronous NORMAL
and FULL, against (a) a sqlite3 connection per thread, (b) a ``queue.Queue`` pool of
connections, (c) one connection behind a ``threading.Lock``, a bare group commit ceiling, and
litegate (``readers=4`` and ``readers="per-thread"``); prints ops/s, p50/p99 latency, errors
and ratios, plus PASS/FAIL lines for the targets (docs/bench.md).

    python benchmarks/sync_remedies.py [--seconds 3] [--workload mixed,writes,transfers|all]
                                       [--synchronous normal,full] [--json FILE] [--plot FILE.png]

The harness lives in ``litegate._bench`` (this is ``litegate bench --suite sync``); this script
is a thin wrapper, importable as a module: ``main(argv)`` returns the exit code and
``run_benchmark`` returns the results.
"""

from __future__ import annotations

import argparse
import os
import sys

try:
    import litegate  # noqa: F401
except ImportError:  # running from a checkout without installing
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from litegate._bench import BenchResult, format_report, run_benchmark
from litegate._bench import cli as _cli

__all__ = ("BenchResult", "format_report", "main", "run_benchmark")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sync_remedies.py",
        description="Benchmark litegate against the folk remedies for sharing sqlite3.",
    )
    _cli.configure(parser)
    parser.set_defaults(suite="sync")  # this script is the sync suite; see async_compare.py
    return _cli.run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
