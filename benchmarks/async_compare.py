"""litegate's asyncio facades against aiosqlite and ``asyncio.to_thread``, same workload, one run.

Contenders: ``litegate.connect_async(readers=4)``; litegate's sync ``Database`` behind
``asyncio.to_thread``; one aiosqlite connection; ``asyncio.to_thread`` over one sqlite3
connection behind a lock, and over a connection per executor thread. Reference: raw synchronous
sqlite3 on one thread. Workloads: point reads, one-row writes, a 90/10 mix, 100-row scans,
interactive transfers and slow-tx, with 1 and 64 concurrent tasks, at synchronous NORMAL and
FULL. Prints ops/s, p50/p99, loop lag, errors, ratios, a data check per run and PASS/FAIL lines
for the targets (docs/bench.md).

    python benchmarks/async_compare.py [--seconds 2] [--tasks 1,64] [--synchronous normal,full]
                                       [--workload transfers] [--json FILE] [--plot FILE.png]

The harness lives in ``litegate._bench`` (this is ``litegate bench --suite async``); this script
is a thin wrapper, importable as a module: ``main(argv)`` returns the exit code.
"""

from __future__ import annotations

import argparse
import os
import sys

try:
    import litegate  # noqa: F401
except ImportError:  # running from a checkout without installing
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from litegate._bench import cli as _cli

__all__ = ("main",)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="async_compare.py",
        description="Benchmark litegate async against aiosqlite and asyncio.to_thread.",
    )
    _cli.configure(parser)
    parser.set_defaults(suite="async")  # this script is the async suite; see sync_remedies.py
    return _cli.run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
