"""Opening and closing many databases leaks no file descriptor and no thread; a task's
finished transactions leave nothing behind."""

from __future__ import annotations

import asyncio
import gc
import os
import sqlite3
import threading
import time
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

import litegate
from litegate._engine._jobs import AsyncLaneHold


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc")
def test_open_close_fifty_times_leaks_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "leak.db")
    with litegate.connect(path) as db:
        db.execute("CREATE TABLE t(x)")
    fds, threads = _fds(), threading.active_count()
    for i, readers in zip(range(50), [4, "per-thread", 0] * 17, strict=False):
        db = litegate.connect(path, readers=readers)  # type: ignore[arg-type]
        db.execute("INSERT INTO t VALUES (?)", (i,))
        assert db.query_value("SELECT count(*) FROM t") == i + 1
        with db.transaction() as tx:
            tx.execute("INSERT INTO t VALUES (-1)")
            tx.execute("DELETE FROM t WHERE x = -1")
        adb = db.as_async()

        async def use(adb: litegate.AsyncDatabase = adb) -> None:
            await adb.execute("UPDATE t SET x = x WHERE x = 0")
            await adb.run_read(lambda c: c.execute("SELECT 1").fetchall())

        asyncio.run(use())  # a fresh loop per round: its own FDs must come back too
        db.close()
    for t in threading.enumerate():
        if t.name.startswith("litegate-"):
            t.join(5)
    assert _fds() == fds
    assert threading.active_count() == threads


async def test_a_task_running_many_transactions_keeps_none_of_the_finished_ones(
    tmp_path: Path,
) -> None:
    """Each transaction's lane hold copied its task's context, which held the task's previous
    hold: a chain of every transaction the task ran, alive as long as the task (and scanned by
    every full GC collection)."""
    adb = await litegate.connect_async(str(tmp_path / "chain.db"), synchronous="NORMAL")
    try:
        await adb.execute("CREATE TABLE a(id INTEGER PRIMARY KEY, bal INT)")
        await adb.executemany("INSERT INTO a VALUES (?, 100)", [(i,) for i in range(1, 11)])
        for i in range(300):
            async with adb.transaction() as tx:
                bal = await tx.query_value("SELECT bal FROM a WHERE id = ?", (i % 10 + 1,))
                await tx.execute("UPDATE a SET bal = ? WHERE id = ?", (bal + 1, i % 10 + 1))
        gc.collect()  # (garbage cycles aside: what is left is reachable)
        alive = sum(1 for o in gc.get_objects() if type(o) is AsyncLaneHold)
        assert alive <= 2, alive
        assert await adb.query_value("SELECT sum(bal) FROM a") == 1000 + 300
    finally:
        await adb.close()


def _loops_freed(
    db: litegate.Database, use: Callable[[litegate.AsyncDatabase], Awaitable[None]], rounds: int = 1
) -> list[bool]:
    """Run ``use(adb)`` on ``db`` in a fresh event loop, ``rounds`` times; which of those loops
    are gone once closed. (The writer thread may be handing a closed loop its last answers at
    this moment -- its flush holds them -- so look again for up to 2 s: a loop kept for good
    is still alive then.)"""
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def main() -> None:
        await use(db.as_async())
        loops.append(weakref.ref(asyncio.get_running_loop()))

    for _ in range(rounds):
        asyncio.run(main())
    deadline = time.monotonic() + 2
    while True:
        gc.collect()
        freed = [ref() is None for ref in loops]
        if all(freed) or time.monotonic() > deadline:
            return freed
        time.sleep(0.01)


def test_a_loop_the_writer_thread_granted_the_lane_to_is_freed(tmp_path: Path) -> None:
    """A task queued behind a thread's write is granted the lane by the writer thread;
    once its loop has closed, nothing of litegate's may keep that loop alive. (The writer
    thread kept the last hold it granted in a local while it slept -- for good, on an idle
    database -- and the hold its loop: a closed loop, its futures and its tasks' frames,
    alive until the writer granted the lane to another queued holder;
    test_an_event_loop_whose_tasks_waited_for_the_lane_is_freed saw it in 1 run of 3-6
    under load.)"""
    db = litegate.connect(str(tmp_path / "granted.db"), synchronous="FULL")
    try:
        db.execute("CREATE TABLE t(x)")

        async def use(adb: litegate.AsyncDatabase) -> None:
            entered, release = threading.Event(), threading.Event()

            def slow(conn: sqlite3.Connection) -> None:  # (a write holding the lane)
                conn.execute("INSERT INTO t VALUES (0)")
                entered.set()
                release.wait(10)

            async def task() -> None:
                async with adb.transaction(timeout=10) as tx:
                    await tx.execute("INSERT INTO t VALUES (1)")

            write = asyncio.ensure_future(asyncio.to_thread(db.run_write, slow))
            try:
                assert await asyncio.to_thread(entered.wait, 10)
                queued = asyncio.create_task(task())
                deadline = time.monotonic() + 5
                while (await adb.stats()).queue_depth < 1:
                    assert time.monotonic() < deadline, "the task never queued"
                    await asyncio.sleep(0.002)
            finally:
                release.set()
            await write
            await queued  # (granted by the writer thread, the write's lane released)

        assert _loops_freed(db, use) == [True]
        assert db.query_value("SELECT count(*) FROM t") == 2
    finally:
        db.close()


