"""Child process of test_crash: mixed write load, printing each acknowledged id.

Usage: python _crash_child.py DB_PATH ROUND ENGINES PAUSE

Writers (``WRITERS``: their index ``w`` gives each its own id range, see :func:`ident`):

* sync threads doing single writes (``db.execute``): several at once, so they are
  group-committed together (and with the async ones when they share the engine);
* sync threads running transactions (``with db.transaction() as tx``): several, so that
  their transactions share group commits (a kill lands inside a group too);
* asyncio tasks doing single writes (``await adb.execute``), and several running transactions
  (``async with adb.transaction() as tx``), on an event loop in a thread of their own.

A transaction moves an amount between two accounts and records the move as two rows of
``moves`` (one per account, the deltas summing to zero): half of one applied shows as a lone
row, or as balances that the recorded moves do not explain.

``ENGINES=shared``: ``adb`` is ``db.as_async()`` (one write lane for both facades);
``ENGINES=two``: ``adb`` comes from ``litegate.connect_async`` (a second engine on the same
file, contending for its write lock as another process would). ``PAUSE=1``: writers pause
now and then and the lane checkpoints when idle after 3 ms, so kills land near checkpoints.

An id is printed (one line, flushed) only after its write or transaction returned, so every
printed id must survive a SIGKILL of this process at any moment. ``Busy``/``WriteTimeout``
(two engines contending on a loaded machine) are not acknowledged: the writer retries the
same id (a failed write committed nothing, or the retry fails on the primary key).
"""

from __future__ import annotations

import asyncio
import random
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import litegate

ACCOUNTS = 10
START_BALANCE = 1000
SYNC_SINGLE = (0, 1, 2)
SYNC_TX = (3, 8, 9)  # several: their transactions share a group commit
ASYNC_SINGLE = (4, 5, 6)
ASYNC_TX = (7, 10, 11, 12)
WRITERS = 13
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS acks(id INTEGER PRIMARY KEY, payload TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS accounts(
    id INTEGER PRIMARY KEY, balance INTEGER NOT NULL CHECK (balance >= 0));
CREATE TABLE IF NOT EXISTS moves(
    tx INTEGER NOT NULL, part INTEGER NOT NULL, account INTEGER NOT NULL, delta INTEGER NOT NULL,
    PRIMARY KEY (tx, part));
INSERT OR IGNORE INTO accounts(id, balance)
    WITH RECURSIVE a(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM a WHERE i + 1 < {ACCOUNTS})
    SELECT i, {START_BALANCE} FROM a;
"""
RETRY = (litegate.Busy, litegate.WriteTimeout)
BALANCE = "SELECT balance FROM accounts WHERE id = ?"
INSERT = "INSERT INTO acks(id, payload) VALUES (?, ?)"


def ident(rnd: int, w: int, n: int) -> int:
    """The ``n``-th id of writer ``w`` in round ``rnd`` (unique across rounds and writers)."""
    return (rnd * 100 + w) * 1_000_000 + n


_out_lock = threading.Lock()


def ack(i: int) -> None:
    with _out_lock:
        sys.stdout.write(f"{i}\n")
        sys.stdout.flush()


def retrying(what: str, err: BaseException) -> None:
    with _out_lock:
        sys.stderr.write(f"retry {what}: {type(err).__name__}: {err}\n")
        sys.stderr.flush()


def transfer(rng: random.Random) -> tuple[int, int, Callable[[int], int]]:
    """Two accounts and a rule for the amount given the first one's balance."""
    a, b = rng.sample(range(ACCOUNTS), 2)
    return a, b, lambda balance: rng.randint(0, min(balance, 50))


def move(i: int, a: int, b: int, x: int) -> list[tuple[str, tuple[int, ...]]]:
    """The statements of transaction ``i``: ``x`` from account ``a`` to ``b``, recorded."""
    return [
        ("UPDATE accounts SET balance = balance - ? WHERE id = ?", (x, a)),
        ("UPDATE accounts SET balance = balance + ? WHERE id = ?", (x, b)),
        ("INSERT INTO moves VALUES (?, 1, ?, ?)", (i, a, -x)),
        ("INSERT INTO moves VALUES (?, 2, ?, ?)", (i, b, x)),
    ]


def sync_writer(db: litegate.Database, rnd: int, w: int, pause: bool) -> None:
    rng = random.Random(rnd * 1000 + w)
    n = 0
    while True:
        if pause and rng.random() < 0.03:
            time.sleep(rng.uniform(0.005, 0.03))
        i = ident(rnd, w, n)
        try:
            if w in SYNC_TX:
                a, b, amount = transfer(rng)
                with db.transaction() as tx:
                    x = amount(tx.query_value(BALANCE, (a,)))
                    for sql, args in move(i, a, b, x):
                        tx.execute(sql, args)
            else:
                db.execute(INSERT, (i, "x" * (i % 300)))
        except RETRY as err:
            retrying(f"sync {i}", err)
            continue
        ack(i)
        n += 1


async def async_writer(adb: litegate.AsyncDatabase, rnd: int, w: int, pause: bool) -> None:
    rng = random.Random(rnd * 1000 + w)
    n = 0
    while True:
        if pause and rng.random() < 0.03:
            await asyncio.sleep(rng.uniform(0.005, 0.03))
        i = ident(rnd, w, n)
        try:
            if w in ASYNC_TX:
                a, b, amount = transfer(rng)
                async with adb.transaction() as tx:
                    x = amount(await tx.query_value(BALANCE, (a,)))
                    for sql, args in move(i, a, b, x):
                        await tx.execute(sql, args)
            else:
                await adb.execute(INSERT, (i, "a" * (i % 300)))
        except RETRY as err:
            retrying(f"async {i}", err)
            continue
        ack(i)
        n += 1


def async_side(
    db: litegate.Database, opts: dict[str, Any], two: bool, rnd: int, pause: bool
) -> None:
    async def main() -> None:
        adb = await litegate.connect_async(db.path, **opts) if two else db.as_async()
        writers = [async_writer(adb, rnd, w, pause) for w in (*ASYNC_SINGLE, *ASYNC_TX)]
        await asyncio.gather(*writers)  # never returns: the parent kills this process

    asyncio.run(main())


def main() -> None:
    path, rnd = sys.argv[1], int(sys.argv[2])
    two, pause = sys.argv[3] == "two", sys.argv[4] == "1"
    opts: dict[str, Any] = {
        "synchronous": "FULL",
        "readers": 2,
        "checkpoint_idle": 0.003 if pause else 0.2,
    }
    db = litegate.connect(path, **opts)
    db.executescript(SCHEMA)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    threads = [
        threading.Thread(target=sync_writer, args=(db, rnd, w, pause), daemon=True)
        for w in (*SYNC_SINGLE, *SYNC_TX)
    ]
    threads.append(
        threading.Thread(target=async_side, args=(db, opts, two, rnd, pause), daemon=True)
    )
    for th in threads:
        th.start()
    for th in threads:
        th.join()


if __name__ == "__main__":
    main()
