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
import threading
import time
from _thread import allocate_lock
from collections import deque
from typing import Any


def measure(threads: int, seconds: float) -> float:
    """Hand-offs per second."""
    queue: deque[Any] = deque()
    cond = threading.Condition()
    stop = time.monotonic() + seconds
    counts = [0] * threads
    done = threading.Event()

    def worker() -> None:
        while not done.is_set():
            with cond:
                while not queue and not done.is_set():
                    cond.wait(0.1)
                jobs = list(queue)
                queue.clear()
            for lock in jobs:
                lock.release()

    def caller(i: int) -> None:
        n = 0
        while time.monotonic() < stop:
            lock = allocate_lock()
            lock.acquire()
            with cond:
                queue.append(lock)
                if len(queue) == 1:
                    cond.notify()
            lock.acquire()
            n += 1
        counts[i] = n

    w = threading.Thread(target=worker, daemon=True)
    w.start()
    ts = [threading.Thread(target=caller, args=(i,)) for i in range(threads)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    elapsed = time.monotonic() - t0
    done.set()
    w.join(1)
    return sum(counts) / elapsed


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