def test_a_loop_whose_reads_ran_on_a_reader_thread_is_freed(tmp_path: Path) -> None:
    """A reader thread that ran a loop's reads keeps nothing of them once that loop has
    closed (it kept the last job it ran in a local while it waited for the next: the job's
    loop and its caller's context, alive until its next read)."""
    db = litegate.connect(str(tmp_path / "reads.db"))
    try:
        db.execute("CREATE TABLE t(x)")

        async def use(adb: litegate.AsyncDatabase) -> None:
            assert await adb.run_read(lambda c: c.execute("SELECT 1").fetchone()[0]) == 1

        assert _loops_freed(db, use) == [True]
    finally:
        db.close()


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
def test_a_loop_that_read_inline_and_wrote_on_the_loop_is_freed(
    tmp_path: Path, synchronous: str
) -> None:
    """The per-thread records of a loop's inline readers' turns and of its writes giving way
    (kept until the thread runs another loop, or for good) hold their loop weakly: a strong
    reference kept the thread's last loop alive after it closed."""
    db = litegate.connect(str(tmp_path / "inline.db"), synchronous=synchronous)  # type: ignore[arg-type]
    try:
        db.execute("CREATE TABLE t(x)")

        async def use(adb: litegate.AsyncDatabase) -> None:
            for i in range(20):  # (inline reads take turns; a lone write runs on the loop)
                assert await adb.query_value("SELECT count(*) FROM t") == i
                await adb.execute("INSERT INTO t VALUES (?)", (i,))

        assert _loops_freed(db, use) == [True]
    finally:
        db.close()


def test_an_event_loop_whose_tasks_waited_for_the_lane_is_freed(tmp_path: Path) -> None:
    """The timeouts of a loop's queued waits share one timer, kept per loop in a registry
    keyed weakly by the loop: nothing there may keep a finished loop alive (a timer handle
    holds its loop)."""
    db = litegate.connect(str(tmp_path / "loops.db"))
    try:
        db.execute("CREATE TABLE t(x)")

        async def use(adb: litegate.AsyncDatabase) -> None:
            async def worker(k: int) -> None:
                for _ in range(5):
                    async with adb.transaction(timeout=30) as tx:
                        await tx.execute("INSERT INTO t VALUES (?)", (k,))
                        await asyncio.sleep(0)  # (holding the lane: the others queue)

            await asyncio.gather(*(worker(k) for k in range(4)))

        assert _loops_freed(db, use, rounds=3) == [True, True, True]
        assert db.query_value("SELECT count(*) FROM t") == 60
    finally:
        db.close()


def _litegate_garbage(run: Callable[[], None]) -> Counter[str]:
    """The litegate objects that ``run()`` left in reference cycles (found by the cyclic GC,
    kept by DEBUG_SAVEALL), by type."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        run()
        gc.collect()
        return Counter(
            type(o).__qualname__ for o in gc.garbage if type(o).__module__.startswith("litegate")
        )
    finally:
        gc.garbage.clear()
        gc.set_debug(0)
        gc.enable()


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
def test_transactions_leave_no_reference_cycles(tmp_path: Path, synchronous: str) -> None:
    """A transaction's objects are freed by reference counting alone, async (grouped and
    alone) and sync (threads queued for the lane), so the cyclic GC has nothing of it to
    collect: an async transaction's lane hold named its last lease, which named the hold (a
    cycle of 7 objects per transaction at FULL), and the GC's collections of the young
    generations then held the loop 2-3 ms ~15 times a second at 64 tasks."""
    db = litegate.connect(str(tmp_path / "cycles.db"), synchronous=synchronous)  # type: ignore[arg-type]
    try:
        db.execute("CREATE TABLE a(id INTEGER PRIMARY KEY, bal INT)")
        db.executemany("INSERT INTO a VALUES (?, 100)", [(i,) for i in range(1, 11)])

        async def tasks() -> None:
            adb = db.as_async()

            async def worker(k: int) -> None:
                for i in range(10):
                    async with adb.transaction() as tx:
                        key = (k + i) % 10 + 1
                        bal = await tx.query_value("SELECT bal FROM a WHERE id = ?", (key,))
                        await tx.execute("UPDATE a SET bal = ? WHERE id = ?", (bal + 1, key))
                    await adb.execute("UPDATE a SET bal = bal - 1 WHERE id = ?", (key,))

            await asyncio.gather(*(worker(k) for k in range(16)))
            await worker(0)  # (alone on the lane)

        def threads() -> None:
            def worker(k: int) -> None:
                for i in range(20):
                    with db.transaction() as tx:
                        key = (k + i) % 10 + 1
                        bal = tx.query_value("SELECT bal FROM a WHERE id = ?", (key,))
                        tx.execute("UPDATE a SET bal = ? WHERE id = ?", (bal + 1, key))
                    db.execute("UPDATE a SET bal = bal - 1 WHERE id = ?", (key,))

            ts = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
            for t in ts:
                t.start()
            for t in ts:
                t.join(30)
            assert not any(t.is_alive() for t in ts)

        asyncio.run(tasks())  # (once first: what is made once per loop or thread is made)
        assert _litegate_garbage(lambda: asyncio.run(tasks())) == Counter()
        assert _litegate_garbage(threads) == Counter()
        assert db.query_value("SELECT sum(bal) FROM a") == 1000
    finally:
        db.close()
