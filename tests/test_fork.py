"""A Database inherited through fork(): the child opens its own connections and works; the
parent's engine is untouched. An in-memory database refuses to be used in a forked child."""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
import os
import select
import signal
import sqlite3
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import litegate

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork"),
    # Python 3.12+ warns when a process with threads (the writer) forks; forking is the point.
    pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning"),
]

CHILD_TIMEOUT = 20.0
INSERT = "INSERT INTO t(who, n) VALUES (?, ?)"


class Child:
    """A forked child running ``fn``: exit 0 if it returns, 1 (traceback reported) if it raises.
    ``to_child``/``from_child`` are one-byte signalling pipes for step-by-step scenarios."""

    def __init__(self, fn: Callable[[Child], None]) -> None:
        r, w = os.pipe()
        p2c_r, self._p2c_w = os.pipe()
        self._c2p_r, c2p_w = os.pipe()
        self._p2c_r, self._c2p_w = p2c_r, c2p_w
        self.pid = os.fork()
        if self.pid == 0:  # child: never return into pytest
            code = 1
            try:
                os.close(r)
                fn(self)
                code = 0
            except BaseException:
                os.write(w, traceback.format_exc().encode())
            finally:
                os._exit(code)
        os.close(w)
        os.close(p2c_r)
        os.close(c2p_w)
        self._report = r

    # child side
    def signal_parent(self) -> None:
        os.write(self._c2p_w, b"x")

    def wait_parent(self) -> None:
        assert os.read(self._p2c_r, 1) == b"x", "the parent went away"

    # parent side
    def signal_child(self) -> None:
        os.write(self._p2c_w, b"x")

    def wait_child(self, timeout: float = CHILD_TIMEOUT) -> None:
        """Wait for the child's next signal_parent(); fails if it exits or hangs first."""
        ready, _, _ = select.select([self._c2p_r], [], [], timeout)
        if not ready or os.read(self._c2p_r, 1) != b"x":
            self.join(5.0)
            pytest.fail("the child ended or hung before reaching its next step")

    def join(self, timeout: float = CHILD_TIMEOUT) -> None:
        """Wait for the exit; fails the test if the child failed or hung (then it is killed)."""
        deadline = time.monotonic() + timeout
        status = None
        while time.monotonic() < deadline:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.01)
        else:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            status = None
        with os.fdopen(self._report, "rb") as f:
            report = f.read().decode()
        for fd in (self._p2c_w, self._c2p_r):
            os.close(fd)
        if status is None:
            pytest.fail(f"the forked child did not finish within {timeout}s (hang)")
        assert os.waitstatus_to_exitcode(status) == 0, f"child failed:\n{report}"


def run_in_child(fn: Callable[[], None], timeout: float = CHILD_TIMEOUT) -> None:
    """Fork, run ``fn`` in the child, wait for it; fails the test if it fails or hangs."""
    Child(lambda _: fn()).join(timeout)


def _setup(db: litegate.Database) -> None:
    db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, who TEXT NOT NULL, n INTEGER NOT NULL)")
    db.execute(INSERT, ("parent", -1))
    assert db.query_value("SELECT count(*) FROM t") == 1  # warm the read pool before the fork


def _child_writes(
    db: litegate.Database, threads: int = 3, per_thread: int = 20, tag: str = "child"
) -> None:
    """Writes and reads in the child, from several threads; raises on any mismatch. Rows are
    ``who = "{tag}:{thread}"`` plus two ``"{tag}:tx"`` rows from a transaction."""
    errors: list[BaseException] = []

    def work(k: int) -> None:
        who = f"{tag}:{k}"
        try:
            for i in range(per_thread):
                db.execute(INSERT, (who, i))
                # read-your-writes through the child's own readers
                got = db.query_value("SELECT count(*) FROM t WHERE who = ?", (who,))
                assert got == i + 1, (who, i, got)
        except BaseException as exc:
            errors.append(exc)

    ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]
    with db.transaction() as tx:
        tx.execute(INSERT, (f"{tag}:tx", 0))
        tx.execute(INSERT, (f"{tag}:tx", 1))
    mine = db.query_value("SELECT count(*) FROM t WHERE who LIKE ?", (f"{tag}:%",))
    assert mine == threads * per_thread + 2
    assert db.query_value("SELECT count(*) FROM t WHERE who = 'parent'") == 1
    assert db.stats().jobs_ok == threads * per_thread  # the child's own counters


