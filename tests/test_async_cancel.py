"""Cancellation storm: random cancellations never lose an acknowledged write, never leave a
trace of a cancelled transaction, never leak the lane or a reader."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest

import litegate

OPS = 10_000
WAVE = 250
ACCOUNTS = 20
START = 1000


@pytest.mark.blocks_loop(
    "waves of 250 tasks made ready at once (with eager tasks, run inside create_task): one "
    "loop iteration runs them back to back, 15-27 ms in all"
)
@pytest.mark.no_debug_loop("10,000 operations: several times slower under debug bookkeeping")
async def test_cancellation_storm(db_path: str, readers: Any) -> None:
    rng = random.Random(1234)
    # at NORMAL lone writes and transactions commit on the loop; at FULL on the writer thread
    adb = await litegate.connect_async(
        db_path, readers=readers, synchronous="FULL" if readers == 0 else "NORMAL"
    )
    try:
        await adb.executescript(
            """
            CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INT NOT NULL);
            CREATE TABLE items(token TEXT PRIMARY KEY);
            CREATE TABLE markers(tx INT PRIMARY KEY);
            """
        )
        await adb.executemany(
            "INSERT INTO accounts VALUES (?, ?)", [(i, START) for i in range(ACCOUNTS)]
        )
        submitted: set[str] = set()
        acked: set[str] = set()
        txs: dict[int, litegate.AsyncTransaction] = {}
        counts = {"cancelled": 0, "done": 0}

        async def insert(i: int) -> None:
            token = f"t{i}"
            submitted.add(token)
            await adb.execute("INSERT INTO items VALUES (?)", (token,))
            acked.add(token)

        async def transfer(i: int) -> None:
            a, b = rng.sample(range(ACCOUNTS), 2)
            tx = adb.transaction()
            txs[i] = tx
            async with tx:
                await tx.execute("INSERT INTO markers VALUES (?)", (i,))
                await tx.execute("UPDATE accounts SET balance = balance - 1 WHERE id = ?", (a,))
                if rng.random() < 0.5:
                    await asyncio.sleep(0)  # a window for cancellation mid-transaction
                await tx.execute("UPDATE accounts SET balance = balance + 1 WHERE id = ?", (b,))

        async def read(i: int) -> None:
            assert (
                await adb.query_value("SELECT balance FROM accounts WHERE id = ?", (i % ACCOUNTS,))
                is not None
            )

        async def snapshot(i: int) -> None:
            async with adb.snapshot() as snap:
                total = await snap.query_value("SELECT sum(balance) FROM accounts")
                assert total == ACCOUNTS * START

        kinds = [insert, insert, transfer, read, snapshot]
        i = 0
        while i < OPS:
            tasks = []
            for _ in range(WAVE):
                tasks.append(asyncio.create_task(rng.choice(kinds)(i)))
                i += 1
            victims = rng.sample(tasks, WAVE // 3)
            for n, task in enumerate(victims):
                if n % 3 == 0:
                    task.cancel()  # before it ever ran
            await asyncio.sleep(0)
            for n, task in enumerate(victims):
                if n % 3 == 1:
                    task.cancel()  # while queued or inside a transaction
            await asyncio.sleep(0.0005)
            for n, task in enumerate(victims):
                if n % 3 == 2:
                    task.cancel()  # later: running, committing, or already done
            for result in await asyncio.gather(*tasks, return_exceptions=True):
                if isinstance(result, asyncio.CancelledError):
                    counts["cancelled"] += 1
                elif isinstance(result, BaseException):
                    raise result
                else:
                    counts["done"] += 1
        assert counts["cancelled"] > OPS // 10 and counts["done"] > OPS // 2

        # every acknowledged write is present, and nothing that was never submitted
        present = {r[0] for r in await adb.query("SELECT token FROM items")}
        assert acked <= present <= submitted
        # no partial transfer, and a transaction's marker is there exactly when it committed
        assert await adb.query_value("SELECT sum(balance) FROM accounts") == ACCOUNTS * START
        markers = {r[0] for r in await adb.query("SELECT tx FROM markers")}
        assert markers == {k for k, tx in txs.items() if tx.committed}
        # the lane is free: a transaction starts at once
        t0 = time.monotonic()
        async with adb.transaction(timeout=1) as tx:
            await tx.execute("INSERT INTO items VALUES ('final')")
        assert time.monotonic() - t0 < 1
        # no reader leaked (interrupted reads finish in their threads right away)
        deadline = time.monotonic() + 5
        while (stats := await adb.stats()).pool_in_use or stats.queue_depth:
            assert time.monotonic() < deadline, stats
            await asyncio.sleep(0.01)
    finally:
        await adb.close()
