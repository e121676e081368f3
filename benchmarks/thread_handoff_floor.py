"""The floor for any write path that acknowledges each write to a blocked thread.

N threads each hand a no-op to one worker thread and block until it answers (the worker takes
every waiting request per wake-up, like a group commit with free commits). No SQLite at all:
what remains is CPython's cost of blocking and waking threads under the GIL. Compare the result
with `benchmarks/sync_remedies.py`'s lock-guarded connection to see how far any threaded design
can get ahead of it on this machine.

    python benchmarks/thread_handoff_floor.py [--threads 64] [--seconds 2]
"""

from __future__ import annotations

import argparse
import os
import sys

try:
    import litegate  # noqa: F401
except ImportError:  # running from a checkout without installing
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from litegate._bench import handoff_floor


def measure(threads: int, seconds: float) -> float:
    """Hand-offs per second (the harness's ``handoff_floor``, which ``litegate bench`` also
    reports among its references)."""
    n, elapsed, _ = handoff_floor(threads, seconds)
    return n / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args(argv)
    rate = measure(args.threads, args.seconds)
    print(f"{args.threads} threads: {rate:,.0f} hand-offs/s (no SQL: the thread wake-up floor)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