def _parent_still_works(db: litegate.Database, expected_child_rows: int) -> None:
    assert db.query_value("SELECT count(*) FROM t WHERE who LIKE 'child%'") == expected_child_rows
    db.execute(INSERT, ("parent", 1))
    with db.transaction() as tx:
        tx.execute(INSERT, ("parent", 2))
    assert db.query_value("SELECT count(*) FROM t WHERE who = 'parent'") == 3
    assert [tuple(r) for r in db.query("PRAGMA integrity_check")] == [("ok",)]


@pytest.mark.parametrize("close_in_child", [True, False], ids=["child-closes", "child-exits"])
def test_forked_child_uses_inherited_database(
    db_path: str, readers: Any, close_in_child: bool
) -> None:
    with litegate.connect(db_path, readers=readers) as db:
        _setup(db)

        def child() -> None:
            _child_writes(db)
            if close_in_child:
                db.close()
                assert db.closed
                with pytest.raises(litegate.Closed):
                    db.execute(INSERT, ("child", 99))

        run_in_child(child)
        assert not db.closed
        _parent_still_works(db, expected_child_rows=3 * 20 + 2)
        parent_jobs = db.stats().jobs_ok
        assert parent_jobs == 3  # create, 1 insert before the fork, 1 after (tx not counted)


def test_fork_while_the_parent_is_writing(db_path: str) -> None:
    """Fork (several times) while a parent thread writes continuously: each child writes
    from its own threads, the parent keeps writing, nothing is lost.
    (Found: before fork() quiesced the engine, a fork that landed inside a parent's write
    transaction left the child unable to write at all: ``Busy`` after busy_timeout.)
    """
    forks = 10
    with litegate.connect(db_path, busy_timeout=2.0) as db:
        _setup(db)
        stop = threading.Event()
        parent_rows: list[int] = []

        def parent_writer() -> None:
            i = 0
            while not stop.is_set():
                db.execute(INSERT, ("parent-bg", i))
                parent_rows.append(i)
                i += 1

        bg = threading.Thread(target=parent_writer)
        bg.start()
        try:
            for n in range(forks):
                time.sleep(0.02)
                run_in_child(
                    functools.partial(_child_writes, db, threads=2, per_thread=20, tag=f"child{n}")
                )
        finally:
            stop.set()
            bg.join()
        assert len(parent_rows) > 0
        assert db.query_value("SELECT count(*) FROM t WHERE who = 'parent-bg'") == len(parent_rows)
        assert db.query_value("SELECT count(*) FROM t WHERE who LIKE 'child%'") == forks * 42
        _parent_still_works(db, expected_child_rows=forks * 42)


def _hold_transaction(db: litegate.Database, seconds: float) -> tuple[threading.Thread, float]:
    """A parent thread holds an interactive transaction (lane + SQLite write lock) that commits
    ``seconds`` after it started; returns the thread and when (monotonic) it began holding."""
    held = threading.Event()

    def holder() -> None:
        with db.transaction() as tx:
            tx.execute(INSERT, ("parent-tx", 0))
            held.set()
            time.sleep(seconds)

    th = threading.Thread(target=holder)
    th.start()
    assert held.wait(5)
    return th, time.monotonic()


