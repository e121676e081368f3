"""The task-side contenders: ways of using one SQLite file from asyncio tasks.

:class:`AsyncContender` is :class:`.contenders.Contender`'s interface, awaited: ``open``,
``read``, ``write``, ``scan``, ``transfer``, ``worker_exit`` and ``close``.

* ``litegate async``: ``litegate.connect_async`` (inline point reads, group-committed writes,
  ``async with adb.transaction() as tx`` for transfers);
* ``aiosqlite``: one connection (its own thread), ``isolation_level=None``; every write and
  every transfer under an ``asyncio.Lock`` so that tasks sharing the connection do not
  interleave their transactions;
* :class:`ToThread`: any thread-side contender behind ``asyncio.to_thread`` (the default
  executor): a locked connection, a connection per executor thread, or litegate's sync
  ``Database`` built at startup (the store app's pattern);
* ``ceiling: bare group commit``: :class:`BareAsyncGroupCommit`, not a peer: the leanest
  loop-side group commit, with none of litegate's guarantees.

Threads: every method runs on the event loop's thread; ``ToThread`` hops to executor threads;
the ceiling's COMMITs run on its own thread.
"""

from __future__ import annotations

import asyncio
import threading
from _thread import allocate_lock
from collections import deque
from typing import TYPE_CHECKING, Any, cast

import litegate

from .._config import Synchronous
from .contenders import Contender, litegate_figures
from .plain import open_plain, plain_read, plain_scan
from .workloads import (
    BUSY_TIMEOUT,
    SQL_BALANCE,
    SQL_CREDIT,
    SQL_DEBIT,
    SQL_READ,
    SQL_SCAN,
    Case,
)

if TYPE_CHECKING:
    import aiosqlite

__all__ = (
    "Aiosqlite",
    "AsyncContender",
    "BareAsyncGroupCommit",
    "LITEGATE_READERS",
    "LitegateAsync",
    "ToThread",
    "aiosqlite_version",
)

LITEGATE_READERS = 4
"""Read connections of the litegate contenders of the async suite."""


class AsyncContender:
    """One way of using the database from asyncio: :class:`.contenders.Contender`'s
    interface, awaited. Every method runs on the event loop. ``kind`` is ``litegate``,
    ``peer`` or ``reference``."""

    name = "?"
    kind = "peer"

    async def open(self, path: str, case: Case) -> None:
        raise NotImplementedError

    async def read(self, key: int) -> Any:
        raise NotImplementedError

    async def write(self, sql: str, params: tuple[Any, ...]) -> None:
        raise NotImplementedError

    async def scan(self, low: int) -> list[Any]:
        raise NotImplementedError

    async def transfer(self, src: int, dst: int, amount: int) -> bool:
        raise NotImplementedError

    async def worker_exit(self) -> None:
        """Release what this worker task opened."""

    async def close(self) -> dict[str, Any]:
        """Close everything; returns extra figures for the report."""
        return {}


class LitegateAsync(AsyncContender):
    """litegate's asyncio facade: inline point reads, group-committed writes, interactive
    transactions on the write lane."""

    kind = "litegate"
    name = "litegate async"

    async def open(self, path: str, case: Case) -> None:
        self._db = await litegate.connect_async(
            path, readers=LITEGATE_READERS, synchronous=cast(Synchronous, case.synchronous)
        )

    async def read(self, key: int) -> Any:
        return await self._db.query_one(SQL_READ, (key,))

    async def write(self, sql: str, params: tuple[Any, ...]) -> None:
        await self._db.execute(sql, params)

    async def scan(self, low: int) -> list[Any]:
        return await self._db.query(SQL_SCAN, (low, low))

    async def transfer(self, src: int, dst: int, amount: int) -> bool:
        async with self._db.transaction() as tx:
            balance = await tx.query_value(SQL_BALANCE, (src,))
            await tx.query_value(SQL_BALANCE, (dst,))
            if balance < amount:
                return False
            await tx.execute(SQL_DEBIT, (amount, src))
            await tx.execute(SQL_CREDIT, (amount, dst))
            return True

    async def close(self) -> dict[str, Any]:
        s = await self._db.stats()
        await self._db.close()
        return litegate_figures(s)


def aiosqlite_version() -> str | None:
    """The installed aiosqlite version, or ``None`` when it cannot be imported."""
    try:
        import aiosqlite
    except ImportError:
        return None
    return str(getattr(aiosqlite, "__version__", "?"))


