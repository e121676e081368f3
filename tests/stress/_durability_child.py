"""Child process of test_durability: writes from several threads, prints each acknowledged id.

Usage: python _durability_child.py DB_PATH ROUND THREADS PAUSE

With PAUSE=1 the writers sometimes pause together-ish and the lane checkpoints when idle
(``checkpoint_idle`` a few ms), so some kills land during or near a WAL checkpoint.

An id is printed (one line, flushed) only after the write that inserted it returned, so every
printed id must survive a SIGKILL of this process at any moment. Thread 0 writes through
``db.transaction()`` (two rows per transaction, the second id printed after the block),
the others through ``db.execute``.
"""

from __future__ import annotations

import random
import sys
import threading
import time

import litegate


def main() -> None:
    path, rnd, nthreads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    pause = sys.argv[4] == "1"
    out_lock = threading.Lock()

    def ack(*ids: int) -> None:
        line = "".join(f"{i}\n" for i in ids)
        with out_lock:
            sys.stdout.write(line)
            sys.stdout.flush()

    def writer(t: int) -> None:
        base = (rnd * 100 + t) * 1_000_000
        n = 0
        rng = random.Random(rnd * 1000 + t)
        while True:
            if pause and rng.random() < 0.03:
                time.sleep(rng.uniform(0.005, 0.03))
            if t == 0:
                a, b = base + n, base + n + 1
                with db.transaction() as tx:
                    tx.execute("INSERT INTO acks(id, payload) VALUES (?, ?)", (a, "tx" * 20))
                    tx.execute("INSERT INTO acks(id, payload) VALUES (?, ?)", (b, "tx" * 20))
                ack(a, b)
                n += 2
            else:
                i = base + n
                db.execute("INSERT INTO acks(id, payload) VALUES (?, ?)", (i, "x" * (i % 200)))
                ack(i)
                n += 1

    db = litegate.connect(
        path, synchronous="FULL", readers=2, checkpoint_idle=0.003 if pause else 0.2
    )
    db.execute("CREATE TABLE IF NOT EXISTS acks(id INTEGER PRIMARY KEY, payload TEXT NOT NULL)")
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    threads = [threading.Thread(target=writer, args=(t,), daemon=True) for t in range(nthreads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()  # never returns: the parent kills this process


if __name__ == "__main__":
    main()