def test_fork_while_parent_holds_a_short_transaction(db_path: str) -> None:
    """The parent holds the lane (and SQLite's write lock) for 0.3 s when it forks: fork()
    waits for the transaction to end, and the child then writes and sees the parent's commit."""
    with litegate.connect(db_path, busy_timeout=2.0) as db:
        _setup(db)
        th, since = _hold_transaction(db, 0.3)

        def child() -> None:
            assert db.query_value("SELECT count(*) FROM t WHERE who = 'parent-tx'") == 1
            db.execute(INSERT, ("child", 0))
            assert db.query_value("SELECT count(*) FROM t WHERE who = 'child'") == 1
            db.close()

        try:
            run_in_child(child)
            assert time.monotonic() - since >= 0.25  # the fork waited for the COMMIT
        finally:
            th.join()
        assert db.query_value("SELECT count(*) FROM t WHERE who = 'child'") == 1
        assert db.query_value("SELECT count(*) FROM t WHERE who = 'parent-tx'") == 1
        db.execute(INSERT, ("parent", 5))
        assert db.query_value("SELECT count(*) FROM t") == 4


def test_fork_while_parent_holds_a_long_transaction(db_path: str) -> None:
    """Held past fork()'s wait (1 s): the child cannot carry SQLite's lock state, so its first
    use raises Misuse (and keeps raising it); the parent's transaction still commits."""
    with litegate.connect(db_path, busy_timeout=2.0) as db:
        _setup(db)
        th, since = _hold_transaction(db, 2.0)

        def child() -> None:
            with pytest.raises(litegate.Misuse):
                db.execute(INSERT, ("child", 0))
            with pytest.raises(litegate.Misuse):
                db.query_value("SELECT count(*) FROM t")

        try:
            run_in_child(child)
            assert time.monotonic() - since < 1.9  # fork() gave up waiting; no hang
        finally:
            th.join()
        assert db.query_value("SELECT count(*) FROM t WHERE who = 'child'") == 0
        assert db.query_value("SELECT count(*) FROM t WHERE who = 'parent-tx'") == 1
        _parent_still_works(db, expected_child_rows=0)


def test_fork_while_a_reader_is_borrowed_for_long(db_path: str) -> None:
    """A parent thread keeps a snapshot (a borrowed reader) open past fork()'s wait: the child
    refuses with Misuse; the parent's snapshot and engine are unaffected."""
    with litegate.connect(db_path, readers=2) as db:
        _setup(db)
        held = threading.Event()
        seen: list[int] = []

        def reader() -> None:
            with db.snapshot() as snap:
                held.set()
                time.sleep(1.8)
                seen.append(snap.query_value("SELECT count(*) FROM t"))

        th = threading.Thread(target=reader)
        th.start()
        assert held.wait(5)

        def child() -> None:
            with pytest.raises(litegate.Misuse):
                db.query_value("SELECT count(*) FROM t")

        try:
            run_in_child(child)
        finally:
            th.join()
        assert seen == [1]
        _parent_still_works(db, expected_child_rows=0)


def test_child_that_closes_without_using_the_database(db_path: str) -> None:
    with litegate.connect(db_path) as db:
        _setup(db)

        def child() -> None:
            db.close()  # closes nothing of the parent's
            assert db.closed
            with pytest.raises(litegate.Closed):
                db.query_value("SELECT 1")

        run_in_child(child)
        run_in_child(lambda: None)  # a child that ignores it entirely
        _parent_still_works(db, expected_child_rows=0)


def test_forked_child_forks_again(db_path: str) -> None:
    """A grandchild inherits the child's (already re-opened) engine and reopens again."""
    with litegate.connect(db_path) as db:
        _setup(db)

        def child() -> None:
            db.execute(INSERT, ("child", 0))
            run_in_child(lambda: (db.execute(INSERT, ("grandchild", 0)), None)[1])
            assert db.query_value("SELECT count(*) FROM t WHERE who = 'grandchild'") == 1
            db.execute(INSERT, ("child", 1))
            db.close()

        run_in_child(child)
        assert db.query_value("SELECT count(*) FROM t WHERE who = 'child'") == 2
        assert db.query_value("SELECT count(*) FROM t WHERE who = 'grandchild'") == 1