class Aiosqlite(AsyncContender):
    """One aiosqlite connection (its own thread), WAL, the case's ``synchronous``,
    ``isolation_level=None`` (explicit transactions). Reads: ``execute_fetchall`` (one round
    trip). A one-row write is one autocommitted statement (one round trip: its own
    transaction); a transfer is ``BEGIN IMMEDIATE`` ... ``COMMIT``. Both hold an
    ``asyncio.Lock`` so that no task's statement lands inside another task's transaction on
    the shared connection."""

    name = "aiosqlite"

    async def open(self, path: str, case: Case) -> None:
        import aiosqlite

        self._lock = asyncio.Lock()
        conn = await aiosqlite.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None)
        try:
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute(f"PRAGMA synchronous={case.synchronous}")
        except BaseException:
            await conn.close()
            raise
        self._conn: aiosqlite.Connection = conn

    async def read(self, key: int) -> Any:
        rows = await self._conn.execute_fetchall(SQL_READ, (key,))
        return next(iter(rows), None)

    async def scan(self, low: int) -> list[Any]:
        return list(await self._conn.execute_fetchall(SQL_SCAN, (low, low)))

    async def write(self, sql: str, params: tuple[Any, ...]) -> None:
        async with self._lock:
            await self._conn.execute(sql, params)

    async def transfer(self, src: int, dst: int, amount: int) -> bool:
        conn = self._conn
        async with self._lock:
            try:
                await conn.execute("BEGIN IMMEDIATE")
                rows = await conn.execute_fetchall(SQL_BALANCE, (src,))
                await conn.execute_fetchall(SQL_BALANCE, (dst,))
                moved: bool = next(iter(rows))[0] >= amount
                if moved:
                    await conn.execute(SQL_DEBIT, (amount, src))
                    await conn.execute(SQL_CREDIT, (amount, dst))
                await conn.execute("COMMIT")
                return moved
            except BaseException:
                if conn.in_transaction:
                    await conn.rollback()
                raise

    async def close(self) -> dict[str, Any]:
        await self._conn.close()
        return {"connections": 1}


class ToThread(AsyncContender):
    """A thread-side contender behind ``asyncio.to_thread``: each call runs on the loop's
    default executor. ``worker_exit`` does nothing (executor threads outlive the tasks), so an
    inner contender that opens something per thread releases it in its own ``close``."""

    def __init__(
        self,
        inner: Contender,
        name: str,
        kind: str = "peer",
        shapes: frozenset[str] | None = None,
    ) -> None:
        self.inner = inner
        self.name = name
        self.kind = kind
        self.shapes = inner.shapes if shapes is None else shapes

    async def open(self, path: str, case: Case) -> None:
        await asyncio.to_thread(self.inner.open, path, case)

    async def read(self, key: int) -> Any:
        return await asyncio.to_thread(self.inner.read, key)

    async def write(self, sql: str, params: tuple[Any, ...]) -> None:
        await asyncio.to_thread(self.inner.write, sql, params)

    async def scan(self, low: int) -> list[Any]:
        return await asyncio.to_thread(self.inner.scan, low)

    async def transfer(self, src: int, dst: int, amount: int) -> bool:
        return await asyncio.to_thread(self.inner.transfer, src, dst, amount)

    async def close(self) -> dict[str, Any]:
        return await asyncio.to_thread(self.inner.close)


