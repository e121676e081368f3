"""The contenders: ways of sharing one SQLite file, written plainly and correctly.

One small interface in two flavours: :class:`Contender` (called from worker threads) and
:class:`AsyncContender` (awaited from tasks on one event loop). Both have ``open``, ``read``,
``write``, ``worker_exit`` and ``close``, with the same meaning; :class:`ToThread` turns any
sync contender into an async one behind ``asyncio.to_thread``.

Thread-side contenders (the folk remedies, a ceiling and litegate):

* ``sqlite3 per-thread``: one connection per thread (``threading.local``), ``timeout=5``;
* ``sqlite3 queue pool``: a ``queue.Queue`` of N connections (``check_same_thread=False``);
* ``sqlite3 + Lock``: one connection behind a ``threading.Lock``;
* ``ceiling: bare group commit``: the leanest group commit Python allows, no guarantees;
* ``litegate``: ``db.query_one`` for reads, ``db.execute`` for writes (group commit).

Task-side contenders: litegate's asyncio facade, aiosqlite (one connection, each write its
own transaction under an ``asyncio.Lock``) and ``asyncio.to_thread`` over ``sqlite3 + Lock``.

Each remedy write is its own ``BEGIN IMMEDIATE`` ... ``COMMIT`` (aiosqlite: ``execute`` +
``commit``); an error (``database is locked`` included) propagates to the runner, which counts
it. Every connection runs in WAL mode at ``synchronous=FULL`` unless its name says otherwise.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from _thread import allocate_lock
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import litegate

from .._config import Readers
from .workloads import BUSY_TIMEOUT, SQL_READ, Case

if TYPE_CHECKING:
    import aiosqlite

__all__ = (
    "Aiosqlite",
    "AsyncContender",
    "BareGroupCommit",
    "Contender",
    "DEFAULT_POOL_SIZE",
    "LITEGATE_READERS",
    "Litegate",
    "LitegateAsync",
    "Locked",
    "PerThread",
    "QueuePool",
    "Raw",
    "ToThread",
    "aiosqlite_version",
    "open_plain",
    "plain_read",
    "plain_write",
)

DEFAULT_POOL_SIZE = 4
LITEGATE_READERS = 4
"""Read connections of the async litegate contender."""


def open_plain(path: str, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """A plain sqlite3 connection as the folk remedies open it: WAL, FULL, busy timeout 5 s,
    explicit transactions (``isolation_level=None``)."""
    conn = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=check_same_thread
    )
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
    except BaseException:
        conn.close()
        raise
    return conn


def plain_read(conn: sqlite3.Connection, key: int) -> Any:
    return conn.execute(SQL_READ, (key,)).fetchone()


def plain_write(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> None:
    """One write in its own transaction. On any error the transaction is rolled back."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(sql, params)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.rollback()
        raise


def _litegate_figures(stats: litegate.Stats) -> dict[str, Any]:
    """What the report shows of litegate's own stats after a run."""
    return {
        "batches": stats.batches,
        "mean_batch_size": stats.mean_batch_size,
        "max_batch_size": stats.max_batch_size,
        "jobs_failed": stats.jobs_failed,
        "busy_retries": stats.busy_retries,
    }


# ---- the interface, sync flavour ------------------------------------------------------------
class Contender:
    """One way of sharing the database between threads. ``read``/``write`` are called from
    worker threads, ``worker_exit`` from each worker before it ends, ``open``/``close`` from
    the harness's main thread. ``kind`` is ``remedy``, ``ceiling``, ``litegate`` or
    ``reference``."""

    name = "?"
    kind = "remedy"

    def open(self, path: str, case: Case) -> None:
        raise NotImplementedError

    def read(self, key: int) -> Any:
        raise NotImplementedError

    def write(self, sql: str, params: tuple[Any, ...]) -> None:
        raise NotImplementedError

    def worker_exit(self) -> None:
        """Release what this worker thread opened."""

    def close(self) -> dict[str, Any]:
        """Close everything; returns extra figures for the report."""
        return {}


class Raw(Contender):
    """The reference: one plain connection, no sharing and no lock (one worker only)."""

    name = "raw sqlite3"
    kind = "reference"

    def __init__(self, name: str | None = None) -> None:
        if name is not None:
            self.name = name

    def open(self, path: str, case: Case) -> None:
        self._conn = open_plain(path, check_same_thread=False)  # opened here, used by a worker

    def read(self, key: int) -> Any:
        return plain_read(self._conn, key)

    def write(self, sql: str, params: tuple[Any, ...]) -> None:
        plain_write(self._conn, sql, params)

    def close(self) -> dict[str, Any]:
        self._conn.close()
        return {"connections": 1}