def test_child_writes_survive_the_parent_closing(tmp_path: Path) -> None:
    """The parent closes its database while a forked child still uses the inherited one; the
    child's later writes are acknowledged, so they must be in the file.

    (Found: when the child's connections shared the inherited SQLite lock bookkeeping, they
    held no real fcntl locks, the parent's close checkpointed and deleted the WAL, and the
    child's later writes went to the unlinked WAL: lost at exit.)
    """
    path = tmp_path / "f.db"
    with litegate.connect(path) as db:
        _setup(db)

        def child(c: Child) -> None:
            db.execute(INSERT, ("child", 0))
            c.signal_parent()
            c.wait_parent()  # the parent has closed its engine
            for i in range(1, 11):
                db.execute(INSERT, ("child", i))
            # no close: the process ends like a crashed worker (acknowledged = durable)

        proc = Child(child)
        try:
            proc.wait_child()
        finally:
            db.close()
            proc.signal_child()
            proc.join()
    conn = sqlite3.connect(path)
    try:
        n = conn.execute("SELECT count(*) FROM t WHERE who = 'child'").fetchone()[0]
        integrity = conn.execute("PRAGMA integrity_check").fetchall()
    finally:
        conn.close()
    assert integrity == [("ok",)]
    assert n == 11, f"{11 - n} of the child's 11 acknowledged writes are lost"


def test_forked_child_does_not_overwrite_other_writers(tmp_path: Path) -> None:
    """After the parent closed, the forked child writes, another connection commits rows while
    the child is still open, then the child writes more and closes. Both sides' committed rows
    must be in the file.

    (Found: with the inherited lock bookkeeping the child kept using the WAL the parent had
    deleted; its final checkpoint copied stale pages over the other writer's commits.)
    """
    path = tmp_path / "f.db"
    with litegate.connect(path) as db:
        _setup(db)

        def child(c: Child) -> None:
            db.execute(INSERT, ("child", 0))
            c.signal_parent()
            c.wait_parent()  # the parent has closed its engine
            for i in range(1, 11):
                db.execute(INSERT, ("child", i))
            c.signal_parent()
            c.wait_parent()  # another connection has committed rows
            for i in range(11, 21):
                db.execute(INSERT, ("child", i))
            db.close()

        proc = Child(child)
        try:
            proc.wait_child()
        finally:
            db.close()
            proc.signal_child()
        try:
            proc.wait_child()
            other = sqlite3.connect(path, timeout=5.0, isolation_level=None)
            try:
                for i in range(50):
                    other.execute(INSERT, ("other", i))
            finally:
                other.close()
        finally:
            proc.signal_child()
            proc.join()
    conn = sqlite3.connect(path)
    try:
        counts = dict(conn.execute("SELECT who, count(*) FROM t GROUP BY who").fetchall())
        integrity = conn.execute("PRAGMA integrity_check").fetchall()
    finally:
        conn.close()
    assert integrity == [("ok",)]
    assert counts == {"parent": 1, "child": 21, "other": 50}


def _mp_target(db: litegate.Database, who: str, n: int) -> None:
    for i in range(n):
        db.execute(INSERT, (who, i))
    if db.query_value("SELECT count(*) FROM t WHERE who = ?", (who,)) != n:
        raise SystemExit(3)
    db.close()