class BareAsyncGroupCommit(AsyncContender):
    """Not a peer but a ceiling: the leanest loop-side group commit Python allows, with none
    of litegate's guarantees — every statement runs on the loop (no guard against a slow one),
    no savepoint per transaction (a transfer here has no ``await`` inside, so none interleave),
    no bound on a group's size or age, no timeouts, no cancellation safety, no stats.

    Reads and scans: one connection on the loop thread, then a plain yield (``sleep(0)``: a
    task that never suspends would starve the others). Writes and transfers: run on the loop
    into the writer connection's open transaction (``BEGIN IMMEDIATE`` when none is open),
    then wait for the group's COMMIT, which one thread runs (the loop never runs COMMIT, the
    fsync at FULL) while later writers wait for the connection; a failed COMMIT fails the whole
    group. What it reaches shows how far an async target is from what any design that
    acknowledges each task after a shared COMMIT can do on this machine.

    Guards: ``_group``, ``_waiting``, ``_committing`` and the connection while no COMMIT is
    under way belong to the loop thread; ``_jobs`` is a deque handed to the commit thread
    (``append``/``popleft`` from one side each), the connection is the commit thread's from
    ``_flush`` until ``_committed`` runs on the loop.
    """

    name = "ceiling: bare group commit"
    kind = "ceiling"
    shapes = frozenset({"point", "transfer"})  # slow-tx would run its slow statement on the loop

    async def open(self, path: str, case: Case) -> None:
        self._loop = asyncio.get_running_loop()
        # Opened off the loop (WAL set-up reads the file); both are used on the loop thread
        # after, the writer on the commit thread too (see Guards).
        self._reader = await asyncio.to_thread(
            open_plain, path, case.synchronous, check_same_thread=False
        )
        self._writer = await asyncio.to_thread(
            open_plain, path, case.synchronous, check_same_thread=False
        )
        self._group: list[asyncio.Future[None]] = []
        self._waiting: list[asyncio.Future[None]] = []
        self._committing = False
        self._commits = 0
        self._jobs: deque[list[asyncio.Future[None]] | None] = deque()
        self._bell = allocate_lock()
        self._bell.acquire()
        self._thread = threading.Thread(
            target=self._commit_thread, name="bench-bare-commit", daemon=True
        )
        self._thread.start()

    def _commit_thread(self) -> None:
        """The commit thread: COMMIT each handed group, answer it on the loop."""
        conn, jobs = self._writer, self._jobs
        while True:
            while not jobs:
                self._bell.acquire()
            group = jobs.popleft()
            if group is None:
                return
            error: BaseException | None = None
            try:
                conn.execute("COMMIT")
            except BaseException as exc:  # the whole group fails; none is acknowledged
                error = exc
                if conn.in_transaction:
                    conn.rollback()
            self._loop.call_soon_threadsafe(self._committed, group, error)

    def _flush(self) -> None:
        """Hand the open group's COMMIT to the commit thread (after every task made ready in
        this loop iteration has run its statements)."""
        group, self._group = self._group, []
        self._committing = True
        self._jobs.append(group)
        if self._bell.locked():
            self._bell.release()

    def _committed(self, group: list[asyncio.Future[None]], error: BaseException | None) -> None:
        self._committing = False
        self._commits += 1
        for fut in group:
            if not fut.done():
                if error is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(error)
        waiting, self._waiting = self._waiting, []
        for fut in waiting:
            if not fut.done():
                fut.set_result(None)

    async def _writer_free(self) -> None:
        while self._committing:
            fut = self._loop.create_future()
            self._waiting.append(fut)
            await fut
        if not self._writer.in_transaction:
            self._writer.execute("BEGIN IMMEDIATE")

    async def _join(self) -> None:
        fut = self._loop.create_future()
        self._group.append(fut)
        if len(self._group) == 1:
            self._loop.call_soon(self._flush)
        await fut

    async def read(self, key: int) -> Any:
        row = plain_read(self._reader, key)
        await asyncio.sleep(0)
        return row

    async def scan(self, low: int) -> list[Any]:
        rows = plain_scan(self._reader, low)
        await asyncio.sleep(0)
        return rows

    async def write(self, sql: str, params: tuple[Any, ...]) -> None:
        await self._writer_free()
        self._writer.execute(sql, params)
        await self._join()

    async def transfer(self, src: int, dst: int, amount: int) -> bool:
        await self._writer_free()
        conn = self._writer
        moved: bool = conn.execute(SQL_BALANCE, (src,)).fetchone()[0] >= amount
        conn.execute(SQL_BALANCE, (dst,)).fetchone()
        if moved:
            conn.execute(SQL_DEBIT, (amount, src))
            conn.execute(SQL_CREDIT, (amount, dst))
        await self._join()
        return moved

    async def close(self) -> dict[str, Any]:
        give_up = self._loop.time() + 10.0
        while self._committing or self._group:  # the last group's COMMIT is under way
            if self._loop.time() > give_up or not self._thread.is_alive():
                raise RuntimeError("the bare ceiling's commit thread did not finish its group")
            await asyncio.sleep(0.001)
        self._jobs.append(None)
        if self._bell.locked():
            self._bell.release()
        await asyncio.to_thread(self._thread.join, 5.0)
        await asyncio.to_thread(self._writer.close)
        await asyncio.to_thread(self._reader.close)
        return {"connections": 2, "commits": self._commits}
