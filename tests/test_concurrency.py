"""Many threads, one database: invariants hold in every read mode."""

from __future__ import annotations

import random
import sqlite3
import threading
from typing import Any

import litegate

THREADS = 16
OPS_PER_THREAD = 1000
ACCOUNTS = 50
START_BALANCE = 1000
TOTAL = ACCOUNTS * START_BALANCE


def test_mixed_load_keeps_every_invariant(db: litegate.Database) -> None:
    db.executemany(
        "INSERT INTO accounts(id, balance) VALUES (?, ?)",
        [(i, START_BALANCE) for i in range(ACCOUNTS)],
    )
    db.execute("CREATE TABLE ledger(id INTEGER PRIMARY KEY, token TEXT NOT NULL, kind TEXT)")
    acked: list[list[str]] = [[] for _ in range(THREADS)]
    errors: list[BaseException] = []
    bad_sums: list[int] = []
    start = threading.Barrier(THREADS)

    def worker(k: int) -> None:
        rng = random.Random(k)
        mine = acked[k]
        try:
            start.wait(10)
            for i in range(OPS_PER_THREAD):
                r = rng.random()
                if r < 0.40:
                    row = db.query_one(
                        "SELECT balance FROM accounts WHERE id = ?", (rng.randrange(ACCOUNTS),)
                    )
                    assert row is not None and row[0] >= 0
                elif r < 0.65:
                    token = f"{k}-{i}"
                    db.execute("INSERT INTO ledger(token, kind) VALUES (?, 'single')", (token,))
                    mine.append(token)
                elif r < 0.85:
                    a, b = rng.sample(range(ACCOUNTS), 2)
                    amount = rng.randint(1, 50)
                    with db.transaction() as tx:
                        bal = tx.query_value("SELECT balance FROM accounts WHERE id = ?", (a,))
                        if bal >= amount:
                            tx.execute(
                                "UPDATE accounts SET balance = balance - ? WHERE id = ?",
                                (amount, a),
                            )
                            tx.execute(
                                "UPDATE accounts SET balance = balance + ? WHERE id = ?",
                                (amount, b),
                            )
                elif r < 0.95:
                    with db.snapshot() as snap:
                        total = snap.query_value("SELECT sum(balance) FROM accounts")
                        n = snap.query_value("SELECT count(*) FROM accounts")
                    if total != TOTAL or n != ACCOUNTS:
                        bad_sums.append(total)
                else:
                    token = f"{k}-{i}"

                    def pair(conn: sqlite3.Connection, t: str) -> None:
                        conn.execute("INSERT INTO ledger(token, kind) VALUES (?, 'pair-a')", (t,))
                        conn.execute("INSERT INTO ledger(token, kind) VALUES (?, 'pair-b')", (t,))

                    db.run_write(pair, token)
                    mine.append(token + "#a")
                    mine.append(token + "#b")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert bad_sums == []
    assert db.query_value("SELECT sum(balance) FROM accounts") == TOTAL
    assert db.query_value("SELECT min(balance) FROM accounts") >= 0
    rows = db.query("SELECT token, kind FROM ledger")
    stored = sorted(
        t if kind == "single" else t + ("#a" if kind == "pair-a" else "#b") for t, kind in rows
    )
    expected = sorted(tok for mine in acked for tok in mine)
    assert stored == expected  # every acknowledged write present exactly once, nothing else
    stats = db.stats()
    assert stats.jobs_failed == 0
    assert stats.transactions > 0


def test_group_commit_under_mixed_readers_and_writers(db: litegate.Database) -> None:
    """Readers in parallel with writers never see a half-applied batch."""
    db.execute("CREATE TABLE pairs(k INTEGER PRIMARY KEY, a INT, b INT)")
    stop = threading.Event()
    torn: list[Any] = []

    def reader() -> None:
        while not stop.is_set():
            for row in db.query("SELECT a, b FROM pairs"):
                if row[0] != row[1]:
                    torn.append(tuple(row))

    def writer(k: int) -> None:
        for i in range(200):
            db.run_write(_insert_pair, k * 1000 + i)

    readers = [threading.Thread(target=reader) for _ in range(2)]
    writers = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    assert torn == []
    assert db.query_value("SELECT count(*) FROM pairs") == 1600


def _insert_pair(conn: sqlite3.Connection, k: int) -> None:
    conn.execute("INSERT INTO pairs(k, a, b) VALUES (?, ?, 0)", (k, k))
    conn.execute("UPDATE pairs SET b = a WHERE k = ?", (k,))