def test_multiprocessing_fork_context(db_path: str) -> None:
    ctx = multiprocessing.get_context("fork")
    with litegate.connect(db_path) as db:
        _setup(db)
        procs = [ctx.Process(target=_mp_target, args=(db, f"mp{k}", 25)) for k in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(CHILD_TIMEOUT)
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
        assert [p.exitcode for p in procs] == [0, 0]
        assert db.query_value("SELECT count(*) FROM t WHERE who = 'mp0'") == 25
        assert db.query_value("SELECT count(*) FROM t WHERE who = 'mp1'") == 25
        _parent_still_works(db, expected_child_rows=0)


def test_memory_database_in_forked_child_raises_misuse() -> None:
    with litegate.connect(":memory:") as db:
        db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, who TEXT NOT NULL, n INTEGER NOT NULL)")
        db.execute(INSERT, ("parent", 0))

        def child() -> None:
            with pytest.raises(litegate.Misuse):
                db.execute(INSERT, ("child", 0))
            with pytest.raises(litegate.Misuse):
                db.query_value("SELECT count(*) FROM t")
            with pytest.raises(litegate.Misuse):  # still refused, not half-reopened
                db.execute(INSERT, ("child", 1))
            with pytest.raises(litegate.Misuse):
                with db.transaction():
                    pass

        run_in_child(child)
        assert db.query_value("SELECT count(*) FROM t") == 1
        db.execute(INSERT, ("parent", 1))
        assert db.query_value("SELECT count(*) FROM t") == 2


def test_plain_sqlite_sees_the_childs_writes(tmp_path: Path) -> None:
    """Independent check: the child's writes are committed to the file, not just visible to
    the parent's engine."""
    path = tmp_path / "f.db"
    with litegate.connect(path) as db:
        _setup(db)
        run_in_child(lambda: _child_writes(db, threads=2, per_thread=10))
        conn = sqlite3.connect(path)
        try:
            n = conn.execute("SELECT count(*) FROM t WHERE who LIKE 'child%'").fetchone()[0]
        finally:
            conn.close()
        assert n == 2 * 10 + 2


@pytest.mark.parametrize("busy", [pytest.param(False, id="idle"), pytest.param(True, id="busy")])
def test_per_thread_fork_with_another_threads_reader(db_path: str, busy: bool) -> None:
    """readers="per-thread": in the child, CPython drops the other threads' thread-locals
    before the fork hooks run, which collected their readers and closed them -- a hang when
    that thread was inside SQLite at the fork. The child now never closes them: an idle fork
    works in the child, a busy one is refused with Misuse; neither hangs."""
    with litegate.connect(db_path, readers="per-thread") as db:
        _setup(db)
        db.executemany(INSERT, [("parent", i) for i in range(300)])
        started, stop = threading.Event(), threading.Event()

        def slow(conn: sqlite3.Connection) -> None:
            started.set()
            while not stop.is_set():  # one long statement after another, inside SQLite
                conn.execute("SELECT count(*) FROM t a, t b, t c WHERE a.n < 50").fetchall()

        def worker() -> None:
            db.query("SELECT 1")  # this thread's reader
            if busy:
                db.run_read(slow)
            else:
                started.set()
                stop.wait(30)

        th = threading.Thread(target=worker)
        th.start()
        assert started.wait(10)

        def child() -> None:
            if busy:
                with pytest.raises(litegate.Misuse, match="in use by another thread"):
                    db.query_value("SELECT count(*) FROM t")
            else:
                assert db.query_value("SELECT count(*) FROM t") == 301

        try:
            run_in_child(child)
        finally:
            stop.set()
            th.join(30)
        assert db.query_value("SELECT count(*) FROM t") == 301


