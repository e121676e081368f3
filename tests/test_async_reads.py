"""The async read path under load (issue 11, point 4): inline reads share the loop in rounds,
a statement known to run over the inline budget goes straight to a reader thread, and an
offloaded read's answer is not held behind a stream of inline reads."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import pytest

import litegate
from litegate._engine import _bridge
from litegate._engine._readers import _SKIPS_FIRST, SlowStatements

# Far longer than INLINE_BUDGET on any machine (tens of ms), so every inline attempt misses.
SLOW = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?) "
    "SELECT sum(x) FROM c"
)
SLOW_N = 300_000
POINT = "SELECT v FROM t WHERE id = ?"


async def _open(db_path: str, readers: Any) -> litegate.AsyncDatabase:
    adb = await litegate.connect_async(db_path, readers=readers)
    await adb.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v INT)")
    await adb.executemany("INSERT INTO t VALUES (?, ?)", [(i, i * 10) for i in range(1, 101)])
    return adb


def test_slow_statements_skip_for_a_while_then_try_again() -> None:
    slow = SlowStatements()
    assert not slow.known and not slow.skip("q")
    slow.ran_long("q")
    assert [slow.skip("q") for _ in range(_SKIPS_FIRST + 1)] == [True] * _SKIPS_FIRST + [False]
    slow.ran_long("q")  # slow again when tried inline: twice as many skips
    skipped = 0
    while slow.skip("q"):
        skipped += 1
        slow.ran_long("q")  # (a call that skipped it, judged slow: no change)
    assert skipped == 2 * _SKIPS_FIRST
    slow.ran_inline("q")  # one success forgets it
    assert not slow.known and not slow.skip("q")
    assert not slow.skip("other")


async def test_a_statement_known_slow_goes_straight_to_a_thread(
    db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (readers=2: in per-thread mode the loop thread never has a reader of its own, so every
    # async read runs on a reader thread)
    tried: list[str] = []
    real = _bridge.run_inline  # (what _local imported)

    def counting(conn: sqlite3.Connection, fn: Any, args: Any) -> Any:
        tried.append(args[0])
        return real(conn, fn, args)

    monkeypatch.setattr("litegate._engine._local.run_inline", counting)
    adb = await _open(db_path, 2)
    try:
        for _ in range(3):  # (the first read opens a reader, on a thread)
            await adb.query_value(POINT, (1,))
        tried.clear()
        want = SLOW_N * (SLOW_N + 1) // 2
        # tried inline, interrupted, tried again a turn later (it might have been a stall),
        # then run on a reader thread, which finds it slow
        assert await adb.query_value(SLOW, (SLOW_N,)) == want
        assert tried.count(SLOW) == 2
        for i in range(_SKIPS_FIRST):  # known slow: never tried inline, still answered
            assert await adb.query_value(SLOW, (SLOW_N,)) == want
            assert await adb.query_value(POINT, (i + 1,)) == (i + 1) * 10  # fast ones inline
        assert tried.count(SLOW) == 2
        assert tried.count(POINT) == _SKIPS_FIRST
        assert await adb.query_value(SLOW, (SLOW_N,)) == want  # then tried inline again, once
        assert tried.count(SLOW) == 3
    finally:
        await adb.close()


@pytest.mark.no_debug_loop("counts reads per loop round; debug bookkeeping only slows it")
async def test_an_offloaded_answer_is_not_held_behind_inline_reads(db_path: str) -> None:
    """32 tasks read inline in a loop while one task's reads run on a reader thread: between
    a thread finishing a read and its task resuming (the answer's delivery, then the task's
    turn: two rounds of the ready tasks), the others make a bounded number of inline reads.
    With a fixed 2 ms turn per task it was two rounds of 32 x 2 ms: thousands of reads."""
    adb = await _open(db_path, 2)
    done = 0
    stop = False
    going = asyncio.Event()

    async def reader(key: int) -> None:
        nonlocal done
        while not stop:
            assert await adb.query_value(POINT, (key,)) == key * 10
            done += 1
            if done == 1000:
                going.set()

    def offloaded(conn: sqlite3.Connection, marks: dict[str, int]) -> int:
        value = int(conn.execute(SLOW, (20_000,)).fetchone()[0])
        marks["finished"] = done  # (read on the reader thread: the count as it ends)
        return value

    tasks = [asyncio.create_task(reader(i % 100 + 1)) for i in range(32)]
    try:
        await going.wait()
        gaps = []
        for _ in range(5):
            marks: dict[str, int] = {}
            assert await adb.run_read(offloaded, marks) == 20_000 * 20_001 // 2
            gaps.append(done - marks["finished"])
        assert done > 1000 + 5  # the inline readers kept going meanwhile
        assert max(gaps) < 32 * 64, gaps
    finally:
        stop = True
        await asyncio.gather(*tasks)
        await adb.close()