class Locked(Raw):
    """Remedy (c): one connection behind a ``threading.Lock``."""

    name = "sqlite3 + Lock"
    kind = "remedy"

    def open(self, path: str, case: Case) -> None:
        super().open(path, case)
        self._lock = threading.Lock()

    def read(self, key: int) -> Any:
        with self._lock:
            return super().read(key)

    def write(self, sql: str, params: tuple[Any, ...]) -> None:
        with self._lock:
            super().write(sql, params)


class PerThread(Contender):
    """Remedy (a): a connection per thread, in a ``threading.local``."""

    name = "sqlite3 per-thread"

    def open(self, path: str, case: Case) -> None:
        self._path = path
        self._local = threading.local()
        self._opened = 0
        self._lock = threading.Lock()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = open_plain(self._path)
            with self._lock:
                self._opened += 1
        return conn

    def read(self, key: int) -> Any:
        return plain_read(self._conn(), key)

    def write(self, sql: str, params: tuple[Any, ...]) -> None:
        plain_write(self._conn(), sql, params)

    def worker_exit(self) -> None:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn = None
            conn.close()

    def close(self) -> dict[str, Any]:
        return {"connections": self._opened}


class QueuePool(Contender):
    """Remedy (b): a ``queue.Queue`` of N shared connections."""

    def __init__(self, size: int = DEFAULT_POOL_SIZE) -> None:
        self.size = size
        self.name = f"sqlite3 queue pool({size})"

    def open(self, path: str, case: Case) -> None:
        self._all = [open_plain(path, check_same_thread=False) for _ in range(self.size)]
        self._q: queue.Queue[sqlite3.Connection] = queue.Queue()
        for conn in self._all:
            self._q.put(conn)

    @contextmanager
    def _borrow(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = self._q.get(timeout=BUSY_TIMEOUT)
        except queue.Empty:
            raise TimeoutError(f"no pooled connection within {BUSY_TIMEOUT}s") from None
        try:
            yield conn
        finally:
            self._q.put(conn)

    def read(self, key: int) -> Any:
        with self._borrow() as conn:
            return plain_read(conn, key)

    def write(self, sql: str, params: tuple[Any, ...]) -> None:
        with self._borrow() as conn:
            plain_write(conn, sql, params)

    def close(self) -> dict[str, Any]:
        for conn in self._all:
            conn.close()
        return {"connections": self.size}


class Litegate(Contender):
    """litegate: ``db.query_one`` for reads, ``db.execute`` for writes (group commit)."""

    kind = "litegate"

    def __init__(self, readers: Readers = 4) -> None:
        self.readers = readers
        self.name = f"litegate readers={readers}"

    def open(self, path: str, case: Case) -> None:
        self._db = litegate.connect(path, readers=self.readers, synchronous="FULL")

    def read(self, key: int) -> Any:
        return self._db.query_one(SQL_READ, (key,))

    def write(self, sql: str, params: tuple[Any, ...]) -> None:
        self._db.execute(sql, params)

    def close(self) -> dict[str, Any]:
        s = self._db.stats()
        self._db.close()
        return _litegate_figures(s) | {"pool_waits": s.pool_waits}


class BareGroupCommit(PerThread):
    """Not a remedy but a ceiling: the leanest group commit Python allows, with none of
    litegate's guarantees (no per-job isolation, no bounded queue, no timeouts, no
    cancellation, no transactions, no stats). Reads use a connection per thread; writes go to
    a deque that one writer thread drains into ``BEGIN IMMEDIATE`` ... ``COMMIT`` batches,
    waking each caller by its own raw lock. What it reaches on a machine shows how far a
    target is from what any thread-acknowledging design written in Python can do there.
    """

    name = "ceiling: bare group commit"
    kind = "ceiling"

    def open(self, path: str, case: Case) -> None:
        super().open(path, case)
        self._writer = open_plain(path, check_same_thread=False)
        self._queue: deque[list[Any]] = deque()
        self._bell = allocate_lock()
        self._bell.acquire()
        self._sleeping = False
        self._stop = False
        self._thread = threading.Thread(target=self._drain, name="bench-bare-writer", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        queue_, conn = self._queue, self._writer
        while not self._stop:
            if not queue_:
                self._sleeping = True
                if not queue_:
                    self._bell.acquire(timeout=0.05)
                self._sleeping = False
                continue
            jobs = []
            while queue_:
                jobs.append(queue_.popleft())
            try:
                conn.execute("BEGIN IMMEDIATE")
                for job in jobs:
                    conn.execute(job[1], job[2])
                conn.execute("COMMIT")
            except BaseException as exc:  # the whole batch fails; nothing is acknowledged
                if conn.in_transaction:
                    conn.rollback()
                for job in jobs:
                    job[3] = exc
            for job in jobs:
                job[0].release()

    def write(self, sql: str, params: tuple[Any, ...]) -> None:
        done = allocate_lock()
        done.acquire()
        job: list[Any] = [done, sql, params, None]  # lock, sql, params, error
        self._queue.append(job)
        if self._sleeping:
            try:
                self._bell.release()
            except RuntimeError:  # rung already
                pass
        done.acquire()
        error: BaseException | None = job[3]
        if error is not None:
            raise error

    def close(self) -> dict[str, Any]:
        self._stop = True
        self._thread.join(5.0)
        self._writer.close()
        return super().close()


# ---- the interface, async flavour -----------------------------------------------------------
class AsyncContender:
    """One way of using the database from asyncio: :class:`Contender`'s interface, awaited.
    Every method runs on the event loop. ``kind`` is ``litegate`` or ``peer``."""

    name = "?"
    kind = "peer"

    async def open(self, path: str, case: Case) -> None:
        raise NotImplementedError

    async def read(self, key: int) -> Any:
        raise NotImplementedError

    async def write(self, sql: str, params: tuple[Any, ...]) -> None:
        raise NotImplementedError

    async def worker_exit(self) -> None:
        """Release what this worker task opened."""

    async def close(self) -> dict[str, Any]:
        """Close everything; returns extra figures for the report."""
        return {}


class LitegateAsync(AsyncContender):
    """litegate's facade: inline point reads, group-committed writes."""

    kind = "litegate"
    name = "litegate async"

    async def open(self, path: str, case: Case) -> None:
        self._db = await litegate.connect_async(path, readers=LITEGATE_READERS, synchronous="FULL")

    async def read(self, key: int) -> Any:
        return await self._db.query_one(SQL_READ, (key,))

    async def write(self, sql: str, params: tuple[Any, ...]) -> None:
        await self._db.execute(sql, params)

    async def close(self) -> dict[str, Any]:
        s = await self._db.stats()
        await self._db.close()
        return _litegate_figures(s)


def aiosqlite_version() -> str | None:
    """The installed aiosqlite version, or ``None`` when it cannot be imported."""
    try:
        import aiosqlite
    except ImportError:
        return None
    return str(getattr(aiosqlite, "__version__", "?"))


class Aiosqlite(AsyncContender):
    """One aiosqlite connection (its own thread), ``synchronous`` as named. Reads:
    ``execute_fetchall`` (one round trip). Each write is its own transaction, ``execute`` +
    ``commit``, under an ``asyncio.Lock`` so that tasks sharing the connection do not
    interleave their transactions (without it, one task's COMMIT would commit other tasks'
    half-done work)."""

    def __init__(self, synchronous: str) -> None:
        self.synchronous = synchronous
        self.name = f"aiosqlite {synchronous}"

    async def open(self, path: str, case: Case) -> None:
        import aiosqlite

        self._lock = asyncio.Lock()
        conn = await aiosqlite.connect(path, timeout=BUSY_TIMEOUT)
        try:
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute(f"PRAGMA synchronous={self.synchronous}")
        except BaseException:
            await conn.close()
            raise
        self._conn: aiosqlite.Connection = conn

    async def read(self, key: int) -> Any:
        rows = await self._conn.execute_fetchall(SQL_READ, (key,))
        return next(iter(rows), None)

    async def write(self, sql: str, params: tuple[Any, ...]) -> None:
        async with self._lock:
            try:
                await self._conn.execute(sql, params)
                await self._conn.commit()
            except BaseException:
                if self._conn.in_transaction:
                    await self._conn.rollback()
                raise

    async def close(self) -> dict[str, Any]:
        await self._conn.close()
        return {"connections": 1}


class ToThread(AsyncContender):
    """A sync contender behind ``asyncio.to_thread``: each call runs on the loop's default
    executor. ``worker_exit`` does nothing (executor threads outlive the tasks), so an inner
    contender that opens something per thread must release it in its own ``close``."""

    def __init__(self, inner: Contender, name: str, kind: str = "peer") -> None:
        self.inner = inner
        self.name = name
        self.kind = kind

    async def open(self, path: str, case: Case) -> None:
        await asyncio.to_thread(self.inner.open, path, case)

    async def read(self, key: int) -> Any:
        return await asyncio.to_thread(self.inner.read, key)

    async def write(self, sql: str, params: tuple[Any, ...]) -> None:
        await asyncio.to_thread(self.inner.write, sql, params)

    async def close(self) -> dict[str, Any]:
        return await asyncio.to_thread(self.inner.close)