async def test_per_thread_fork_quiesce_never_blocks_the_loop(db_path: str) -> None:
    """Regression: while fork() waited for a busy per-thread reader, stats() and the loop's
    inline reads waited for it too (about a second, on the event loop). The loop-lag check of
    this async test fails if the loop is held."""
    db = await asyncio.to_thread(litegate.connect, db_path, readers="per-thread")
    try:
        await asyncio.to_thread(_setup, db)
        adb = db.as_async()
        assert await adb.query_value("SELECT count(*) FROM t") == 1
        holding, leave = threading.Event(), threading.Event()

        def holder() -> None:
            with db.snapshot() as snap:
                snap.query("SELECT 1")
                holding.set()
                leave.wait(10)

        th = threading.Thread(target=holder)
        th.start()
        await asyncio.to_thread(holding.wait, 10)

        def forker() -> None:
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            os.waitpid(pid, 0)

        fork = asyncio.ensure_future(asyncio.to_thread(forker))
        await asyncio.sleep(0.05)  # fork() is waiting for the holder's reader now
        for _ in range(20):
            assert (await adb.stats()).readers_mode == "per-thread"
            assert await adb.query_value("SELECT count(*) FROM t") == 1
        await fork
        leave.set()
        await asyncio.to_thread(th.join, 10)
    finally:
        await asyncio.to_thread(db.close)


def test_an_interrupted_fork_hook_leaves_the_parent_working_and_the_child_refusing(
    db_path: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Ctrl-C inside fork()'s before-hook (while it holds an engine still): the fork goes
    ahead, the hook undoes what it held (nothing stays locked in the parent), and the child,
    whose copy was never held still, refuses the engine instead of using it."""
    with litegate.connect(db_path, readers=2) as db:
        _setup(db)
        pool = db._engine._pool  # type: ignore[attr-defined]

        def interrupted(deadline: float) -> bool:
            raise KeyboardInterrupt

        monkeypatch.setattr(pool, "quiesce", interrupted)

        def child() -> None:
            with pytest.raises(litegate.Misuse, match="in use by another thread"):
                db.query_value("SELECT count(*) FROM t")

        run_in_child(child)
        monkeypatch.undo()
        assert "holding the databases still for fork() failed" in caplog.text
        _parent_still_works(db, expected_child_rows=0)
        run_in_child(lambda: None)  # the registry's lock was released: forks go on working


async def test_fork_while_async_groups_commit_on_the_loop(
    db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tasks keep the lane busy with groups that commit on the loop and hand the lane straight
    to the next waiter; a fork() from another thread must still find the lane idle in time
    (the hand-on stops while fork() waits), so the child can write. Every COMMIT stays on the
    loop here (none goes to the writer thread, which would let the lane go idle anyway)."""
    monkeypatch.setattr("litegate._engine._lane_loop.LOOP_COMMITS", 10**9)
    adb = await litegate.connect_async(db_path, synchronous="NORMAL")
    try:
        await adb.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, who TEXT NOT NULL, n INT)")
        await adb.execute("CREATE TABLE acc(id INTEGER PRIMARY KEY, bal INT NOT NULL)")
        await adb.executemany("INSERT INTO acc VALUES (?, 100)", [(i,) for i in range(8)])
        stop = asyncio.Event()

        async def mover(k: int) -> None:
            i = 0
            while not stop.is_set():
                async with adb.transaction() as tx:
                    await tx.execute("UPDATE acc SET bal = bal - 1 WHERE id = ?", (k % 8,))
                    await tx.execute("UPDATE acc SET bal = bal + 1 WHERE id = ?", ((k + i) % 8,))
                i += 1

        movers = [asyncio.create_task(mover(k)) for k in range(12)]
        await asyncio.sleep(0.1)  # (groups formed and every SQL text measured)
        db = adb.as_sync()

        def child() -> None:
            db.execute(INSERT, ("child", 1))  # Misuse if fork() found the lane busy
            assert db.query_value("SELECT count(*) FROM t WHERE who = 'child'") == 1
            db.close()

        try:
            await asyncio.to_thread(run_in_child, child)
        finally:
            stop.set()
            await asyncio.gather(*movers)
        assert await adb.query_value("SELECT sum(bal) FROM acc") == 800
        assert await adb.query_value("SELECT count(*) FROM t WHERE who = 'child'") == 1
    finally:
        await adb.close()
